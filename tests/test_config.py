import json
import os
import subprocess
import sys

import pytest

from kerasbert import cli
from kerasbert.config import TrainConfig, build_argument_parser, config_from_args, fields
from kerasbert.errors import KerasbertError
from tests.conftest import ROOT


def test_help_lists_every_option_with_its_default():
    text = " ".join(build_argument_parser().format_help().split())
    for name, field in fields().items():
        assert f"--{name.replace('_', '-')}" in text
    assert "(default: 256)" in text and "(default: all_minilm_l6_v2_offline)" in text


def test_train_py_help_lists_the_options_and_starts_nothing(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "--max-seq-length" in result.stdout and "--quick" in result.stdout
    assert not os.listdir(tmp_path), "--help must not create a run directory"


def test_quick_profile_fills_only_options_not_given():
    config = config_from_args(["--quick", "--max-seq-length", "48"])
    assert config.max_seq_length == 48
    assert config.max_train_examples == TrainConfig.QUICK_PROFILE["max_train_examples"]
    assert config.max_test_examples == TrainConfig.QUICK_PROFILE["max_test_examples"]


def test_config_round_trips_through_json(tmp_path):
    config = TrainConfig(epochs=3, learning_rate=3e-5, truncation="tail")
    config.save(str(tmp_path / "config.json"))
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == config


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--validation-split", "1.5"], "--validation-split must be in [0, 1), got 1.5"),
    (["--learning-rate", "-1"], "--learning-rate must be positive"),
    (["--max-seq-length", "4"], "--max-seq-length must be at least 8"),
    (["--train-file", "a.csv"], "--train-file and --test-file go together"),
])
def test_invalid_numbers_are_one_line_errors(argv, message, capsys):
    assert cli.main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {err.strip()[7:]}" and message in err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_option_exits_non_zero_without_traceback():
    result = subprocess.run([sys.executable, "train.py", "--batch-size", "zero"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid int value: 'zero'" in result.stderr and "Traceback" not in result.stderr


def test_unknown_command(capsys):
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_a_recorded_config_replays_with_explicit_options_winning(tmp_path, capsys):
    recorded = TrainConfig(epochs=3, learning_rate=3e-5, truncation="tail", output_dir="runs/old", overwrite=True)
    recorded.save(str(tmp_path / "config.json"))
    replayed = config_from_args(["--config", str(tmp_path / "config.json"), "--epochs", "2"])
    assert (replayed.epochs, replayed.learning_rate, replayed.truncation) == (2, 3e-5, "tail")
    assert (replayed.output_dir, replayed.overwrite) == ("", False), "where to write is the new attempt's choice"
    (tmp_path / "broken.json").write_text("{not json")
    assert cli.main(["train", "--config", str(tmp_path / "broken.json")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    (tmp_path / "stale.json").write_text(json.dumps({"epochs": 1, "no_such_option": 3}))
    assert cli.main(["train", "--config", str(tmp_path / "stale.json")]) == 2
    assert "unknown config fields: no_such_option" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_configs_check_themselves_and_options_are_not_abbreviated(capsys):
    with pytest.raises(KerasbertError, match="--batch-size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(SystemExit):
        config_from_args(["--max-seq", "48"])
    assert "unrecognized arguments: --max-seq" in capsys.readouterr().err
