"""Texts to BERT inputs: `ReviewPreprocessor` is KerasHub's
`BertTextClassifierPreprocessor` with a choice of which tokens of a long review
survive truncation, an int32 padding mask (`tf.distribute` cannot split bool
batches across replicas) and dense packing.

Example:

>>> from kerasbert.presets import resolve_preset
>>> preprocessor = ReviewPreprocessor.from_preset(
...     resolve_preset("all_minilm_l6_v2_offline"), sequence_length=8, truncation="head+tail")
>>> [preprocessor.tokenizer.id_to_token(int(i)) for i in preprocessor(["one two three four five six seven"])["token_ids"][0]]
['[CLS]', 'one', 'two', 'three', 'four', 'six', 'seven', '[SEP]']
"""

import dataclasses

import keras
import keras_hub
import tensorflow as tf

from kerasbert.choices import TRUNCATIONS
from kerasbert.presets import hugging_face_strips_accents

HEAD_TOKENS = 128  # tokens kept from the start of a review by head+tail truncation


@keras.saving.register_keras_serializable(package="kerasbert")
class ReviewPreprocessor(keras_hub.models.BertTextClassifierPreprocessor):
    """Tokenize, truncate and pack single texts for BERT.

    Args:
        tokenizer: a `keras_hub.models.BertTokenizer`.
        sequence_length: packed length, [CLS] and [SEP] included.
        truncation: which tokens of a longer text to keep: "head" (the first),
            "tail" (the last) or "head+tail" (the first 128, or half the
            sequence length if smaller, and the last ones).

    Example:

    >>> from kerasbert.presets import resolve_preset
    >>> preprocessor = ReviewPreprocessor.from_preset(
    ...     resolve_preset("all_minilm_l6_v2_offline"), sequence_length=8, truncation="head+tail")
    >>> preprocessor(["one two three four five six seven eight nine"])["padding_mask"].dtype
    tf.int32
    """

    def __init__(self, tokenizer, sequence_length=512, truncation="head", **kwargs):
        super().__init__(tokenizer, sequence_length=sequence_length, **kwargs)
        if sequence_length < 3:
            raise ValueError(f"sequence_length must leave room for [CLS], [SEP] and a token, got {sequence_length}")
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be head, tail or head+tail, got {truncation!r}")
        self.truncation = truncation

    @classmethod
    def from_preset(cls, preset, **kwargs):
        preprocessor = super().from_preset(preset, **kwargs)
        if hugging_face_strips_accents(preset):
            preprocessor.tokenizer.strip_accents = True
        return preprocessor

    def call(self, x, y=None, sample_weight=None):
        # A tensor, not a Python list: a traced function retraces for every new list of strings.
        x = tf.convert_to_tensor(x, dtype=tf.string)
        features = self.tokenize_and_pack(tf.reshape(x, [-1]))
        if x.shape.rank == 0:
            features = {name: value[0] for name, value in features.items()}
        return keras.utils.pack_x_y_sample_weight(features, y, sample_weight)

    # Always a traced function: called eagerly, KerasHub tokenizers take a
    # pure-Python path, and training, export and serving all run the
    # TensorFlow path, so eager calls must run that same path too.
    @tf.function(reduce_retracing=True)
    def tokenize_and_pack(self, x, sequence_length=None):
        """A batch of strings ([batch]) -> packed int32 token_ids, padding_mask, segment_ids, of
        `sequence_length` tokens (default: the preprocessor's), truncated as the preprocessor does."""
        if not self.built:  # also when called other than through __call__
            self.build(None)
        tokenizer = self.tokenizer
        sequence_length = sequence_length or self.sequence_length
        token_ids = truncate(tokenizer(x), sequence_length - 2, self.head_tokens(sequence_length))
        token_ids = pack(token_ids, sequence_length, tokenizer.start_token_id,
                         tokenizer.end_token_id, tokenizer.pad_token_id)
        return {
            "token_ids": token_ids,
            "padding_mask": tf.cast(token_ids != tokenizer.pad_token_id, tf.int32),
            "segment_ids": tf.zeros_like(token_ids),
        }

    def head_tokens(self, sequence_length=None):
        sequence_length = sequence_length or self.sequence_length
        budget = sequence_length - 2
        return {"head": budget, "tail": 0, "head+tail": min(HEAD_TOKENS, sequence_length // 2)}[self.truncation]

    def get_config(self):
        return {**super().get_config(), "truncation": self.truncation}


def preprocessor_from_vocabulary(path, sequence_length, truncation, lowercase=True, strip_accents=False):
    """A `ReviewPreprocessor` from a WordPiece vocabulary file (one token a line)."""
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=path, lowercase=lowercase, strip_accents=strip_accents)
    return ReviewPreprocessor(tokenizer, sequence_length=sequence_length, truncation=truncation)


def truncate(token_ids, budget, head):
    """Keep the first `head` and the last `budget - head` tokens of longer rows."""
    lengths = tf.gather(token_ids.row_lengths(), token_ids.value_rowids())
    positions = tf.ragged.range(token_ids.row_lengths()).flat_values
    keep = (positions < head) | (positions >= lengths - (budget - head))
    return tf.ragged.boolean_mask(token_ids, token_ids.with_flat_values(keep))


def pack(token_ids, sequence_length, start_id, end_id, pad_id):
    """`start_id`, a row's tokens, `end_id`, then `pad_id` up to `sequence_length`: what
    KerasHub's `MultiSegmentPacker` gives for one segment that fits. Computed dense,
    because the packer's ragged concatenation transposes int64 row indices, which makes
    oneDNN log an ERROR line ("supports DT_INT64 only on platforms with AVX-512") in
    every run."""
    body = token_ids.to_tensor(default_value=pad_id, shape=[None, sequence_length - 2])
    padded = tf.pad(body, [[0, 0], [1, 1]], constant_values=pad_id)
    positions = tf.range(sequence_length, dtype=token_ids.row_splits.dtype)[None, :]
    ends = token_ids.row_lengths()[:, None] + 1
    start = tf.cast(start_id, padded.dtype)
    end = tf.cast(end_id, padded.dtype)
    return tf.where(positions == 0, start, tf.where(positions == ends, end, padded))


@dataclasses.dataclass(frozen=True)
class LengthWarmup:
    """Sequence-length warm-up (Li et al. 2022): the run's first `steps` training steps see
    their reviews tokenized to `length` tokens (the same truncation, shorter), the rest at
    the preprocessor's `sequence_length`. A step of 128 tokens costs about half of one of
    256, and the model still ends its training on whole reviews. `steps_per_epoch` places
    an epoch's batches on the run's count of steps.

    >>> warmup = LengthWarmup.of_run(length=128, fraction=0.5, epochs=2, steps_per_epoch=100)
    >>> warmup.steps, bool(warmup.is_short(epoch=0, step=99)), bool(warmup.is_short(epoch=1, step=0))
    (100, True, False)
    """

    length: int
    steps: int
    steps_per_epoch: int

    @classmethod
    def of_run(cls, length, fraction, epochs, steps_per_epoch):
        """The warm-up over the first `fraction` of `epochs` x `steps_per_epoch` steps."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"the length warm-up's fraction of the steps must be in [0, 1], got {fraction}")
        return cls(length, round(fraction * epochs * steps_per_epoch), steps_per_epoch)

    def is_short(self, epoch, step):
        """Whether step `step` of epoch `epoch` (both counted from 0) is a short one."""
        return epoch * self.steps_per_epoch + step < self.steps
