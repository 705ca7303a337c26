"""Drop-in subclasses of Keras' Dense, EinsumDense and MultiHeadAttention
whose TensorFlow graphs Grappler's oneDNN remapper can fuse.

Keras 3 computes a Dense layer on a [batch, length, features] input as
`tensordot` (reshape, MatMul, reshape) followed by a separate bias `Add` and
activation, and attention as `einsum`s with a `SelectV2` mask over the whole
[batch, heads, length, length] score tensor. None of that fuses, so on a CPU
a third of BERT's time goes to element-wise kernels (`benchmarks/profile.md`).
The subclasses compute the same functions as 2-D `MatMul` + `BiasAdd` (+
GELU), which the remapper turns into one `_FusedMatMul`, and attention as
`BatchMatMul` with an additive mask. Weights, configs and saved files are
unchanged: `use_fused_layers` only rebinds the classes of a built model's
layers, so a model is fused again after it is loaded.

Example:

>>> from kerasbert.model import build_classifier
>>> from kerasbert.presets import resolve_preset
>>> classifier, _ = build_classifier(resolve_preset("all_minilm_l6_v2_offline"), 2, 64, fused_layers=False)
>>> use_fused_layers(classifier)  # per layer: 4 projections, 2 feed-forward, attention; pooler, head
44
>>> uses_fused_layers(classifier)
True
"""

import math

import keras
import tensorflow as tf


def project(inputs, kernel, bias, activation, contracted):
    """activation(inputs . kernel + bias) over the last `contracted` input axes and the
    kernel's first ones, computed as one 2-D MatMul + BiasAdd (+ activation)."""
    kernel = tf.cast(kernel, inputs.dtype)
    free_shape = kernel.shape[contracted:]
    outer_shape = tf.shape(inputs)[:inputs.shape.rank - contracted]
    x = tf.matmul(tf.reshape(inputs, [-1, math.prod(inputs.shape[-contracted:])]),
                  tf.reshape(kernel, [-1, math.prod(free_shape)]))
    x = tf.nn.bias_add(x, tf.reshape(tf.cast(bias, x.dtype), [-1]))
    if activation is not None:
        x = activation(x)
    return tf.reshape(x, tf.concat([outer_shape, free_shape], axis=0))


class FusedDense(keras.layers.Dense):
    """`keras.layers.Dense` as a 2-D MatMul + BiasAdd + activation."""

    def call(self, inputs, training=None):
        if self.quantization_mode or self.bias is None:
            return super().call(inputs, training=training)
        return project(inputs, self.kernel, self.bias, self.activation, contracted=1)


def contracted_axes(equation, bias_shape, kernel_shape):
    """How many trailing input axes an EinsumDense contracts with the kernel's leading
    axes, when the output is the remaining input axes then the kernel's and the bias
    covers exactly the kernel's free axes; else None."""
    inputs, rest = equation.split(",")
    kernel, output = rest.split("->")
    for count in range(1, len(kernel)):
        if (inputs[-count:] == kernel[:count] and output == inputs[:-count] + kernel[count:]
                and tuple(bias_shape) == tuple(kernel_shape[count:])):
            return count
    return None


class FusedEinsumDense(keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` of a plain contraction (BERT's query, key, value
    and attention-output projections) as a 2-D MatMul + BiasAdd."""

    def call(self, inputs, training=None):
        count = None if self.quantization_mode or self.bias is None else contracted_axes(
            self.equation, self.bias.shape, self.kernel.shape)
        if count is None:
            return super().call(inputs, training=training)
        return project(inputs, self.kernel, self.bias, self.activation, contracted=count)


class FusedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` whose scores are a BatchMatMul, a scale
    and an additive mask, instead of einsums and a select over every score."""

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        if return_attention_scores or use_causal_mask or tuple(self._attention_axes) != (1,):
            return super()._compute_attention(query, key, value, attention_mask, training,
                                              return_attention_scores, use_causal_mask)
        heads_first = [0, 2, 1, 3]  # [batch, length, heads, size] <-> [batch, heads, length, size]
        query, key, value = (tf.transpose(x, heads_first) for x in (query, key, value))
        scores = tf.matmul(query, key, transpose_b=True) * tf.cast(self._inverse_sqrt_key_dim, query.dtype)
        if attention_mask is not None:
            # [batch, 1, query, key], broadcast over the heads; -3e4 fits float16.
            blocked = -3e4 if scores.dtype == tf.float16 else -1e9
            scores += tf.cast(tf.where(tf.cast(attention_mask, tf.bool)[:, None], 0.0, blocked), scores.dtype)
        probabilities = self._dropout_layer(tf.nn.softmax(scores), training=training)
        output = tf.transpose(tf.matmul(probabilities, value), heads_first)
        return output, None


FUSED_CLASSES = {
    keras.layers.Dense: FusedDense,
    keras.layers.EinsumDense: FusedEinsumDense,
    keras.layers.MultiHeadAttention: FusedMultiHeadAttention,
}


def use_fused_layers(model):
    """Rebind every plain Dense, EinsumDense and MultiHeadAttention inside `model`
    to its fused subclass; returns how many layers changed."""
    changed = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        fused = FUSED_CLASSES.get(type(layer))
        if fused:
            layer.__class__ = fused
            changed += 1
    return changed


def uses_fused_layers(model):
    """Whether any layer inside `model` is one of the fused subclasses."""
    return any(isinstance(layer, tuple(FUSED_CLASSES.values()))
               for layer in model._flatten_layers(include_self=False, recursive=True))
