"""`export.py` (`kerasbert export`): a finished run's model as a TF Serving SavedModel and
TFLite models (`kerasbert.deploy`), each checked against the Keras model on the run's
own test reviews before it is published.
"""

import os

from kerasbert import files
from kerasbert.deploy.export import export_saved_model
from kerasbert.deploy.parity import ParityCheck
from kerasbert.deploy.tflite import export_tflite
from kerasbert.disk import SPARE_BYTES, check_free_space, mebibytes, variable_bytes
from kerasbert.errors import KerasbertError
from kerasbert.files import next_version
from kerasbert.job import rundir
from kerasbert.job.config import TrainConfig
from kerasbert.model import load_classifier
from kerasbert.splits import first_test_rows, load_splits, should_stream
from kerasbert.progress import phase


def load_run(run_dir):
    """The classifier and class names of a finished `RunDirectory`."""
    _, metrics = run_dir.finished_run("export")
    classifier = load_classifier(run_dir.model_file)
    if classifier.preprocessor is None:
        raise KerasbertError(f"{run_dir.model_file} holds a classifier without its tokenizer: nothing to serve raw "
                             "text with")
    return classifier, metrics["class_names"]


def export_run(config):
    """Everything `export.py` does: SavedModel, then TFLite variants, each parity-checked."""
    model_root = os.path.join(config.export_root, config.model_name)
    version = config.version or next_version(model_root)
    check_destinations(model_root, version, config)  # before minutes of loading and parity checks
    phase(f"loading {config.run}")
    run_dir = rundir.resolved(config.run)
    classifier, class_names = load_run(run_dir)
    check_room_to_export(classifier, model_root, config.tflite_formats())
    parity = None
    if config.parity_examples:
        phase(f"running the Keras model (float32) on {config.parity_examples} test reviews for the parity checks")
        parity = ParityCheck(classifier, *parity_examples(run_dir, config.parity_examples, class_names))
    paths = [export_saved_model(classifier, class_names, model_root, version, config.overwrite, parity,
                                config.serving_precision)]
    phase(f"SavedModel for TF Serving: {paths[0]}")
    if config.tflite_formats():
        paths.append(export_tflite(classifier, class_names, config.tflite_formats(),
                                   os.path.join(model_root, "tflite"), version, config.overwrite, parity))
        phase(f"TFLite ({', '.join(config.tflite_formats())}): {paths[1]}")
    return paths


def check_room_to_export(classifier, model_root, tflite_formats):
    """Refuse, before the parity checks and conversions, an export whose SavedModel and TFLite
    models (one on token ids, one on text, per format) cannot fit in the export root."""
    weights = variable_bytes(classifier.weights)
    tflite = {"float32": 2 * weights, "float16": weights, "dynamic-int8": weights // 2}
    check_free_space(model_root, weights + sum(tflite[name] for name in tflite_formats) + SPARE_BYTES,
                     f"the export (a SavedModel of {mebibytes(weights)} and {len(tflite_formats)} TFLite format(s))")


def check_destinations(model_root, version, config):
    """Refuse an export root or model folder that is a file or not writable, and a version that
    exists (SavedModel or TFLite) without `overwrite`."""
    for folder in (model_root, os.path.join(model_root, "tflite")):
        files.check_can_create(folder, "export folder")
    targets = [os.path.join(model_root, str(version))]
    if config.tflite_formats():
        targets.append(os.path.join(model_root, "tflite", str(version)))
    for target in targets:
        files.check_free(target, config.overwrite)
        files.check_can_create(target, "export version")


def parity_examples(run_dir, count, class_names, seed=0):
    """`count` test reviews (texts, labels) of the run's own test data: seeded, or a streamed run's first ones."""
    config = TrainConfig.from_dict(run_dir.recorded_config("export"))
    if should_stream(config.streaming, config.train_file):
        test = first_test_rows(count, class_names, config.test_file, config.dataset, config.data_dir)
    else:
        test = load_splits(**config.data_options()).test.sample(count, seed)
    return test.texts.astype(str), test.labels
