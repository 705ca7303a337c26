"""Inference in the process that holds the model through the XLA kernels training uses.

Training computes each block's bias, GELU, residual and LayerNorm as XLA kernels
(`kerasbert.kernels`); inference graphs hold the plain ops, which Grappler's oneDNN
remapper fuses, because what is exported (a SavedModel for TF Serving, TFLite) must
not need XLA. `predict` and `evaluate` in the process itself have no such limit: a
model with `CompiledInferenceSteps` traces its predict and test steps inside
`compiled_inference`, where the fused layers take the XLA kernels for the forward
pass too (1.2x the sequences/s of the backbone at 512 tokens in bf16 on a 2-core Xeon
with AMX: `benchmarks/compare_revisions.md`). Exports trace the model's call outside it.

Example:

>>> compiles_kernels(training=False)
False
>>> with compiled_inference():
...     compiles_kernels(training=False)
True
"""

import contextlib
import contextvars

_COMPILED_INFERENCE = contextvars.ContextVar("kerasbert_compiled_inference", default=False)


@contextlib.contextmanager
def compiled_inference():
    """Fused layers called for inference while this context is open (while a step traces) take the XLA kernels."""
    token = _COMPILED_INFERENCE.set(True)
    try:
        yield
    finally:
        _COMPILED_INFERENCE.reset(token)


def compiles_kernels(training):
    """Whether a fused layer called with `training` takes the XLA kernels: in training, and for
    inference inside `compiled_inference`."""
    return bool(training) or _COMPILED_INFERENCE.get()


class CompiledInferenceSteps:
    """A mixin for a Keras model: its predict and test steps (`predict`, `evaluate`, the
    validation inside `fit`) trace inside `compiled_inference`."""

    def predict_step(self, data):
        with compiled_inference():
            return super().predict_step(data)

    def test_step(self, data):
        with compiled_inference():
            return super().test_step(data)
