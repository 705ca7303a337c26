"""Ship a trained run: a SavedModel for TF Serving and TFLite models, each
checked against the Keras model before it is published.

SavedModel layout (what TF Serving polls):

    saved_models/<model-name>/<version>/   saved_model.pb, variables/, parity.json

Signatures:
- `serving_default`: `text` (tf.string, [batch]) -> `probabilities` (float32,
  [batch, classes]), `class_id` (int64) and `class_name` (string). The
  tokenizer is inside the graph (TF Text ops: load it with
  `import tensorflow_text`; stock TF Serving has them from 2.20 on).
- `predict_tokens`: `token_ids`, `segment_ids`, `padding_mask` (int32,
  [batch, length]) -> the same outputs, for clients that tokenize themselves.

A version directory is written under a temporary name and renamed into place
once its parity check passed, so a server never sees half a version.

From Python, a fitted classifier with its preprocessor needs no run directory:
`saved_model(classifier, "saved_models/imdb")` and
`tflite(classifier, "saved_models/imdb/tflite", ["dynamic-int8"])`.
"""

import os
import shutil

import tensorflow as tf

from kerasbert import rundir
from kerasbert.config import TFLITE_FORMATS
from kerasbert.errors import KerasbertError
from kerasbert.model import TOKEN_INPUTS, load_classifier, token_model, token_probabilities
from kerasbert.parity import ParityCheck, parity_examples
from kerasbert.progress import phase
from kerasbert.rundir import next_version, publish_directory, staging_directory
from kerasbert.tflite import export_tflite


class ServingModule(tf.Module):
    """Raw text or token ids in; probabilities, class id and class name out."""

    def __init__(self, classifier, class_names):
        super().__init__()
        self.preprocessor = classifier.preprocessor
        self.model = token_model(classifier)
        # A variable, so that it is saved and a loader can read the names.
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(self, text):
        return self.serve_tokens(**self.preprocessor.tokenize_and_pack(text))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in TOKEN_INPUTS])
    def serve_tokens(self, token_ids, segment_ids, padding_mask):
        probabilities = token_probabilities(self.model, token_ids, segment_ids, padding_mask)
        class_id = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": tf.gather(self.class_names, class_id)}


def load_run(run_dir):
    """The classifier and class names of a finished run directory."""
    if not os.path.isdir(run_dir):
        raise KerasbertError(f"run directory {run_dir} does not exist")
    model_path = os.path.join(run_dir, rundir.MODEL_FILE)
    metrics_path = os.path.join(run_dir, rundir.METRICS_FILE)
    if not os.path.isfile(model_path) or not os.path.isfile(metrics_path):
        raise KerasbertError(f"{run_dir} holds no finished run (no {rundir.MODEL_FILE} or {rundir.METRICS_FILE})")
    return load_classifier(model_path), rundir.read_json(metrics_path)["class_names"]


def export_run(config):
    """Everything `export.py` does: SavedModel, then TFLite variants, each parity-checked."""
    phase(f"loading {config.run}")
    classifier, class_names = load_run(config.run)
    model_root = os.path.join(config.export_root, config.model_name)
    version = config.version or next_version(model_root)
    parity = None
    if config.parity_examples:
        phase(f"running the Keras model (float32) on {config.parity_examples} test reviews for the parity checks")
        parity = ParityCheck(classifier, *parity_examples(config.run, config.parity_examples))
    paths = [export_saved_model(classifier, class_names, model_root, version, config.overwrite, parity)]
    phase(f"SavedModel for TF Serving: {paths[0]}")
    if config.tflite_formats():
        paths.append(export_tflite(classifier, class_names, config.tflite_formats(),
                                   os.path.join(model_root, "tflite"), version, config.overwrite, parity))
        phase(f"TFLite ({', '.join(config.tflite_formats())}): {paths[1]}")
    return paths


def saved_model(classifier, directory, version=0, overwrite=False):
    """Export a classifier that has its preprocessor for TF Serving as `<directory>/<version>/`
    (default: the next free version); returns that path. No run directory needed.

    Example: `kerasbert.export.saved_model(classifier, "saved_models/imdb")` -> "saved_models/imdb/1".
    """
    check_exportable(classifier)
    version = version or next_version(directory)
    return export_saved_model(classifier, class_names_of(classifier), directory, version, overwrite)


def tflite(classifier, directory, variants=("dynamic-int8",), version=0, overwrite=False):
    """Export TFLite models (`variants` of float32, float16, dynamic-int8; each as token ids in and as
    one string in) into `<directory>/<version>/`; returns that path."""
    check_exportable(classifier)
    unknown = [name for name in variants if name not in TFLITE_FORMATS]
    if unknown or not variants:
        raise ValueError(f"TFLite variants must be some of {', '.join(TFLITE_FORMATS)}, got {list(variants)}")
    version = version or next_version(directory)
    return export_tflite(classifier, class_names_of(classifier), list(variants), directory, version, overwrite)


def check_exportable(classifier):
    if classifier.preprocessor is None:
        raise ValueError("the classifier has no preprocessor to export with it: set classifier.preprocessor "
                         "(kerasbert.model.attach_preprocessor) first")


def class_names_of(classifier):
    """A TextClassifier's class names, else "0", "1", ..."""
    names = getattr(classifier, "class_names", None)
    return list(names) if names else [str(index) for index in range(classifier.get_config()["num_classes"])]


def export_saved_model(classifier, class_names, model_root, version, overwrite=False, parity=None):
    """Write `<model_root>/<version>/` and return its path.

    With a `ParityCheck`, the SavedModel is run on its reviews and
    `parity.json` is written inside the version; missing a bar raises and
    publishes nothing.
    """
    staged, final = staging_directory(model_root, version, overwrite)
    try:
        module = ServingModule(classifier, class_names)
        tf.saved_model.save(module, staged, signatures={
            "serving_default": module.serve_text, "predict_tokens": module.serve_tokens})
        if parity is not None:
            served = tf.saved_model.load(staged).signatures["serving_default"]
            parity.check(lambda texts: served(text=tf.constant(texts))["probabilities"].numpy(),
                         "saved_model", os.path.join(staged, "parity.json"), final)
        publish_directory(staged, final, overwrite)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final


