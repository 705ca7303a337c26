"""Dropout masks with 16 random bits per element, where TensorFlow's dropout draws a
32-bit word: half the random numbers for the same keep probabilities (to 1/65536),
drawn from a Keras Dropout layer's rate and seed generator, so a fused layer keeps
the stock layer's seeding.

Example:

>>> import tensorflow as tf
>>> mask = keep_mask(tf.constant([4, 1000]), 0.25, tf.constant([1, 2]))
>>> abs(float(tf.reduce_mean(tf.cast(mask, tf.float32))) - 0.75) < 0.02
True
"""

import tensorflow as tf


def keep_mask(shape, rate, seed):
    """A boolean tensor of `shape` (a 1-D int32 tensor), each element True with
    probability `1 - rate`, `rate` rounded to a multiple of 1/65536: 16 random
    bits per element, so a [.., n] mask takes n/2 random 32-bit words."""
    words_shape = tf.concat([shape[:-1], [(shape[-1] + 1) // 2]], axis=0)
    words = tf.random.stateless_uniform(words_shape, seed, minval=None, maxval=None, dtype=tf.uint32)
    halves = tf.reshape(tf.bitcast(words, tf.uint16), tf.concat([shape[:-1], [-1]], axis=0))
    return halves[..., :shape[-1]] >= dropped_of_65536(rate)  # the slice copies nothing when n is even


def dropped_of_65536(rate):
    """How many of the 65536 values of 16 random bits a dropout `rate` drops."""
    return round(rate * 65536)


def stateless_seed(seed_generator):
    """The next seed of a Keras SeedGenerator, as the int32 pair TensorFlow's stateless ops take."""
    seed = seed_generator.next()
    return seed if seed.dtype == tf.int32 else tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)


def fast_dropout_applies(dropout, training):
    """Whether a Keras Dropout layer, called with `training`, would drop anything that
    `keep_mask` can draw: a rate from 1/65536 up to 1 - 1/65536, and no noise shape."""
    return bool(training) and dropout.noise_shape is None and 0 < dropped_of_65536(dropout.rate) < 65536


def fresh_keep_mask(dropout, shape):
    """A `keep_mask` of `shape` drawn from a Keras Dropout layer's rate and seed generator."""
    return keep_mask(shape, dropout.rate, stateless_seed(dropout.seed_generator))


def keep_mask_and_scale(dropout, training, shape):
    """(a `fresh_keep_mask` of `shape`, the kept elements' scale 1 / (1 - rate)) when the Dropout
    layer's `fast_dropout_applies`, else (None, 1.0)."""
    if not fast_dropout_applies(dropout, training):
        return None, 1.0
    return fresh_keep_mask(dropout, shape), 1 / (1 - dropout.rate)


def zero_dropped(dropout, inputs):
    """`inputs` with the elements a `fresh_keep_mask` drops set to zero; the rest unscaled."""
    return tf.where(fresh_keep_mask(dropout, tf.shape(inputs)), inputs, tf.zeros((), inputs.dtype))
