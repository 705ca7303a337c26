"""Domain adaptation: the masked batches, the adapted preset (Hugging Face names, checksums),
the `kerasbert adapt` job (backup, SIGTERM, resume, TensorBoard) and that neither adaptation
nor the recipe sweep ever reads the test split."""

import json
import os
import pathlib
import signal
import time

import keras
import keras_hub
import numpy as np
import pytest

from kerasbert import data
from kerasbert.adaptation import ReviewMaskedLM, hugging_face_tensors, save_adapted_preset
from kerasbert.splits import load_splits, load_streamed_splits, stream_unlabeled_texts
from kerasbert.streaming import count_rows, survey
from kerasbert.errors import KerasbertError
from kerasbert.job.adapting import adapt
from kerasbert.job.config import AdaptConfig, TrainConfig
from kerasbert.job.sweep import validation_run
from kerasbert.model import TextClassifier
from kerasbert.presets import ADAPTED_PRESET_FILE, resolve_preset, sha256_of
from tests.conftest import TFDS_DIR
from tests.test_faults import assert_one_line_error, run


def tiny_masked_lm(preset, sequence_length=64):
    return ReviewMaskedLM.from_preset(preset, sequence_length=sequence_length, precision="off", shuffle_seed=1)


def test_an_adapted_preset_loads_with_the_adapted_weights_and_the_sources_settings(tiny_hf_preset, tmp_path):
    masked_lm = tiny_masked_lm(tiny_hf_preset)
    rng = np.random.default_rng(0)
    for variable in masked_lm.backbone.weights:  # new values, so a copy of the source would not pass
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    folder = tmp_path / "adapted"
    masked_lm.save_adapted_preset(str(folder), {"steps": 7})

    loaded = keras_hub.models.BertBackbone.from_preset(resolve_preset(str(folder)))
    for adapted, read in zip(masked_lm.backbone.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(adapted), keras.ops.convert_to_numpy(read))
    record = json.loads((folder / ADAPTED_PRESET_FILE).read_text())
    assert record["steps"] == 7 and record["source"] == tiny_hf_preset
    assert record["sha256"]["model.safetensors"] == sha256_of(str(folder / "model.safetensors"))
    classifier = TextClassifier.from_preset(str(folder), num_classes=2, sequence_length=32, precision="off")
    assert classifier.feedforward_activation == "gelu"  # the source's hidden_act, carried over
    assert classifier.preprocessor.tokenizer.strip_accents  # and its uncased tokenizer's accent stripping
    with pytest.raises(KerasbertError, match="already exists"):
        masked_lm.save_adapted_preset(str(folder))


def test_the_real_minilm_written_back_is_byte_identical_to_its_checkpoint(preset_path):
    """Writing is the exact inverse of KerasHub's converter: every tensor, name and shape."""
    from safetensors.numpy import load_file

    source = os.path.join(preset_path, "model.safetensors")
    backbone = keras_hub.models.BertBackbone.from_preset(preset_path)
    written, original = hugging_face_tensors(backbone, source), load_file(source)
    assert sorted(written) == sorted(original)
    for name, value in original.items():
        assert written[name].dtype == value.dtype and np.array_equal(written[name], value), name


def test_a_changed_adapted_preset_is_refused(tiny_hf_preset, tmp_path):
    folder = tmp_path / "adapted"
    backbone = keras_hub.models.BertBackbone.from_preset(tiny_hf_preset)
    save_adapted_preset(backbone, tiny_hf_preset, str(folder))
    weights = folder / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 1  # one bit of the last weight: the size and header still check out
    weights.write_bytes(bytes(content))
    with pytest.raises(KerasbertError, match="model.safetensors is missing or changed"):
        resolve_preset(str(folder))


def test_masked_batches_hide_real_tokens_only_and_ask_for_what_they_hid(tiny_hf_preset, real_reviews):
    masked_lm = tiny_masked_lm(tiny_hf_preset)
    review = max((text for text, _ in real_reviews), key=len)
    original = masked_lm.preprocessor([review])["token_ids"][0].numpy()
    features, targets, weights = next(iter(masked_lm.masked_batches([review] * 32, batch_size=32)))
    tokens, positions = features["token_ids"].numpy(), features["mask_positions"].numpy()
    targets, weights = targets.numpy(), weights.numpy()
    tokenizer = masked_lm.preprocessor.tokenizer
    hidden = replaced = 0
    for row in range(32):
        chosen = positions[row][weights[row] > 0]
        assert len(set(chosen)) == len(chosen) and all(0 < position < 63 for position in chosen)
        np.testing.assert_array_equal(targets[row][weights[row] > 0], original[chosen])  # what was there
        restored = tokens[row].copy()
        restored[chosen] = original[chosen]
        np.testing.assert_array_equal(restored, original)  # nothing else changed
        hidden += len(chosen)
        replaced += int(np.sum(tokens[row][chosen] == tokenizer.mask_token_id))
    assert 0.12 < hidden / (32 * 62) < 0.18  # 15% of the 62 review tokens of each row
    assert 0.7 < replaced / hidden < 0.9  # 80% of them shown as [MASK]
    assert len(set(map(tuple, positions))) > 1  # each row masked afresh


def test_adapting_never_reads_the_test_split_and_neither_does_the_sweep(tiny_hf_preset, tmp_path, monkeypatch):
    read = []
    real = data.read_tfds_split

    def spy(name, data_dir, split):
        read.append(split)
        return real(name, data_dir, split)

    monkeypatch.setattr(data, "read_tfds_split", spy)
    load_splits(data_dir=str(TFDS_DIR), max_train_examples=10, max_test_examples=10)
    assert "test" in read  # the spy sees a run's final report read it

    read.clear()
    adapt(AdaptConfig(preset=tiny_hf_preset, output=str(tmp_path / "adapted"), run_dir=str(tmp_path / "adapt-run"),
                      data_dir=str(TFDS_DIR), max_texts=48, heldout_texts=16, max_seq_length=32, batch_size=8,
                      mixed_precision="off"))
    config = TrainConfig(preset=str(tmp_path / "adapted"), data_dir=str(TFDS_DIR), max_seq_length=32,
                         batch_size=8, mixed_precision="off")
    row = validation_run(config, str(tmp_path / "sweep-run"), train_examples=32, validation_examples=16)
    assert row["examples"] == {"train": 32, "validation": 16} and len(row["val_accuracy"]) == 1
    assert set(read) == {"unsupervised", "train"}, read


def test_the_texts_to_adapt_on_leave_out_validation_and_refuse_test():
    texts = data.load_unlabeled_texts(data_dir=str(TFDS_DIR), splits=("train",), validation_split=0.1, seed=42)
    splits = load_splits(data_dir=str(TFDS_DIR), validation_split=0.1, seed=42, with_test=False)
    assert sorted(texts.texts) == sorted(splits.train.texts)  # train.py's training part: its validation left out
    with pytest.raises(KerasbertError, match="would leak it into every test score"):
        data.load_unlabeled_texts(data_dir=str(TFDS_DIR), splits=("unsupervised", "test"))
    with pytest.raises(KerasbertError, match=r"has no 'unsup' split \(it has test, train, unsupervised\)"):
        data.load_unlabeled_texts(data_dir=str(TFDS_DIR), splits=("unsup",))


def test_streamed_adaptation_leaves_out_what_streamed_training_validates_on(tiny_hf_preset, tmp_path):
    streamed = stream_unlabeled_texts(data_dir=str(TFDS_DIR), splits=("train",), validation_split=0.1)
    validation = load_streamed_splits(data_dir=str(TFDS_DIR), validation_split=0.1, with_test=False).validation
    validated_on = {text for text, _ in validation.as_numpy_iterator()}
    assert not validated_on & {text for text, _ in streamed.as_numpy_iterator()}
    assert int(count_rows(streamed)) + int(count_rows(validation)) == 25_000 and len(validated_on) > 2_000
    with pytest.raises(KerasbertError, match="not on test"):
        stream_unlabeled_texts(data_dir=str(TFDS_DIR), splits=("unsupervised", "test"))

    adapt(AdaptConfig(preset=tiny_hf_preset, output=str(tmp_path / "adapted"), run_dir=str(tmp_path / "adapt-run"),
                      data_dir=str(TFDS_DIR), streaming=True, max_texts=48, heldout_texts=16, max_seq_length=32,
                      batch_size=8, mixed_precision="off"))
    record = json.loads((tmp_path / "adapted" / ADAPTED_PRESET_FILE).read_text())
    adapted_on = stream_unlabeled_texts(data_dir=str(TFDS_DIR), max_texts=48).skip(16)  # the first 16 held out
    assert record["adapted_on"].endswith("(32 texts)") and 4 <= record["steps"] <= 32, record
    assert record["steps"] == survey(adapted_on).batches_per_epoch(8)  # one epoch, batched by length
    assert 0 < record["masked_lm"]["val_loss"] < 20, record["masked_lm"]


def test_sigterm_during_adaptation_backs_up_and_the_same_command_resumes_to_a_preset(tiny_hf_preset, tmp_path):
    """Real reviews (train's, read as unlabeled text: half as many to read as the unsupervised
    split), a tiny backbone: stopped by SIGTERM after its first backup, resumed by the same command,
    with the masked-LM loss and accuracy in TensorBoard."""
    output, run_dir = tmp_path / "adapted", tmp_path / "run"
    command = ["-m", "kerasbert.job.cli", "adapt", "--preset", tiny_hf_preset, "--data-dir", str(TFDS_DIR),
               "--splits", "train", "--output", str(output), "--run-dir", str(run_dir), "--max-texts", "1600",
               "--heldout-texts", "16", "--max-seq-length", "32", "--batch-size", "8", "--backup-every-steps", "20",
               "--mixed-precision", "off"]
    process = run(*command, wait=False)
    state = run_dir / "backup" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert_one_line_error(process.returncode, err, "stopped by SIGTERM", "the same command resumes from the backup")
    stopped = json.loads(state.read_text())["global_step"]
    assert 20 <= stopped < 198 and not output.exists()

    returncode, out, err = run(*command)
    assert returncode == 0 and f"(global step {stopped})" in out, err[-3000:]
    assert (output / ADAPTED_PRESET_FILE).is_file() and not (run_dir / "backup").exists()
    assert json.loads((output / ADAPTED_PRESET_FILE).read_text())["steps"] == 198
    tags = {tag for path in pathlib.Path(run_dir, "logs").rglob("events.out.tfevents.*") for tag in event_tags(path)}
    assert {"epoch_loss", "epoch_accuracy", "batch_loss", "batch_accuracy"} <= tags, tags


def event_tags(path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return {value.tag for event in EventFileLoader(str(path)).Load() for value in event.summary.value}
