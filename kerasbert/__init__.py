"""kerasbert: fine-tune a pre-trained BERT into a text classifier with Keras.

    import kerasbert
    classifier = kerasbert.TextClassifier.from_preset("all_minilm_l6_v2_offline", class_names=["neg", "pos"])
    classifier.fit(texts, labels, batch_size=16, epochs=2)   # compiled: AdamW, warm-up and decay
    classifier.classify(["A wonderful film."])                # [{"label": "pos", "probability": ...}]

The package has three parts, and imports run one way, job -> deploy -> library:
- the library (this package's modules): the tasks (`model`; `adaptation`, the masked LM
  that adapts a preset to a domain), their layers (`backbone`,
  `fused_layers`), `preprocessing`, `presets`, data (`texts`, `data`, `splits`, `streaming`), `optimizers`,
  callbacks (`monitoring`, `progress`), `hardware`, `distribution`, `evaluation`, `files`;
- deployment (`kerasbert.deploy`): TF Serving SavedModels, TFLite, parity, predict;
- the command-line job (`kerasbert.job`): options, the `kerasbert` command, the run,
  resume, run directories, reports.

Importing kerasbert is cheap: TensorFlow and the library load on the first use of a
name below (`kerasbert.TextClassifier`, `from kerasbert import ...`), or at once when
Keras is already imported. Either way kerasbert's Keras classes are then registered,
so `keras.saving.load_model` reads a saved `TextClassifier` back:

    import kerasbert, keras
    keras.saving.load_model("runs/latest/model.keras").classify(["A wonderful film."])

The command line (`train.py --help`, bad option values) answers before TensorFlow loads.
Import kerasbert before TensorFlow or Keras: on x86 CPUs where TensorFlow leaves its oneDNN
kernels off (Zen 2/3, Skylake and older) that lets kerasbert turn them on (`kerasbert.hardware`).
"""

import functools
import importlib
import os
import platform
import sys

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise
# for users; real errors still reach them as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On Linux, TensorFlow uses oneDNN's kernels by default only on CPUs with VNNI, bf16 or AMX
# instructions (Cascade Lake, Alder Lake, Zen 4 and newer); on the others (Zen 2/3, Skylake and
# older Intel) Eigen's run attention's batched matrix products several times slower
# (benchmarks/onednn.md). TensorFlow reads this once, as it loads: it holds when kerasbert is
# imported first. TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen's; `detect_hardware` reports which runs.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# The public names, by the module that defines them.
_MODULES = {
    "adaptation": ("ReviewMaskedLM", "save_adapted_preset"),
    "data": ("evaluation_dataset", "load_unlabeled_texts", "read_tfds", "training_dataset"),
    "errors": ("KerasbertError",),
    "hardware": ("choose_precision", "detect_hardware"),
    "model": ("TextClassifier", "load_classifier"),
    "monitoring": ("MisclassifiedReviews", "TrainingTensorBoard"),
    "optimizers": ("GradientNormAdamW", "WarmupLinearDecay", "adamw_with_warmup"),
    "preprocessing": ("LengthWarmup", "ReviewPreprocessor"),
    "presets": ("DEFAULT_PRESET",),
    "progress": ("Throughput", "TimeEstimate"),
    "splits": ("load_splits", "load_streamed_splits"),
    "streaming": ("split_by_text_hash", "stream_labeled_texts", "streamed_batches", "survey"),
    "texts": ("LabeledTexts", "read_acl_imdb", "read_table"),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}

__version__ = "0.1.0"
__all__ = sorted(_MODULE_OF)


@functools.cache  # once: each later public name costs a dict lookup, not another pass of imports and probes
def load_library():
    """Import TensorFlow, every module of the library (which registers their Keras classes) and
    deployment (`TextClassifier.export`'s formats)."""
    from kerasbert.native_log import cuda_driver_missing, native_info_lines_dropped

    with native_info_lines_dropped():
        import tensorflow as tf

        for module in _MODULES:
            importlib.import_module(f"kerasbert.{module}")
        importlib.import_module("kerasbert.deploy")  # the writers of `TextClassifier.export`'s formats
        if cuda_driver_missing():  # probe CUDA here, where its failure line is filtered; with a driver, leave it lazy
            tf.config.list_physical_devices("GPU")


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'kerasbert' has no attribute {name!r}")
    load_library()
    value = getattr(importlib.import_module(f"kerasbert.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})


if "keras" in sys.modules or "tensorflow" in sys.modules:
    load_library()
