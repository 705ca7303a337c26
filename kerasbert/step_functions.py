"""Keras' predict and test steps traced once per model, for batches of every size and width.

Keras traces its step `tf.function`s with `reduce_retracing=True`: the first batch of
texts traces at its own shape, the next width traces again, the last, shorter batch a
third time. TensorFlow counts traces per function *code*, shared by every model in the
process, so a second classifier's `predict` (a reloaded one, another fold) warns of
"frequent retracing" though nothing is wrong. Tracing once, at the first call, for
inputs whose every dimension is unknown leaves nothing to retrace and nothing to count
(`get_concrete_function` is not a call).

Example:

>>> class Doubler(ShapeRelaxedSteps, keras.Sequential):
...     pass
>>> model = Doubler([keras.layers.Rescaling(2.0)])
>>> [model.predict(np.ones((batch, width)), verbose=0).shape for batch, width in [(2, 3), (4, 5), (1, 7)]]
[(2, 3), (4, 5), (1, 7)]
>>> model.predict_function.function.experimental_get_tracing_count()
1
"""

import keras  # noqa: F401 (the example's)
import numpy as np  # noqa: F401 (the example's)
import tensorflow as tf


class ShapeRelaxedSteps:
    """A mixin for a Keras model (TensorFlow backend): `predict` and `evaluate` trace their
    step once per model, whatever the batch sizes and sequence widths."""

    def make_predict_function(self, force=False):
        super().make_predict_function(force)
        self.predict_function = traced_once_for_every_shape(self.predict_function)
        return self.predict_function

    def make_test_function(self, force=False):
        super().make_test_function(force)
        self.test_function = traced_once_for_every_shape(self.test_function)
        return self.test_function


class StepTracedOnce:
    """A Keras step `tf.function` whose first call traces it for inputs of any shape."""

    def __init__(self, function):
        self.function = function
        self.traced = False

    def __call__(self, data):
        if not self.traced:
            tensors = tf.nest.flatten(data)
            if all(isinstance(tensor, tf.Tensor) for tensor in tensors):  # not distributed values
                self.function.get_concrete_function(tf.nest.map_structure(shapeless_spec, data))
            self.traced = True
        return self.function(data)


def traced_once_for_every_shape(step):
    """`step` (what Keras' `make_*_function` made) traced for inputs of any shape at its
    first call; an eager step (`run_eagerly`), or one already wrapped, as it is."""
    if isinstance(step, StepTracedOnce) or not isinstance(step, tf.types.experimental.PolymorphicFunction):
        return step
    return StepTracedOnce(step)


def shapeless_spec(tensor):
    return tf.TensorSpec([None] * tensor.shape.rank, tensor.dtype)
