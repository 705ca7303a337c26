import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert import model
from kerasbert.config import TrainConfig
from kerasbert.errors import KerasbertError
from kerasbert.hardware import Gpu, Hardware
from kerasbert.model import (ReviewPreprocessor, attach_preprocessor, build_classifier, load_classifier,
                             save_classifier)
from kerasbert.training import compile_classifier
from tests.conftest import assert_same_predictions

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


def test_preprocessor_config_round_trips(preset_path):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=24, truncation="tail")
    clone = ReviewPreprocessor.from_config(preprocessor.get_config())
    assert (clone.sequence_length, clone.truncation) == (24, "tail")


def test_model_saves_and_reloads_with_identical_predictions(preset_path, tmp_path):
    classifier, preprocessor = build_classifier(preset_path, num_classes=3, max_seq_length=32)
    attach_preprocessor(classifier, preprocessor)
    path = str(tmp_path / "model.keras")
    save_classifier(classifier, path)
    reloaded = load_classifier(path)
    texts = np.array(["An outstanding, moving film.", "Two hours I will never get back."])
    assert_same_predictions(classifier, reloaded, texts)
    assert reloaded.predict(texts, verbose=0).shape == (2, 3)
    assert reloaded.preprocessor.get_config() == preprocessor.get_config()
    assert reloaded.get_config()["num_classes"] == 3
    assert not list(tmp_path.glob("*partial*"))


def test_bf16_model_reloads_close(preset_path, tmp_path):
    classifier, preprocessor = build_classifier(preset_path, 2, 32, mixed_precision="bf16")
    attach_preprocessor(classifier, preprocessor)
    save_classifier(classifier, str(tmp_path / "m.keras"))
    reloaded = load_classifier(str(tmp_path / "m.keras"))
    assert reloaded.dtype_policy.name == "mixed_bfloat16"
    assert_same_predictions(classifier, reloaded, np.array(["Great."]), atol=2e-2)


def test_sequence_longer_than_positions_is_refused(preset_path):
    with pytest.raises(KerasbertError, match="exceeds the model's 512 positions"):
        build_classifier(preset_path, 2, 1024)


def test_missing_or_corrupt_model_file(tmp_path):
    with pytest.raises(KerasbertError, match="does not exist"):
        load_classifier(str(tmp_path / "none.keras"))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(KerasbertError, match="cannot load model"):
        load_classifier(str(corrupt))


@pytest.mark.parametrize("machine, policy, loss_scaling", [
    (Hardware("AMD EPYC 7R13", ("avx2", "fma"), 2), "float32", False),
    (Hardware("AMD EPYC 9R14", ("avx2", "avx512_bf16"), 2), "mixed_bfloat16", False),
    (Hardware(gpus=(Gpu("Tesla T4", (7, 5)),)), "mixed_float16", True),
])
def test_auto_precision_builds_and_compiles_for_the_hardware(preset_path, monkeypatch, machine, policy, loss_scaling):
    monkeypatch.setattr(model, "detect_hardware", lambda: machine)
    classifier, _ = build_classifier(preset_path, 2, 32)
    assert classifier.dtype_policy.name == policy
    assert classifier.backbone.dtype_policy.name == policy
    compile_classifier(classifier, TrainConfig(), total_steps=10)
    assert isinstance(classifier.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaling
