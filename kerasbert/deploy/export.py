"""Ship a trained run: a SavedModel for TF Serving and TFLite models, each
checked against the Keras model before it is published.

SavedModel layout (what TF Serving polls):

    saved_models/<model-name>/<version>/   saved_model.pb, variables/, parity.json,
                                           assets.extra/tf_serving_warmup_requests,
                                           batching_parameters.txt

Its signatures and warm-up requests: `kerasbert.deploy.serving`. It computes in the
precision `choose_precision` picks for the exporting machine (bf16 where the
CPU or GPU has it natively, else float32; `--serving-precision` overrides),
as long as that precision passes the parity check; else in float32.

A version directory is written under a temporary name and renamed into place
once its parity check passed, so a server never sees half a version.

From Python: `kerasbert.deploy.saved_model(classifier, "saved_models/imdb")` and
`kerasbert.deploy.tflite_models(classifier, "saved_models/imdb/tflite", ["dynamic-int8"])`
for a classifier with its preprocessor (as `TextClassifier.from_preset` builds it).
"""

import os
import shutil

import tensorflow as tf

from kerasbert import files
from kerasbert.choices import TFLITE_FORMATS
from kerasbert.deploy.serving import BATCHING_FILE, ServingModule, batching_parameters, write_warmup_requests
from kerasbert.deploy.parity import ParityCheck
from kerasbert.deploy.tflite import TFLiteClassifier, export_tflite, tflite_model, tokenizer_settings
from kerasbert.disk import writing
from kerasbert.errors import KerasbertError
from kerasbert.export_formats import register_writer
from kerasbert.files import next_version, publish_directory, staging_directory
from kerasbert.hardware import choose_precision, detect_hardware
from kerasbert.model import class_names_of
from kerasbert.progress import phase


def saved_model(classifier, directory, version=0, overwrite=False, precision="auto"):
    """Export a classifier that has its preprocessor for TF Serving as `<directory>/<version>/`
    (default: the next free version); returns that path. No run directory needed.
    `precision`: what the server computes in (auto: bf16 where this machine has
    it natively, else float32; or off, bf16, fp16).

    Example: `kerasbert.deploy.saved_model(classifier, "saved_models/imdb")` -> "saved_models/imdb/1".
    """
    check_exportable(classifier)
    version = version or next_version(directory)
    return export_saved_model(classifier, class_names_of(classifier), directory, version, overwrite,
                              precision=precision)


def tflite_models(classifier, directory, variants=("dynamic-int8",), version=0, overwrite=False):
    """Export TFLite models (`variants` of float32, float16, dynamic-int8; each as token ids in and as
    one string in) into `<directory>/<version>/`; returns that path."""
    check_exportable(classifier)
    unknown = [name for name in variants if name not in TFLITE_FORMATS]
    if unknown or not variants:
        raise ValueError(f"TFLite variants must be some of {', '.join(TFLITE_FORMATS)}, got {list(variants)}")
    version = version or next_version(directory)
    return export_tflite(classifier, class_names_of(classifier), list(variants), directory, version, overwrite)


def keras_export(classifier, filepath, format="tf_saved_model", precision="auto", quantization="float32"):
    """What `TextClassifier.export(filepath, format)` writes, Keras' call with kerasbert's
    artifacts, each checked against the Keras model (float32) on `parity_texts` first:

    - "tf_saved_model": the folder `filepath` as `saved_model` writes a version (strings in,
      class names and probabilities out, the token-ids signature too) in `precision`;
    - "litert": the file `filepath`, a strings-in TFLite model (tf-text's tokenizer as custom
      ops, no Flex ops) stored in `quantization`; its class names in `<stem>.json` and its parity
      report in `<stem>-parity.json` beside it.

    Returns `filepath`. An existing `filepath` is refused."""
    if format == "onnx":
        raise ValueError("format='onnx' is not offered yet: kerasbert has no parity-checked tf2onnx conversion; "
                         "export format='tf_saved_model' (TF Serving) or 'litert' (devices) instead")
    if format not in ("tf_saved_model", "litert"):
        raise ValueError(f"format must be 'tf_saved_model' or 'litert', got {format!r}")
    if format == "litert" and quantization not in TFLITE_FORMATS:
        raise ValueError(f"quantization must be one of {', '.join(TFLITE_FORMATS)}, got {quantization!r}")
    check_exportable(classifier)
    class_names = class_names_of(classifier)
    if os.path.exists(filepath):
        raise KerasbertError(f"{filepath} exists already: export to a new path")
    parity = ParityCheck(classifier, parity_texts(classifier.preprocessor.sequence_length))
    if format == "tf_saved_model":
        root, name = os.path.split(os.path.abspath(filepath))
        return export_saved_model(classifier, class_names, root, name, parity=parity, precision=precision)
    os.makedirs(os.path.dirname(os.path.abspath(filepath)), exist_ok=True)
    stem = os.path.splitext(filepath)[0]
    files.write_json(stem + ".json", tokenizer_settings(classifier, class_names))
    with files.written_atomically(filepath) as temporary:
        with open(temporary, "wb") as file:
            file.write(tflite_model(classifier, quantization, with_tokenizer=True))
        parity.check(TFLiteClassifier(temporary, settings=stem + ".json").predict_probabilities, quantization,
                     stem + "-parity.json", filepath, tokenizer_inside=True)
    return filepath


def parity_texts(sequence_length):
    """Texts to check an export on when no reviews are at hand: sentences of both polarities,
    from 4 words up to the sequence length, 12 words apart."""
    words = ("A wonderful film with a moving story and a superb cast .".split(),
             "A dull , clumsy film ; the plot is a mess and the acting is awful .".split())
    return [" ".join((words[count % 2] * sequence_length)[:count]) for count in range(4, sequence_length, 12)]


def check_exportable(classifier):
    if classifier.preprocessor is None:
        raise ValueError("the classifier has no preprocessor to export with it (TextClassifier.from_preset "
                         "attaches one; or set classifier.preprocessor)")


def export_saved_model(classifier, class_names, model_root, version, overwrite=False, parity=None,
                       precision="auto"):
    """Write `<model_root>/<version>/` and return its path.

    `precision` (auto, off, bf16, fp16) is what the served model computes in;
    auto picks for this machine. With a `ParityCheck`, the SavedModel is run
    on its reviews and `parity.json` is written inside the version; missing a
    bar raises and publishes nothing, except under auto, where a reduced
    precision that misses it gives way to float32.
    """
    choice = choose_precision(precision, detect_hardware())
    candidates = [choice] + ([choose_precision("off", None)] if precision == "auto" and choice.name != "off" else [])
    for attempt, candidate in enumerate(candidates, start=1):
        phase(f"SavedModel computing in {candidate.policy}: {candidate.reason}")
        staged, final = staging_directory(model_root, version, overwrite)
        try:
            module = ServingModule(classifier, class_names, candidate.policy)
            with writing(final):
                tf.saved_model.save(module, staged, signatures=module.signatures())
                write_warmup_requests(staged, os.path.basename(model_root), classifier.preprocessor.sequence_length)
            files.write_text_atomically(os.path.join(staged, BATCHING_FILE), batching_parameters(os.cpu_count()))
            if parity is not None:
                served = tf.saved_model.load(staged).signatures["serving_default"]
                artifact = "saved_model" if candidate.name == "off" else f"saved_model-{candidate.name}"
                try:
                    parity.check(lambda texts: served(text=tf.constant(texts))["probabilities"].numpy(),
                                 artifact, os.path.join(staged, "parity.json"), final, precision=candidate.policy)
                except KerasbertError as missed:
                    if attempt == len(candidates):
                        raise
                    phase(f"{missed}; exporting in float32 instead")
                    continue
            publish_directory(staged, final, overwrite)
            return final
        finally:
            shutil.rmtree(staged, ignore_errors=True)


register_writer(keras_export)
