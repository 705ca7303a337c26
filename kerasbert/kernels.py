"""The element-wise math of BERT's training step in fewer passes over memory than
TensorFlow's own ops take: the exact GELU with its bias, and its gradients, as XLA
kernels; a block's end (bias, dropout, residual and LayerNorm) as one XLA kernel
and its gradient as another (1.25x the MatMul before it, fused with its bias, plus
TensorFlow's ops, forward and back for 16 x 312 x 1536 -> 384 in bf16 on a 2-core
Xeon with AMX); attention's gradient written out (its softmax's as an XLA kernel);
LayerNorm alone with its gradient written out. `kerasbert.fused_layers` calls them
from Keras layers.

Each XLA kernel compiles once per input shape. Training and in-process `predict`
and `evaluate` call them (`kerasbert.compiled_inference`); the other inference
graphs (what is exported for TF Serving and TFLite) hold the plain ops.

Example:

>>> import tensorflow as tf
>>> x, bias = tf.constant([[-1.0, 0.0, 2.0]]), tf.constant([0.5, 0.0, -1.0])
>>> [round(float(value), 4) for value in compiled_biased_gelu(x, bias)[0]]
[-0.1543, 0.0, 0.8413]
"""

import math

import tensorflow as tf


def gelu_with_erf(x):
    """The exact GELU, x * (1 + erf(x / sqrt(2))) / 2: the function `keras.activations.gelu`
    computes through `erfc`, whose bf16 kernel is scalar. Through `erf` the gradient costs a
    third less, and Grappler still fuses it into the MatMul for inference (oneDNN's gelu_erf)."""
    return 0.5 * x * (1 + tf.math.erf(x * tf.cast(1 / math.sqrt(2), x.dtype)))


@tf.function(jit_compile=True)
def biased_gelu_kernel(x, bias):
    """`gelu_with_erf(x + bias)` as one XLA kernel computing in float32."""
    return tf.cast(gelu_with_erf(tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)), x.dtype)


@tf.function(jit_compile=True)
def biased_gelu_gradient(x, bias, upstream):
    """The gradients of `gelu_with_erf(x + bias)` for [tokens, features] `x`, upstream (cdf + z pdf)
    at z = x + bias and its sum over the tokens, as one XLA kernel in float32."""
    z = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    cdf = 0.5 * (1 + tf.math.erf(z * (1 / math.sqrt(2))))
    pdf = tf.exp(-0.5 * tf.square(z)) * (1 / math.sqrt(2 * math.pi))
    gradient = tf.cast(upstream, tf.float32) * (cdf + z * pdf)
    return tf.cast(gradient, x.dtype), tf.cast(tf.reduce_sum(gradient, axis=0), bias.dtype)


# Forward and back for 16 x 312 tokens, 384 -> 1536 in bf16 on a 2-core Xeon with AMX
# (2026-12-06): 28 ms, against 35 with the bias fused into the MatMul (oneDNN then leaves
# AMX for a plain GEMM) and 52 with XLA differentiating a compiled GELU (its forward kernel
# writes out every intermediate the gradient reads back).
@tf.custom_gradient
def compiled_biased_gelu(x, bias):
    """The exact GELU of `x + bias` as one XLA kernel, and its gradients as another."""
    return biased_gelu_kernel(x, bias), lambda upstream: biased_gelu_gradient(x, bias, upstream)


@tf.function(jit_compile=True)
def softmax_gradient(probabilities, upstream):
    """The gradient of a last-axis softmax, p (dp - sum(p dp)), as one XLA kernel summing in float32."""
    p, dp = tf.cast(probabilities, tf.float32), tf.cast(upstream, tf.float32)
    return tf.cast(p * (dp - tf.reduce_sum(p * dp, axis=-1, keepdims=True)), upstream.dtype)


@tf.custom_gradient
def softmax_compiled_gradient(scores):
    """`tf.nn.softmax(scores)` (oneDNN's) whose gradient is `softmax_gradient`: TensorFlow's
    runs as separate element-wise ops and a sum over the [batch, heads, length, length] probabilities."""
    probabilities = tf.nn.softmax(scores)
    return probabilities, lambda upstream: softmax_gradient(probabilities, upstream)


def attention_scores(query, key, additive_mask, scale):
    """query key^T scale + additive_mask for [batch, heads, length, size] queries and keys.

    A mask on the keys alone ([batch, 1, 1, keys], padding) rides in the product as one more
    feature, [query scale, 1] . [key, mask]: a plain BatchMatMul, where the remapper would fuse
    the scale and the mask into oneDNN's as post-ops (a broadcast bf16 add on every score; both
    run on AMX): 16.9 against 26.0 ms for 16 x 12 heads x 512 x 32 in bf16 (2-core Xeon with AMX,
    `benchmarks/attention_parts.md`). The scale goes on the queries, the smaller side.
    """
    query = query * tf.cast(scale, query.dtype)
    if additive_mask is not None and additive_mask.shape.rank == 4 and additive_mask.shape[-2] == 1:
        masks = tf.broadcast_to(tf.transpose(tf.cast(additive_mask, key.dtype), [0, 1, 3, 2]),
                                tf.concat([tf.shape(key)[:-1], [1]], axis=0))  # [batch, heads, keys, 1]
        query = tf.concat([query, tf.ones_like(query[..., :1])], axis=-1)
        key, additive_mask = tf.concat([key, masks], axis=-1), None
    scores = tf.matmul(query, key, transpose_b=True)
    return scores if additive_mask is None else scores + additive_mask


@tf.function(jit_compile=True)
def prepared_attention_inputs(projected, bias, key_mask, scale):
    """For in-process inference: self-attention's [batch, length, 3, heads, size] projections (without
    their bias), the bias (float32, [3, heads, size]) and an additive [batch, length] key mask
    (`fused_layers.additive_mask_of`), as heads-first [query scale, 1], [key, mask] and value
    (`attention_scores`' product) in one XLA kernel: one pass where the bias, the transpose, the scale
    and the two concatenations took one each."""
    heads_first = tf.transpose(tf.cast(projected, tf.float32) + bias, [2, 0, 3, 1, 4])
    query, key, value = heads_first[0], heads_first[1], heads_first[2]
    query = tf.concat([query * scale, tf.ones_like(query[..., :1])], axis=-1)
    key_mask = tf.cast(key_mask, tf.float32)[:, None, :, None]
    key = tf.concat([key, tf.broadcast_to(key_mask, tf.shape(key[..., :1]))], axis=-1)
    return tuple(tf.cast(x, projected.dtype) for x in (query, key, value))


def prepared_attention(query, key, value):
    """softmax(query key^T) value for queries and keys that carry the scale and the mask
    (`prepared_attention_inputs`)."""
    return tf.matmul(tf.nn.softmax(tf.matmul(query, key, transpose_b=True)), value)


def attention_probabilities(query, key, additive_mask, scale):
    """softmax(query key^T scale + additive_mask) (`attention_scores`), oneDNN's softmax."""
    return tf.nn.softmax(attention_scores(query, key, additive_mask, scale))


def attention(query, key, value, additive_mask, scale):
    """Scaled dot-product attention over [batch, heads, length, size] queries, keys and values."""
    return tf.matmul(attention_probabilities(query, key, additive_mask, scale), value)


def heads_last(outputs):
    """[batch, heads, length, size] as [batch, length, heads, size]."""
    return tf.transpose(outputs, [0, 2, 1, 3])


# Attention computed a slice of the batch at a time, each slice's [heads, length, length] tensors about
# this many bytes: alone, forward 1.24x faster than the whole batch for 64 reviews at 512 tokens (2 a
# slice), forward and back 1.14x for 16 (2-core Xeon with AMX, 2026-12-06, `benchmarks/attention_parts.md`);
# the slices run side by side. More slices than MAX_SLICES cost more than they give (per-op overhead).
SLICE_BYTES = 12 * 2**20
MAX_SLICES = 16


def in_batch_slices(attend, query, key, *others):
    """`attend(query, key, *others)` on slices of the batch, concatenated: [batch, heads,
    length, size] queries and keys, `others` (None or [batch or 1, ...]) split alike. Short
    reviews make one slice; the slices are static in number (MAX_SLICES, the last ones empty).
    A CPU's measure: with a GPU or TPU present the batch goes whole."""
    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return attend(query, key, *others)
    batch = tf.shape(query)[0]
    row_bytes = tf.shape(query)[1] * tf.shape(query)[2] * tf.shape(key)[2] * query.dtype.size
    rows = tf.maximum(-(-batch // MAX_SLICES), tf.maximum(SLICE_BYTES // row_bytes, 1))
    sizes = tf.clip_by_value(batch - tf.range(MAX_SLICES) * rows, 0, rows)

    def split(tensor):
        if tensor is None:
            return [None] * MAX_SLICES
        return tf.split(tf.broadcast_to(tensor, tf.concat([[batch], tf.shape(tensor)[1:]], 0)), sizes, num=MAX_SLICES)

    return tf.concat([attend(*parts) for parts in zip(*map(split, (query, key, *others)))], axis=0)


@tf.function(jit_compile=True)
def attention_scores_gradient(probabilities, upstream, outputs, outputs_upstream, scale, keep=None):
    """The gradient of the scaled scores before the softmax, p (dp - sum(p dp)) scale, as one XLA
    kernel in float32, the row sums sum(p dp) taken as sum(do o) over the outputs o and their
    gradient do; dp is `upstream` where dropout kept the probability (`keep`), else 0."""
    row_sums = tf.reduce_sum(tf.cast(outputs_upstream, tf.float32) * tf.cast(outputs, tf.float32), -1, keepdims=True)
    upstream = tf.cast(upstream, tf.float32)
    if keep is not None:
        upstream = tf.where(keep, upstream, 0.0)
    return tf.cast(tf.cast(probabilities, tf.float32) * (upstream - row_sums) * scale, probabilities.dtype)


def attention_written_gradient(query, key, value, additive_mask, scale, keep=None, kept_scale=1.0):
    """`attention` with its gradient written out, as FlashAttention's backward pass computes
    it: the softmax's row sums sum_j p_ij dp_ij are do_i . o_i, a product over the [length,
    size] outputs, so the [length, length] scores' gradient is one pass over p and dp
    (1.4x forward and back for 16 x 12 heads x 512 x 32 in bf16, 2-core Xeon with AMX). With
    dropout on the probabilities, `keep` is the boolean mask of those kept and `kept_scale`
    (1 / (1 - rate)) scales the values, 1/length the size of the probabilities; the row sums
    are still do . o."""

    @tf.custom_gradient
    def attend(query, key, value):
        probabilities = attention_probabilities(query, key, additive_mask, scale)
        kept = probabilities if keep is None else tf.where(keep, probabilities, tf.zeros((), probabilities.dtype))
        scaled_value = value if kept_scale == 1 else value * tf.cast(kept_scale, value.dtype)
        outputs = tf.matmul(kept, scaled_value)

        def gradient(upstream):
            scores = attention_scores_gradient(probabilities, tf.matmul(upstream, scaled_value, transpose_b=True),
                                               outputs, upstream, scale, keep)
            value_gradient = tf.matmul(kept, upstream, transpose_a=True)
            if kept_scale != 1:
                value_gradient *= tf.cast(kept_scale, value_gradient.dtype)
            return tf.matmul(scores, key), tf.matmul(scores, query, transpose_a=True), value_gradient

        return outputs, gradient

    return attend(query, key, value)


@tf.function(jit_compile=True)
def residual_normalized_kernel(x, bias, residual, gamma, beta, epsilon, keep=None, kept_scale=1.0):
    """LayerNorm(residual + dropped(x + bias)) over the last axis as one XLA kernel in float32: the
    normalized sum in x's dtype, the sum as x's dtype holds it, its means and inverse deviations."""
    added = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    if keep is not None:
        added = tf.where(keep, added * kept_scale, 0.0)
    total = tf.cast(added + tf.cast(residual, tf.float32), x.dtype)
    total32 = tf.cast(total, tf.float32)
    mean = tf.reduce_mean(total32, axis=-1, keepdims=True)
    centered = total32 - mean
    inverse_deviation = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
    return tf.cast(centered * inverse_deviation * gamma + beta, x.dtype), total, mean, inverse_deviation


@tf.function(jit_compile=True)
def residual_normalized_gradient(total, mean, inverse_deviation, gamma, upstream, keep=None, kept_scale=1.0):
    """The gradients of `residual_normalized_kernel` for [tokens, features] tensors as one XLA
    kernel in float32: the sum's (the residual's), x's, and the bias', gamma's and beta's sums
    over the tokens."""
    upstream = tf.cast(upstream, tf.float32)
    standardized = (tf.cast(total, tf.float32) - mean) * inverse_deviation
    g = upstream * gamma
    total_gradient = inverse_deviation * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                                          - standardized * tf.reduce_mean(g * standardized, axis=-1, keepdims=True))
    x_gradient = total_gradient if keep is None else tf.where(keep, total_gradient * kept_scale, 0.0)
    return (tf.cast(total_gradient, total.dtype), tf.cast(x_gradient, total.dtype), tf.reduce_sum(x_gradient, axis=0),
            tf.reduce_sum(upstream * standardized, axis=0), tf.reduce_sum(upstream, axis=0))


def residual_normalized(x, bias, residual, gamma, beta, epsilon, keep=None, kept_scale=1.0):
    """LayerNorm(residual + dropout(x + bias)) for [tokens, features] tensors, the end of a post-norm
    transformer block, as one XLA kernel and its gradient as another: the bias is added here, so
    the MatMul making x runs without one (on AMX tiles where the CPU has them; oneDNN's MatMul
    fused with its bias does not), and LayerNorm's dozen element-wise passes become one. With
    dropout, `keep` is the boolean mask of the elements kept and `kept_scale` 1 / (1 - rate)."""

    @tf.custom_gradient
    def layer_norm(x, bias, residual, gamma, beta):
        outputs, total, mean, inverse_deviation = residual_normalized_kernel(
            x, bias, residual, gamma, beta, epsilon, keep, kept_scale)

        def gradient(upstream):
            total_gradient, x_gradient, bias_gradient, gamma_gradient, beta_gradient = residual_normalized_gradient(
                total, mean, inverse_deviation, gamma, upstream, keep, kept_scale)
            return x_gradient, bias_gradient, total_gradient, gamma_gradient, beta_gradient

        return outputs, gradient

    bias, gamma, beta = (tf.cast(weight, tf.float32) for weight in (bias, gamma, beta))
    return layer_norm(x, bias, residual, gamma, beta)


def normalized(inputs, gamma, beta, epsilon):
    """LayerNorm over the last axis, computed in float32 and returned in the inputs' dtype,
    with its gradient written out: dx = (g - mean(g) - x^ mean(g x^)) / sigma for g = dy gamma."""

    @tf.custom_gradient
    def layer_norm(x, gamma, beta):
        x32 = tf.cast(x, tf.float32)
        centered = x32 - tf.reduce_mean(x32, axis=-1, keepdims=True)
        inverse_deviation = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
        standardized = centered * inverse_deviation

        def gradient(upstream):
            upstream = tf.cast(upstream, tf.float32)
            outer_axes = list(range(upstream.shape.rank - 1))
            g = upstream * gamma
            dx = inverse_deviation * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                                      - standardized * tf.reduce_mean(g * standardized, axis=-1, keepdims=True))
            return (tf.cast(dx, x.dtype), tf.reduce_sum(upstream * standardized, axis=outer_axes),
                    tf.reduce_sum(upstream, axis=outer_axes))

        return tf.cast(standardized * gamma + beta, x.dtype), gradient

    return layer_norm(inputs, tf.cast(gamma, tf.float32), tf.cast(beta, tf.float32))
