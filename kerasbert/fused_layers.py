"""Drop-in subclasses of Keras' Dense, EinsumDense, MultiHeadAttention, Dropout,
LayerNormalization and KerasHub's TransformerEncoder whose TensorFlow graphs are
cheaper on a CPU.

Keras 3 computes a Dense layer on a [batch, length, features] input as `tensordot`
(reshape, MatMul, reshape), a separate bias `Add` and activation, and attention as
`einsum`s with a `SelectV2` mask over every score; none of that fuses. The subclasses
compute the same functions as 2-D `MatMul` + `BiasAdd` (+ GELU), which Grappler's oneDNN
remapper fuses, and attention as `BatchMatMul` with an additive mask; dropout draws 16
random bits per element. Training, in-process `predict` and `evaluate`
(`kerasbert.compiled_inference`) compute the bias and GELU, each block's end (output
bias, dropout, residual, LayerNorm) and gradients as XLA kernels, the MatMuls before them
without a fused bias, on AMX tiles where the CPU has them; exported graphs keep the plain
ops. Weights, configs and saved files are unchanged: `use_fused_layers` only rebinds the
classes of a built model's layers, so a model is fused again after it is loaded.

Example:

>>> from kerasbert.model import TextClassifier
>>> classifier = TextClassifier.from_preset("all_minilm_l6_v2_offline", num_classes=2, fused_layers=False)
>>> use_fused_layers(classifier)  # per layer: itself, 4 projections, 2 feed-forward, attention, 3 dropouts, 2 LayerNorms; 5 more
83
>>> uses_fused_layers(classifier)
True
"""

import math

import keras
import tensorflow as tf
from keras_hub.layers import TransformerEncoder
from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask

from kerasbert.compiled_inference import compiles_kernels
from kerasbert.dropout_masks import fast_dropout_applies, keep_mask_and_scale, zero_dropped
from kerasbert.kernels import (
    attention,
    attention_scores,
    attention_written_gradient,
    compiled_biased_gelu,
    gelu_with_erf,
    heads_last,
    in_batch_slices,
    normalized,
    prepared_attention,
    prepared_attention_inputs,
    residual_normalized,
    softmax_compiled_gradient,
)


def flat_product(inputs, kernel, contracted):
    """inputs . kernel over the last `contracted` input axes and the kernel's first ones, as
    one 2-D MatMul: [the inputs' other elements, the kernel's other elements]."""
    kernel = tf.cast(kernel, inputs.dtype)
    return tf.matmul(tf.reshape(inputs, [-1, math.prod(inputs.shape[-contracted:])]),
                     tf.reshape(kernel, [-1, math.prod(kernel.shape[contracted:])]))


def project(inputs, kernel, bias, activation, contracted, training=False):
    """activation(inputs . kernel + bias) over the last `contracted` input axes and the
    kernel's first ones, computed as one 2-D MatMul + BiasAdd (+ activation; in training,
    the bias and a GELU as one XLA kernel, `compiled_biased_gelu`)."""
    free_shape = kernel.shape[contracted:]
    outer_shape = tf.shape(inputs)[:inputs.shape.rank - contracted]
    x = flat_product(inputs, kernel, contracted)
    bias = tf.reshape(tf.cast(bias, x.dtype), [-1])
    if activation is keras.activations.gelu and compiles_kernels(training):
        x = compiled_biased_gelu(x, bias)
    elif activation is keras.activations.gelu:
        x = gelu_with_erf(tf.nn.bias_add(x, bias))
    else:
        x = tf.nn.bias_add(x, bias)
        x = activation(x) if activation is not None else x
    return tf.reshape(x, tf.concat([outer_shape, free_shape], axis=0))


class FusedDense(keras.layers.Dense):
    """`keras.layers.Dense` as a 2-D MatMul + BiasAdd + activation."""

    def call(self, inputs, training=None):
        if self.quantization_mode or self.bias is None:
            return super().call(inputs, training=training)
        return project(inputs, self.kernel, self.bias, self.activation, contracted=1, training=training)


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
        return project(inputs, self.kernel, self.bias, self.activation, contracted=count, training=training)


class FusedDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` whose mask takes 16 random bits per element (`keep_mask`)."""

    def call(self, inputs, training=False):
        if not fast_dropout_applies(self, training):
            return super().call(inputs, training=training)
        return zero_dropped(self, inputs * tf.cast(1 / (1 - self.rate), inputs.dtype))


class FusedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` whose scores are a BatchMatMul, a scale
    and an additive mask, instead of einsums and a select over every score, and
    whose dropout on the attention probabilities draws half the random numbers.
    Self-attention (query, key and value the same tensor) projects all three in
    one MatMul: one wider product, one transpose to heads-first and, in the
    gradient, no sum of three input gradients. Training takes
    `attention_written_gradient`'s gradient, dropout on the probabilities included."""

    def call(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, training=None, use_causal_mask=False):
        if not self._projects_self_attention_at_once(query, value, key, query_mask, value_mask, key_mask,
                                                     return_attention_scores, use_causal_mask):
            return super().call(query, value, key, query_mask, value_mask, key_mask, attention_mask,
                                return_attention_scores, training, use_causal_mask)
        return self._output_dense(self.attend_to_itself(query, attention_mask, training))

    def attend_to_itself(self, inputs, attention_mask, training):
        """Self-attention over [batch, length, hidden] `inputs` up to the output projection:
        [batch, length, heads, size]."""
        attention_mask = self._compute_attention_mask(inputs, inputs, attention_mask=attention_mask)
        projections = (self._query_dense, self._key_dense, self._value_dense)
        kernel = tf.concat([tf.cast(layer.kernel, inputs.dtype) for layer in projections], axis=1)
        if compiles_kernels(training) and not training and (
                attention_mask is None or (attention_mask.shape.rank == 3 and attention_mask.shape[1] == 1)):
            return self._attend_prepared(inputs, kernel, attention_mask, projections)
        bias = tf.concat([tf.cast(layer.bias, inputs.dtype) for layer in projections], axis=0)
        projected = project(inputs, kernel, bias, None, contracted=1)
        shape = [tf.shape(inputs)[0], tf.shape(inputs)[1], 3, self._num_heads, self._key_dim]
        heads_first = tf.transpose(tf.reshape(projected, shape), [2, 0, 3, 1, 4])  # [3, batch, heads, length, size]
        query, key, value = tf.unstack(heads_first)
        return self._attend(query, key, value, attention_mask, training)

    def _attend_prepared(self, inputs, kernel, attention_mask, projections):
        """In-process inference with a [batch, 1, keys] padding mask (or None): the projections' MatMul
        without its bias (oneDNN runs one fused with its bias off AMX tiles), then the bias, the scale and
        the mask put into heads-first queries and keys by one XLA kernel, and attention a slice of the batch
        at a time (exported graphs keep the fused bias, which TFLite's fully-connected op takes in)."""
        shape = [tf.shape(inputs)[0], tf.shape(inputs)[1], 3, self._num_heads, self._key_dim]
        bias = tf.concat([tf.cast(layer.bias, tf.float32) for layer in projections], axis=0)
        key_mask = tf.zeros(shape[:2]) if attention_mask is None else additive_mask_of(attention_mask[:, 0], inputs.dtype)
        prepared = prepared_attention_inputs(tf.reshape(flat_product(inputs, kernel, 1), shape),
                                             tf.reshape(bias, shape[2:]), key_mask, float(self._inverse_sqrt_key_dim))
        return heads_last(in_batch_slices(prepared_attention, *prepared))

    def _projects_self_attention_at_once(self, query, value, key, query_mask, value_mask, key_mask,
                                         return_attention_scores, use_causal_mask):
        plain = (query is value and (key is None or key is value) and not return_attention_scores
                 and not use_causal_mask and query_mask is None and value_mask is None and key_mask is None
                 and getattr(query, "_keras_mask", None) is None and tuple(self._attention_axes) == (1,)
                 and not self._use_gate and getattr(self, "_sliding_window", None) is None)
        projections = (self._query_dense, self._key_dense, self._value_dense)
        return plain and all(
            isinstance(layer, FusedEinsumDense) and layer.built and not layer.quantization_mode
            and layer.bias is not None and tuple(layer.kernel.shape) == tuple(self._query_dense.kernel.shape)
            and contracted_axes(layer.equation, layer.bias.shape, layer.kernel.shape) == 1
            for layer in projections)

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        if return_attention_scores or use_causal_mask or tuple(self._attention_axes) != (1,):
            return super()._compute_attention(query, key, value, attention_mask, training,
                                              return_attention_scores, use_causal_mask)
        heads_first = [0, 2, 1, 3]  # [batch, length, heads, size] -> [batch, heads, length, size]
        query, key, value = (tf.transpose(x, heads_first) for x in (query, key, value))
        return self._attend(query, key, value, attention_mask, training), None

    def _attend(self, query, key, value, attention_mask, training):
        """Attention over [batch, heads, length, size] queries, keys and values, returned
        as [batch, length, heads, size]."""
        scale = float(self._inverse_sqrt_key_dim)
        # [batch, 1, query, key], broadcast over the heads.
        additive_mask = None if attention_mask is None else additive_mask_of(attention_mask[:, None], query.dtype)
        dropout = self._dropout_layer
        if not training:
            if not compiles_kernels(training):  # an exported graph: the whole batch at once
                return heads_last(attention(query, key, value, additive_mask, scale))
            # In-process inference a slice of the batch at a time: 1.09x predict at 512 tokens, the same at 256;
            # training gained nothing (its graph already runs independent ops side by side).
            return heads_last(in_batch_slices(lambda *qkvm: attention(*qkvm, scale), query, key, value, additive_mask))
        keep, kept_scale = keep_mask_and_scale(dropout, training,
                                               tf.concat([tf.shape(query)[:-1], tf.shape(key)[-2:-1]], axis=0))
        if keep is not None or not dropout.rate:
            return heads_last(attention_written_gradient(query, key, value, additive_mask, scale, keep, kept_scale))
        probabilities = softmax_compiled_gradient(attention_scores(query, key, additive_mask, scale))
        return heads_last(tf.matmul(dropout(probabilities, training=training), value))


def additive_mask_of(attention_mask, dtype):
    """`attention_mask` as `dtype` to add to scores: 0 where it keeps, -1e9 where it blocks (-3e4 in float16)."""
    blocked = -3e4 if dtype == tf.float16 else -1e9
    return tf.cast(tf.where(tf.cast(attention_mask, tf.bool), 0.0, blocked), dtype)


class FusedLayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis whose gradient is `normalized`'s."""

    def call(self, inputs):
        if not self.normalizes_last_axis(inputs.shape.rank):
            return super().call(inputs)
        return tf.cast(normalized(inputs, self.gamma, self.beta, self.epsilon), self.compute_dtype)

    def normalizes_last_axis(self, rank):
        """Whether the layer is a plain LayerNorm (centred, scaled) over the last of `rank` axes."""
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        return [axis % rank for axis in axes] == [rank - 1] and not self.rms_scaling and self.center and self.scale


class FusedTransformerEncoder(TransformerEncoder):
    """KerasHub's post-norm `TransformerEncoder` whose training step ends each block (attention,
    feed-forward) in one XLA kernel, `residual_normalized`: the block's output bias, dropout, the
    residual and the LayerNorm, and their gradient in another. The block's last MatMul then runs
    without its bias, on AMX tiles where the CPU has them. Inference takes KerasHub's own path,
    except inside `compiled_inference` (in-process `predict` and `evaluate`)."""

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None, return_attention_scores=False):
        if not (compiles_kernels(training) and not return_attention_scores and self._ends_blocks_at_once(inputs)):
            return super().call(inputs, padding_mask, attention_mask, training, return_attention_scores)
        attention = self._self_attention_layer
        heads = attention.attend_to_itself(inputs, merge_padding_and_attention_mask(inputs, padding_mask, attention_mask),
                                           training)
        x = self._end_block(heads, attention._output_dense, inputs, self._self_attention_dropout,
                            self._self_attention_layer_norm, training)
        hidden = self._feedforward_intermediate_dense(x, training=training)
        return self._end_block(hidden, self._feedforward_output_dense, x, self._feedforward_dropout,
                               self._feedforward_layer_norm, training)

    def _end_block(self, inputs, dense, residual, dropout, layer_norm, training):
        """layer_norm(residual + dropout(dense(inputs))), shaped like `residual`."""
        product = flat_product(inputs, dense.kernel, inputs.shape.rank - residual.shape.rank + 1)
        keep, kept_scale = keep_mask_and_scale(dropout, training, tf.shape(product))
        outputs = residual_normalized(product, dense.bias, tf.reshape(residual, tf.shape(product)), layer_norm.gamma,
                                      layer_norm.beta, layer_norm.epsilon, keep, kept_scale)
        return tf.reshape(outputs, tf.shape(residual))

    def _ends_blocks_at_once(self, inputs):
        attention, rank = self._self_attention_layer, inputs.shape.rank
        ends = ((attention._output_dense, FusedEinsumDense), (self._feedforward_output_dense, FusedDense))
        return (not self.normalize_first and isinstance(attention, FusedMultiHeadAttention)
                and attention._projects_self_attention_at_once(inputs, inputs, None, None, None, None, False, False)
                and all(isinstance(dense, kind) and not dense.quantization_mode and dense.bias is not None
                        and dense.activation in (None, keras.activations.linear) for dense, kind in ends)
                and contracted_axes(attention._output_dense.equation, attention._output_dense.bias.shape,
                                    attention._output_dense.kernel.shape) == 2
                and all(isinstance(norm, FusedLayerNormalization) and norm.normalizes_last_axis(rank)
                        for norm in (self._self_attention_layer_norm, self._feedforward_layer_norm))
                and all(isinstance(dropout, FusedDropout) and (not dropout.rate or fast_dropout_applies(dropout, True))
                        for dropout in (self._self_attention_dropout, self._feedforward_dropout)))


FUSED_CLASSES = {
    keras.layers.Dense: FusedDense,
    keras.layers.EinsumDense: FusedEinsumDense,
    keras.layers.MultiHeadAttention: FusedMultiHeadAttention,
    keras.layers.Dropout: FusedDropout,
    keras.layers.LayerNormalization: FusedLayerNormalization,
    TransformerEncoder: FusedTransformerEncoder,
}
# Keras names the weights of a layer in a list (a functional model's layers) after its class in saved
# files: a fused class takes its base's name, so files are the same fused or not (`kerasbert.weight_files`).
for _base, _fused in FUSED_CLASSES.items():
    _fused.__name__ = _base.__name__


def use_fused_layers(model):
    """Rebind every plain Dense, EinsumDense, MultiHeadAttention, Dropout and LayerNormalization inside `model`
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
