"""kerasbert: fine-tune a pre-trained BERT into a text classifier with Keras.

    import kerasbert
    classifier = kerasbert.TextClassifier.from_preset("all_minilm_l6_v2_offline", class_names=["neg", "pos"])
    classifier.fit(texts, labels, batch_size=16, epochs=2)   # compiled: AdamW, warm-up and decay
    classifier.classify(["A wonderful film."])                # [{"label": "pos", "probability": ...}]

The package has three parts, and imports run one way, job -> deploy -> library:
- the library (this package's modules): the tasks (`model`; `adaptation`, the masked LM
  that adapts a preset to a domain), their layers (`backbone`,
  `fused_layers`), `preprocessing`, `presets`, data (`texts`, `data`), `optimizers`,
  callbacks (`monitoring`, `progress`), `hardware`, `distribution`, `evaluation`, `files`;
- deployment (`kerasbert.deploy`): TF Serving SavedModels, TFLite, parity, predict;
- the command-line job (`kerasbert.job`): options, the `kerasbert` command, the run,
  resume, run directories, reports.

Importing kerasbert registers its Keras classes, so `keras.saving.load_model`
reads a saved `TextClassifier` back.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise
# for users; real errors still reach them as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasbert.native_log import cuda_driver_missing, native_info_lines_dropped  # noqa: E402

with native_info_lines_dropped():
    import tensorflow as _tf  # noqa: E402

    from kerasbert.adaptation import ReviewMaskedLM, save_adapted_preset  # noqa: E402
    from kerasbert.data import (  # noqa: E402
        evaluation_dataset, load_splits, load_unlabeled_texts, read_tfds, training_dataset)
    from kerasbert.errors import KerasbertError  # noqa: E402
    from kerasbert.hardware import choose_precision, detect_hardware  # noqa: E402
    from kerasbert.model import TextClassifier  # noqa: E402
    from kerasbert.monitoring import MisclassifiedReviews, TrainingTensorBoard  # noqa: E402
    from kerasbert.optimizers import GradientNormAdamW, WarmupLinearDecay, adamw_with_warmup  # noqa: E402
    from kerasbert.preprocessing import ReviewPreprocessor  # noqa: E402
    from kerasbert.presets import DEFAULT_PRESET  # noqa: E402
    from kerasbert.progress import Throughput, TimeEstimate  # noqa: E402
    from kerasbert.texts import LabeledTexts, read_acl_imdb, read_table  # noqa: E402

    if cuda_driver_missing():  # probe CUDA here, where its failure line is filtered; with a driver, leave it lazy
        _tf.config.list_physical_devices("GPU")
del _tf

__version__ = "0.1.0"
__all__ = ["DEFAULT_PRESET", "GradientNormAdamW", "KerasbertError", "LabeledTexts", "MisclassifiedReviews",
           "ReviewMaskedLM", "ReviewPreprocessor", "TextClassifier", "Throughput", "TimeEstimate",
           "TrainingTensorBoard", "WarmupLinearDecay", "adamw_with_warmup", "choose_precision", "detect_hardware",
           "evaluation_dataset", "load_splits", "load_unlabeled_texts", "read_acl_imdb", "read_table", "read_tfds",
           "save_adapted_preset", "training_dataset"]
