"""Run directories: what --overwrite may empty, the lock, `runs/latest`, and which
interrupted run the default command picks up."""

import os
import shutil

import pytest

from kerasbert.distribution import Task
from kerasbert.errors import KerasbertError
from kerasbert.job import rundir
from kerasbert.job.config import TrainConfig
from kerasbert.job.rundir import RunDirectory

SINGLE = Task()


def choose_run_directory(config, task):
    return os.fspath(rundir.choose_run_directory(config, task))


def test_overwrite_empties_only_what_a_run_writes(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    for name in ("config.json", "metrics.json", ".tmp-abc.json", rundir.LOCK_FILE):
        (run / name).write_text("{}")
    RunDirectory(run).check(overwrite=True)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(KerasbertError, match=r"replaces only a kerasbert run directory, and .* also holds notes.txt"):
        RunDirectory(run).check(overwrite=True)
    with pytest.raises(KerasbertError, match="only a kerasbert run directory"):
        RunDirectory(run).create(overwrite=True)
    assert (run / "notes.txt").read_text() == "mine" and (run / "config.json").exists()


def test_a_locked_run_directory_refuses_a_second_writer(tmp_path):
    run = str(tmp_path / "run")
    with RunDirectory(run).locked():
        assert RunDirectory(run).in_use()
        with pytest.raises(KerasbertError, match="another kerasbert process is writing to"):
            with RunDirectory(run).locked():
                pass
    assert not RunDirectory(run).in_use()
    assert RunDirectory(run).contents() == [], "the lock file is not content: the directory still counts as empty"
    RunDirectory(run).check(overwrite=False)
    fresh = tmp_path / "refused"
    with pytest.raises(KerasbertError, match="bad preset"):
        with RunDirectory(fresh).locked():
            raise KerasbertError("bad preset")
    assert not fresh.exists(), "a run refused inside the lock leaves no directory behind"


def test_latest_is_made_only_under_the_default_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a" / "logs" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "config.json").write_text("{}")
    assert RunDirectory(os.path.join("runs", "a")).point_latest_here() == os.path.abspath(os.path.join("runs", "latest"))
    assert os.listdir(os.path.join("runs", "latest")) == ["config.json"]  # no logs: TensorBoard follows links
    assert os.path.samefile(rundir.resolved(os.path.join("runs", "latest")), os.path.join("runs", "a"))
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "metrics.json").write_text("{}")
    (tmp_path / "runs" / "b" / "config.json").write_text("{}")
    RunDirectory(os.path.join("runs", "b")).point_latest_here()  # replaced whole
    assert sorted(os.listdir(os.path.join("runs", "latest"))) == ["config.json", "metrics.json"]
    assert sorted(os.listdir("runs")) == ["a", "b", "latest"], "no staging folder left behind"
    RunDirectory(os.path.join("runs", "a")).point_latest_here()
    (tmp_path / "elsewhere" / "b").mkdir(parents=True)
    assert RunDirectory(tmp_path / "elsewhere" / "b").point_latest_here() is None
    assert os.listdir(tmp_path / "elsewhere") == ["b"], "nothing added beside an --output-dir of the user's"
    shutil.rmtree(os.path.join("runs", "latest"))
    (tmp_path / "runs" / "latest").mkdir()
    assert RunDirectory(os.path.join("runs", "a")).point_latest_here() is None, "a real folder named latest is left alone"


def interrupted_run(root, name, config):
    run = root / name
    (run / "backup").mkdir(parents=True)
    config.save(str(run / "config.json"))
    (run / "backup" / "state.json").write_text("{}")
    return run


def test_the_default_command_resumes_its_own_interrupted_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(epochs=2)
    other = interrupted_run(tmp_path / "runs", "20260101-000000", TrainConfig(epochs=3))
    same = interrupted_run(tmp_path / "runs", "20250101-000000", config)
    os.utime(same / "backup" / "state.json", (1, 1))  # older than the other: matching options decide
    assert choose_run_directory(config, SINGLE) == os.path.join("runs", same.name)
    said = capsys.readouterr().out
    assert f"{os.path.join('runs', other.name)} holds an interrupted run with other options (epochs)" in said
    assert f"resuming the interrupted run {os.path.join('runs', same.name)}" in said

    existing = {os.path.join("runs", same.name), os.path.join("runs", other.name)}
    with RunDirectory(same).locked():  # being written by a live process: not picked up
        assert choose_run_directory(config, SINGLE) not in existing
    assert choose_run_directory(TrainConfig(epochs=5), SINGLE) not in existing
    assert choose_run_directory(TrainConfig(epochs=2, overwrite=True), SINGLE) not in existing
    with pytest.raises(KerasbertError, match=f"cannot resume runs.{other.name}: its config differs in --epochs"):
        choose_run_directory(TrainConfig(epochs=5, resume=True), SINGLE)  # --resume: the newest, whatever its options


def test_a_run_killed_before_its_first_backup_is_started_over_by_the_same_command(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".tmp-x1config.json").write_text('{"half": ')
    assert RunDirectory(run).left_before_first_backup(TrainConfig())  # killed before config.json was published
    TrainConfig(epochs=2).save(str(run / "config.json"))
    (run / "backup").mkdir()
    (run / "backup" / "step-00000002.weights.h5").write_bytes(b"weights, state.json not yet written")
    assert RunDirectory(run).left_before_first_backup(TrainConfig(epochs=2))
    assert not RunDirectory(run).left_before_first_backup(TrainConfig(epochs=3)), "other options: refused as before"
    (run / "notes.txt").write_text("mine")
    assert not RunDirectory(run).left_before_first_backup(TrainConfig(epochs=2))
    os.remove(run / "notes.txt")
    (run / "metrics.json").write_text("{}")
    assert not RunDirectory(run).left_before_first_backup(TrainConfig(epochs=2)), "a finished run is kept"


def test_a_run_directory_reads_its_config_and_metrics_with_one_line_errors(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert run.recorded_config() is None and os.path.join(run, "x") == str(tmp_path / "run" / "x")
    with pytest.raises(KerasbertError, match=r"cannot resume .*run: it is not a kerasbert run directory \(no config"):
        run.check_same_config(TrainConfig())
    with pytest.raises(KerasbertError, match=r"run directory .*run does not exist"):
        run.finished_run("export")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("[1, 2]")
    with pytest.raises(KerasbertError, match=r"cannot export .*run: .*config.json is unreadable"):
        run.finished_run("export")
    TrainConfig(epochs=2).save(run.config_file)
    assert run.recorded_config()["epochs"] == 2
    with pytest.raises(KerasbertError, match="it has no test metrics .metrics.json is missing: training did not"):
        run.finished_run("report on")
    (tmp_path / "run" / "metrics.json").write_text('{"test": {"accuracy": 0.5}}')
    assert run.finished_run("export")[1] == {"test": {"accuracy": 0.5}}


def test_a_backup_keeps_the_one_before_until_the_next_is_written(tmp_path):
    import keras

    from kerasbert.job.resume import Backup, RunState

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    backup = Backup(str(tmp_path / "backup"))
    for step in (2, 4, 6):
        model.optimizer.iterations.assign(step)
        backup.save(model, RunState(global_step=step))
    assert backup.held_steps() == [6, 4]
    assert sorted(path.name for path in (tmp_path / "backup").iterdir()) == [
        "previous-state.json", "state.json", "step-00000004.weights.h5", "step-00000006.weights.h5"]
    assert backup.restore(model, 4).global_step == 4 and int(model.optimizer.iterations.numpy()) == 4
    (tmp_path / "backup" / "step-00000006.weights.h5").unlink()  # killed while writing it
    assert backup.held_steps() == [4]
