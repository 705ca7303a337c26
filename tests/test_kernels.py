import math

import numpy as np
import pytest
import tensorflow as tf

from kerasbert import kernels
from kerasbert.kernels import (
    attention,
    attention_written_gradient,
    compiled_biased_gelu,
    gelu_with_erf,
    residual_normalized,
)


def gradients_of(function, inputs, seed=(1, 2)):
    """The output of `function(*inputs)` and the gradients of a random projection of it."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        output = function(*inputs)
        loss = tf.reduce_sum(tf.cast(output, tf.float32) * tf.random.stateless_normal(output.shape, seed))
    return output, tape.gradient(loss, inputs)


@pytest.mark.parametrize("dtype, tolerance", [(tf.float32, 1e-5), (tf.bfloat16, 2e-2)])
def test_compiled_biased_gelu_and_its_gradients_match_tensorflows(dtype, tolerance):
    x = tf.cast(tf.random.stateless_normal([37, 24], (3, 4)) * 3, dtype)
    bias = tf.cast(tf.random.stateless_normal([24], (5, 6)), dtype)
    expected, expected_gradients = gradients_of(
        lambda x, bias: tf.cast(gelu_with_erf(tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)), dtype), [x, bias])
    actual, actual_gradients = gradients_of(compiled_biased_gelu, [x, bias])
    assert actual.dtype == dtype and [g.dtype for g in actual_gradients] == [dtype, dtype]
    np.testing.assert_allclose(tf.cast(actual, tf.float32), tf.cast(expected, tf.float32), rtol=tolerance, atol=tolerance)
    for got, want in zip(actual_gradients, expected_gradients):
        want = tf.cast(want, tf.float32).numpy()
        np.testing.assert_allclose(tf.cast(got, tf.float32), want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    # GELU's slope is 1/2 at 0, 1 far above and 0 far below; the bias's gradient sums the tokens'.
    points, zeros = tf.constant([[0.0, 8.0, -8.0], [0.0, 8.0, -8.0]]), tf.zeros([3])
    with tf.GradientTape() as tape:
        tape.watch([points, zeros])
        output = compiled_biased_gelu(points, zeros)
    slopes, bias_gradient = tape.gradient(output, [points, zeros])
    np.testing.assert_allclose(slopes, [[0.5, 1.0, 0.0]] * 2, atol=1e-6)
    np.testing.assert_allclose(bias_gradient, [1.0, 2.0, 0.0], atol=1e-6)


def test_attention_written_gradient_matches_tensorflows_with_masked_keys():
    batch, heads, length, size = 2, 3, 7, 4
    query, key, value = (tf.random.stateless_normal([batch, heads, length, size], (seed, 0)) for seed in (1, 2, 3))
    # The second review's last three tokens are padding: no query attends to them.
    keep = tf.constant([[True] * 7, [True] * 4 + [False] * 3])
    additive_mask = tf.where(keep[:, None, None, :], 0.0, -1e9)
    scale = 1 / math.sqrt(size)
    expected, expected_gradients = gradients_of(lambda q, k, v: attention(q, k, v, additive_mask, scale),
                                                [query, key, value])
    actual, actual_gradients = gradients_of(lambda q, k, v: attention_written_gradient(q, k, v, additive_mask, scale),
                                            [query, key, value])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(actual_gradients, expected_gradients):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Padded keys get no gradient, and the values' gradient is not all zero.
    assert np.abs(actual_gradients[1].numpy()[1, :, 4:]).max() < 1e-6
    assert np.abs(actual_gradients[2].numpy()).max() > 1e-3


@pytest.mark.parametrize("mask_shape", [(2, 1, 1, 7), (2, 1, 7, 7)])
def test_attention_matches_the_formula_with_either_kind_of_mask(mask_shape):
    # A mask on the keys alone travels inside the product as one more feature; a mask per query
    # and key is added to the scores. Either way: softmax(q k^T scale + mask) v, forward and back.
    query, key, value = (tf.random.stateless_normal([2, 3, 7, 4], (seed, 2)) for seed in (1, 2, 3))
    kept = tf.random.stateless_uniform(mask_shape, (4, 5)) >= 0.3
    additive_mask = tf.where(kept | (tf.range(7) == 0), 0.0, -1e9)  # every query sees the first key
    scale = 1 / math.sqrt(4)

    def formula(q, k, v):
        return tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * scale + additive_mask), v)

    expected, expected_gradients = gradients_of(formula, [query, key, value])
    actual, actual_gradients = gradients_of(lambda q, k, v: attention(q, k, v, additive_mask, scale),
                                            [query, key, value])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(actual_gradients, expected_gradients):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(expected - attention(query, key, value, None, scale)).max() > 1e-3  # the mask counts


@pytest.mark.parametrize("slice_bytes, mask_batch", [(1, 5), (3 * 2 * 6 * 6 * 4, 1), (10**9, 5)])
def test_attention_in_batch_slices_is_attention_of_the_whole_batch(monkeypatch, slice_bytes, mask_batch):
    # 5 reviews in slices of 1 review, of 2 (the last slice short), or all at once; a mask per review or shared.
    monkeypatch.setattr(kernels, "SLICE_BYTES", slice_bytes)
    query, key, value = (tf.random.stateless_normal([5, 3, 6, 4], (seed, 3)) for seed in (1, 2, 3))
    additive_mask = tf.where(tf.random.stateless_uniform([mask_batch, 1, 1, 6], (4, 6)) < 0.7, 0.0, -1e9)
    additive_mask = tf.concat([tf.zeros_like(additive_mask[..., :1]), additive_mask[..., 1:]], axis=-1)
    slices = []

    def attend(q, k, v, m):
        slices.append(int(tf.shape(q)[0]))
        return attention_written_gradient(q, k, v, m, 0.5)

    expected, expected_gradients = gradients_of(lambda q, k, v: attend(q, k, v, additive_mask), [query, key, value])
    actual, actual_gradients = gradients_of(
        lambda q, k, v: kernels.in_batch_slices(attend, q, k, v, additive_mask), [query, key, value])
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
    for got, want in zip(actual_gradients, expected_gradients):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    sizes = [size for size in slices[1:] if size]
    assert sizes == {1: [1] * 5, 3 * 2 * 6 * 6 * 4: [2, 2, 1], 10**9: [5]}[slice_bytes]


def test_attention_takes_the_batch_whole_where_a_gpu_computes(monkeypatch):
    devices = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu"] if kind == "GPU" else devices(kind))
    monkeypatch.setattr(kernels, "SLICE_BYTES", 1)
    query = tf.random.stateless_normal([4, 2, 3, 2], (1, 4))
    slices = []
    kernels.in_batch_slices(lambda q, k, v: slices.append(int(tf.shape(q)[0])) or attention(q, k, v, None, 1.0),
                            query, query, query)
    assert slices == [4]


def test_attention_written_gradient_with_dropout_matches_tensorflows():
    batch, heads, length, size = 2, 2, 6, 4
    query, key, value = (tf.random.stateless_normal([batch, heads, length, size], (seed, 1)) for seed in (4, 5, 6))
    keep = tf.random.stateless_uniform([batch, heads, length, length], (7, 8)) >= 0.3
    scale, kept_scale = 1 / math.sqrt(size), 1 / 0.7

    def dropped_attention(q, k, v):
        probabilities = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * scale)
        return tf.matmul(tf.where(keep, probabilities, 0.0), v * kept_scale)

    expected, expected_gradients = gradients_of(dropped_attention, [query, key, value])
    actual, actual_gradients = gradients_of(
        lambda q, k, v: attention_written_gradient(q, k, v, None, scale, keep, kept_scale), [query, key, value])
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(actual_gradients, expected_gradients):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Without the mask the gradients differ: the test sees the dropout.
    _, undropped = gradients_of(lambda q, k, v: attention_written_gradient(q, k, v, None, scale), [query, key, value])
    assert np.abs(undropped[0].numpy() - expected_gradients[0].numpy()).max() > 1e-3


@pytest.mark.parametrize("dtype, rate, tolerance", [(tf.float32, 0.0, 1e-5), (tf.float32, 0.3, 1e-5),
                                                    (tf.bfloat16, 0.0, 3e-2)])
def test_residual_normalized_and_its_gradients_match_tensorflows(dtype, rate, tolerance):
    tokens, features, epsilon = 29, 24, 1e-12
    x, residual = (tf.cast(tf.random.stateless_normal([tokens, features], (seed, 2)) * 2, dtype) for seed in (1, 2))
    bias, gamma, beta = (tf.random.stateless_normal([features], (seed, 3)) for seed in (3, 4, 5))
    keep = tf.random.stateless_uniform([tokens, features], (6, 7)) >= rate if rate else None
    kept_scale = 1 / (1 - rate)

    def stock(x, bias, residual, gamma, beta):
        added = tf.cast(x, tf.float32) + bias
        added = added if keep is None else tf.where(keep, added * kept_scale, 0.0)
        total = tf.cast(tf.cast(added + tf.cast(residual, tf.float32), dtype), tf.float32)
        mean, variance = tf.nn.moments(total, axes=[-1], keepdims=True)
        return tf.cast((total - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta, dtype)

    inputs = [x, bias, residual, gamma, beta]
    expected, expected_gradients = gradients_of(stock, inputs)
    actual, actual_gradients = gradients_of(
        lambda *inputs: residual_normalized(*inputs, epsilon, keep, kept_scale), inputs)
    assert actual.dtype == dtype and [g.dtype for g in actual_gradients] == [g.dtype for g in expected_gradients]
    np.testing.assert_allclose(tf.cast(actual, tf.float32), tf.cast(expected, tf.float32), rtol=tolerance, atol=tolerance)
    for got, want in zip(actual_gradients, expected_gradients):
        want = tf.cast(want, tf.float32).numpy()
        np.testing.assert_allclose(tf.cast(got, tf.float32), want, rtol=tolerance, atol=tolerance * np.abs(want).max())
    if keep is not None:  # dropped elements pass no gradient to x, all of it to the residual
        assert np.abs(actual_gradients[0].numpy()[~keep.numpy()]).max() == 0
        assert np.abs(actual_gradients[2].numpy()[~keep.numpy()]).max() > 1e-3
