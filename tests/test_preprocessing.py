import json
import subprocess
import sys

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.preprocessing import ReviewPreprocessor, pack

WORDS = "one two three four five six seven eight nine ten"


def kept_words(preprocessor, text):
    token_ids = preprocessor([text])["token_ids"][0].numpy()
    return [preprocessor.tokenizer.id_to_token(int(i)) for i in token_ids if i != 0]


@pytest.mark.parametrize("truncation, expected", [
    ("head", ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"]),
    ("tail", ["[CLS]", "five", "six", "seven", "eight", "nine", "ten", "[SEP]"]),
    ("head+tail", ["[CLS]", "one", "two", "three", "four", "nine", "ten", "[SEP]"]),
])
def test_truncation_keeps_the_chosen_tokens(preset_path, truncation, expected):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=8, truncation=truncation)
    assert kept_words(preprocessor, WORDS) == expected
    assert kept_words(preprocessor, "one two") == ["[CLS]", "one", "two", "[SEP]"]


def test_head_tail_keeps_128_head_tokens_at_long_lengths(preset_path):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=256, truncation="head+tail")
    vocabulary = preprocessor.tokenizer.get_vocabulary()
    words = [word for word in vocabulary[2000:3000] if word.isalpha() and word.islower()][:400]
    token_ids = preprocessor([" ".join(words)])["token_ids"][0].numpy().tolist()
    expected = [preprocessor.tokenizer.token_to_id(word) for word in words]
    assert token_ids[1:129] == expected[:128]
    assert token_ids[129:255] == expected[-126:]


def test_preprocessor_gives_int32_tensors_eagerly_and_for_one_string(preset_path):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=16)
    batch = preprocessor(["A fine film.", "Dull."])
    assert {name: value.dtype for name, value in batch.items()} == {
        "token_ids": tf.int32, "padding_mask": tf.int32, "segment_ids": tf.int32}
    single = preprocessor("A fine film.")
    np.testing.assert_array_equal(single["token_ids"], batch["token_ids"][0])
    features, labels = preprocessor(tf.constant(["Dull."]), tf.constant([0]))
    assert labels.numpy().tolist() == [0]


def test_packing_matches_keras_hubs_packer_for_one_segment():
    rows = [list(range(5, 5 + length)) for length in (0, 1, 3, 6, 2)]  # 6 = sequence_length - 2
    spec = tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1, row_splits_dtype=tf.int64)
    ours = tf.function(lambda ids: pack(ids, 8, 101, 102, 0), input_signature=[spec])
    packer = keras_hub.layers.MultiSegmentPacker(sequence_length=8, start_value=101, end_value=102, pad_value=0)
    theirs = tf.function(lambda ids: packer(ids)[0], input_signature=[spec])
    token_ids = tf.ragged.constant(rows, dtype=tf.int32, row_splits_dtype=tf.int64)
    np.testing.assert_array_equal(ours(token_ids), theirs(token_ids))
    assert ours(token_ids).numpy()[3].tolist() == [101, 5, 6, 7, 8, 9, 10, 102]


@pytest.fixture
def tiny_vocabulary(tmp_path):
    """A WordPiece vocabulary file: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, good 5, film 6, bad 7."""
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nfilm\nbad\n")
    return str(path)


PREPROCESS_IN_A_FRESH_PROCESS = """
import sys
from kerasbert.preprocessing import preprocessor_from_vocabulary
preprocessor = preprocessor_from_vocabulary(sys.argv[1], sequence_length=8, truncation="head+tail")
print(preprocessor(["good film good film good film good film good", "bad"])["token_ids"].numpy().tolist())
"""


def test_preprocessing_logs_no_onednn_int64_error_line(tiny_vocabulary):
    # TensorFlow logs that line once per process, at the first int64 transpose: hence a fresh one.
    result = subprocess.run([sys.executable, "-c", PREPROCESS_IN_A_FRESH_PROCESS, tiny_vocabulary],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[2, 5, 6, 5, 6, 6, 5, 3], [2, 7, 3, 0, 0, 0, 0, 0]]
    assert "DT_INT64" not in result.stderr


def test_preprocessor_config_round_trips(preset_path):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=24, truncation="tail")
    clone = ReviewPreprocessor.from_config(preprocessor.get_config())
    assert (clone.sequence_length, clone.truncation) == (24, "tail")


@pytest.mark.parametrize("options, message", [({"sequence_length": 2}, "sequence_length must leave room"),
                                              ({"truncation": "middle"}, "truncation must be")])
def test_preprocessor_refuses_what_it_cannot_pack(tiny_vocabulary, options, message):
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=tiny_vocabulary)
    with pytest.raises(ValueError, match=message):
        ReviewPreprocessor(tokenizer, **{"sequence_length": 8, "truncation": "head", **options})
