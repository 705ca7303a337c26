"""How a model's layers are named in its saved weights, and reading the files kerasbert wrote
before those names settled.

Keras names the weights of a layer kept in a list (a functional model's `layers`) after the
layer's class in `.keras` and `.weights.h5` files: `layers/bert_backbone/layers/
transformer_encoder_1/...`. The fused classes of `kerasbert.fused_layers` carry their base
classes' names, so a model's file is the same fused or not, and the same as KerasHub's own
model's. Until 2026-12-06 they carried their own (`fused_transformer_encoder_1`), so each class
kerasbert came to fuse renamed its layers' weights; `names_as_saved(path)` names the fused
classes as a file does while it loads, and `load_weights` loads through it.

Example:

>>> import keras
>>> from kerasbert.fused_layers import FusedDense, use_fused_layers
>>> inputs = keras.Input((4,))
>>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
>>> use_fused_layers(model), type(model.layers[1]) is FusedDense, FusedDense.__name__
(1, True, 'Dense')
>>> model.save_weights("model.weights.h5")
>>> sorted(segment for segment in saved_layer_names("model.weights.h5") if "dense" in segment)
['dense']
>>> load_weights(model, "model.weights.h5")
"""

import contextlib
import re
import zipfile

import h5py
from keras.src.utils.naming import to_snake_case  # how Keras turns a class into a weight-path segment

from kerasbert.fused_layers import FUSED_CLASSES

# Inside a `.keras` archive.
WEIGHTS_MEMBER = "model.weights.h5"


def saved_layer_names(path):
    """Every segment of the weight paths in a `.keras` or `.weights.h5` file (empty when it holds none)."""
    segments = set()
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(path))
                path = stack.enter_context(archive.open(WEIGHTS_MEMBER))
            stack.enter_context(h5py.File(path, "r")).visit(lambda name: segments.update(name.split("/")))
    except (OSError, KeyError, ValueError):  # not there or damaged: Keras' own load says so
        pass
    return segments


@contextlib.contextmanager
def names_as_saved(path):
    """While it lasts, each fused class is named as `path`'s weights name its layers: by its base
    class, or by its own name in a file kerasbert wrote before 2026-12-06. Not thread-safe: it
    renames the classes for every model."""
    segments = saved_layer_names(path)
    own_names = {base: fused for base, fused in FUSED_CLASSES.items()
                 if any(re.fullmatch(to_snake_case(fused.__qualname__) + r"(_\d+)?", segment) for segment in segments)}
    for fused in own_names.values():
        fused.__name__ = fused.__qualname__
    try:
        yield
    finally:
        for base, fused in own_names.items():
            fused.__name__ = base.__name__


def load_weights(model, path):
    """`model.load_weights(path)`, for files of every kerasbert version (`names_as_saved`)."""
    with names_as_saved(path):
        model.load_weights(path)
