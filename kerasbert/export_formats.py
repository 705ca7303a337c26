"""Keras' `Model.export(filepath, format=...)` for kerasbert's classifiers. What each
format writes is deployment's business (`kerasbert.deploy.export.keras_export`:
"tf_saved_model", strings in and class names out; "litert", a strings-in TFLite
model), so the library keeps only this hook, which `kerasbert.deploy` fills when it
is imported; loading kerasbert (`kerasbert.load_library`, or any public name)
imports it.

>>> import kerasbert.deploy  # registers its writer
>>> export_classifier.__name__, len(_WRITERS)
('export_classifier', 1)
"""

_WRITERS = []


def register_writer(writer):
    """Make `writer(classifier, filepath, format, **options)` what `export_classifier` calls."""
    _WRITERS[:] = [writer]


def export_classifier(classifier, filepath, format, **options):
    """Write `classifier` to `filepath` in `format` with the registered writer; returns `filepath`."""
    if not _WRITERS:
        raise ValueError("no export formats are registered: import kerasbert.deploy first")
    return _WRITERS[0](classifier, filepath, format, **options)
