import json
import os
import subprocess
import sys

import pytest

from kerasbert.errors import KerasbertError
from kerasbert.job import cli
from kerasbert.job.arguments import build_argument_parser, config_from_args
from kerasbert.job.config import TrainConfig
from kerasbert.job.options import fields
from tests.conftest import ROOT


def test_help_lists_every_option_with_its_default():
    text = " ".join(build_argument_parser().format_help().split())
    for name, field in fields(TrainConfig).items():
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


def test_the_error_line_stays_last_when_the_runtime_writes_on_the_way_out():
    # The runtime's own teardown (here an atexit write to file descriptor 2, as gRPC's threads write
    # when a multi-worker peer has left) comes after the error line unless the process shuts stderr.
    script = ("import atexit, os; from kerasbert.job import cli; "
              "atexit.register(lambda: os.write(2, b'E0000 peer left: Connection refused\\n')); "
              "cli.exit_process(['fly'])")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown command 'fly'"), result.stderr
    assert "Connection refused" not in result.stderr


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


def test_configs_check_themselves_and_options_are_not_abbreviated():
    with pytest.raises(KerasbertError, match="--batch-size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(KerasbertError, match="unrecognized arguments: --max-seq 48 .`train.py --help` lists"):
        config_from_args(["--max-seq", "48"])


@pytest.mark.parametrize("arguments, message", [
    (["--clip-norm", "nan"], "--clip-norm must be a finite number, got nan"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    (["--warmup-ratio=-inf"], "--warmup-ratio must be a finite number"),
    (["--seed", "-1"], "--seed must be in [0, 2**31), got -1"),
    (["--seed", str(2**31)], "--seed must be in [0, 2**31)"),
    (["--layer-decay", "0"], "--layer-decay must be in (0, 1], got 0.0"),
])
def test_options_that_make_no_sense_are_refused_with_one_line(arguments, message, capsys):
    assert cli.main(["train", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_replayed_config_of_the_wrong_types_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"epochs": "2"}))
    assert cli.main(["train", "--config", str(tmp_path / "config.json")]) == 2
    assert "--epochs must be int, got '2'" in capsys.readouterr().err
    assert TrainConfig.from_dict({"clip_norm": 1}).clip_norm == 1, "an int where a float goes is fine"


def test_a_batch_that_does_not_divide_over_the_replicas_is_refused_before_anything_is_written(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--strategy", "mirrored",
                             "--logical-cpu-devices", "2", "--batch-size", "3", "--output-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: --batch-size 3 does not divide over 2 replicas (use a multiple of 2)" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["..", ".", "../elsewhere", "a/b", "12", "", ".hidden", "name with space"])
def test_export_model_names_stay_inside_the_export_root(name, capsys):
    assert cli.main(["export", "--run", "runs/none", "--model-name", name]) == 2
    assert "--model-name must be a plain folder name" in capsys.readouterr().err
