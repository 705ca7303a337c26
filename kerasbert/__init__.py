"""kerasbert: fine-tune a pre-trained BERT into a text classifier with Keras.

The pieces are plain Keras objects for your own `model.fit` script
(`examples/fit_imdb.py`); `train.py` (`kerasbert train`) is one client of them.

    import kerasbert
    train, test, class_names = kerasbert.read_tfds("imdb_reviews", data_dir)
    classifier, preprocessor = kerasbert.build_classifier(kerasbert.resolve_preset(kerasbert.DEFAULT_PRESET),
                                                          None, 256, class_names=class_names)
    classifier.compile(optimizer=kerasbert.adamw_with_warmup(5e-5, total_steps))  # loss, accuracy: defaults
    classifier.fit(kerasbert.training_dataset(train, preprocessor, 16, seed=42), epochs=2)

Importing kerasbert registers its Keras classes, so `keras.saving.load_model`
reads a saved `TextClassifier` back.

The training path, in reading order: `config` (every option), `presets`
(where the weights come from), `hardware` (what this machine computes fast,
and the defaults that follow), `texts` (files of labeled texts), `data`
(splits and `tf.data` pipelines), `preprocessing` (texts to token ids),
`model` (the classifier), `optimizers`, `training` (callbacks,
`fit` under a `tf.distribute` strategy, the job), `progress` (phase lines,
throughput, the time estimate), `evaluation` (test metrics), `rundir`
(what a run leaves on disk) and `files` (how it is written); `export`, `tflite` and `parity` ship the model.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise
# for users; real errors still reach them as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasbert.native_log import cuda_driver_missing, native_info_lines_dropped  # noqa: E402

with native_info_lines_dropped():
    from kerasbert import export  # noqa: E402
    from kerasbert.config import DEFAULT_PRESET  # noqa: E402
    from kerasbert.data import evaluation_dataset, load_splits, read_tfds, training_dataset  # noqa: E402
    from kerasbert.errors import KerasbertError  # noqa: E402
    from kerasbert.hardware import choose_precision, detect_hardware  # noqa: E402
    from kerasbert.model import TextClassifier, build_classifier  # noqa: E402
    from kerasbert.monitoring import MisclassifiedReviews, TrainingTensorBoard  # noqa: E402
    from kerasbert.optimizers import GradientNormAdamW, WarmupLinearDecay, adamw_with_warmup  # noqa: E402
    from kerasbert.preprocessing import ReviewPreprocessor  # noqa: E402
    from kerasbert.presets import resolve_preset  # noqa: E402
    from kerasbert.progress import Throughput, TimeEstimate  # noqa: E402
    from kerasbert.texts import LabeledTexts, read_acl_imdb, read_table  # noqa: E402
    import tensorflow as _tf  # noqa: E402

    if cuda_driver_missing():  # probe CUDA here, where its failure line is filtered; with a driver, leave it lazy
        _tf.config.list_physical_devices("GPU")
del _tf

__version__ = "0.1.0"
__all__ = ["DEFAULT_PRESET", "GradientNormAdamW", "KerasbertError", "LabeledTexts", "MisclassifiedReviews",
           "ReviewPreprocessor", "TextClassifier", "Throughput", "TimeEstimate", "TrainingTensorBoard",
           "WarmupLinearDecay", "adamw_with_warmup", "build_classifier", "choose_precision", "detect_hardware",
           "evaluation_dataset", "export", "load_splits", "read_acl_imdb", "read_table", "read_tfds", "resolve_preset",
           "training_dataset"]
