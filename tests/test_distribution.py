"""Strategies, multi-worker training on loopback, and surviving a SIGKILL.

Each training here runs `train.py` in a fresh process, as users run it: a
strategy (and logical CPU devices) must be set up before TensorFlow starts.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kerasbert import files
from kerasbert.distribution import Task, cluster_task, free_loopback_ports
from kerasbert.job import cli
from kerasbert.job.config import TrainConfig
from kerasbert.job.report import read_scalars
from tests.conftest import ROOT, TINY, kill_after_backup

def step_losses(run_dir):
    steps, values = read_scalars(os.path.join(run_dir, "logs", "train"))["batch_loss"]
    return steps, values


def test_mirrored_over_two_logical_cpus_matches_the_default_strategy(tmp_path, train):
    train(tmp_path / "default", "--strategy", "default")
    output = train(tmp_path / "mirrored", "--strategy", "mirrored", "--logical-cpu-devices", "2")
    assert "on 2 replica(s) (MirroredStrategy)" in output
    default_steps, default_losses = step_losses(tmp_path / "default")
    mirrored_steps, mirrored_losses = step_losses(tmp_path / "mirrored")
    assert default_steps.tolist() == mirrored_steps.tolist() == [1, 2, 3, 4]
    # Same global batch of 8 (4 per replica), same order: equal up to float summation order.
    np.testing.assert_allclose(mirrored_losses, default_losses, rtol=2e-3)
    metrics = files.read_json(tmp_path / "mirrored" / "metrics.json")
    assert metrics["replicas"] == 2 and metrics["strategy"] == "MirroredStrategy"


def test_two_workers_on_loopback_train_and_only_the_chief_keeps_outputs(tmp_path, train):
    ports = free_loopback_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run = tmp_path / "cluster-run"
    workers = [train(run, "--strategy", "multi-worker", wait=False,
                     env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
               for index in range(2)]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-4000:]
    assert "on 2 replica(s) (MultiWorkerStrategy)" in outputs[0]
    assert "worker-1 done; the chief writes the outputs" in outputs[1]
    metrics = files.read_json(run / "metrics.json")
    assert metrics["workers"] == 2 and metrics["replicas"] == 2 and metrics["optimizer_steps"] == 4
    assert (run / "model.keras").is_file() and (run / "logs" / "train").is_dir()
    assert os.listdir(tmp_path) == ["cluster-run"], "the worker's temporary directory is removed, no latest added"


PLAIN_MULTI_WORKER_FIT = """
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
data = tf.data.Dataset.from_tensor_slices((np.ones((16, 4), "float32"), np.ones((16, 2), "float32"))).batch(8)
model.fit(data, epochs=1, verbose=0)
print("FIT-OK")
"""


def test_plain_multi_worker_strategy_still_fails_in_keras_fit():
    """The upstream bug MultiWorkerStrategy works around: when this test fails, Keras or TF fixed it."""
    ports = free_loopback_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = [subprocess.Popen([sys.executable, "-c", PLAIN_MULTI_WORKER_FIT], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "TF_CONFIG": json.dumps(
                                    {"cluster": cluster, "task": {"type": "worker", "index": index}})})
               for index in range(2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert all("FIT-OK" not in output for output in outputs), \
        "plain MultiWorkerMirroredStrategy now trains: retire kerasbert.distribution.MultiWorkerStrategy"
    known_failures = ("Attempt to convert a value (PerReplica",  # reducing the first batch
                      "Invalid reduction dimension 0 for input with 0 dimensions")  # reducing the step logs
    assert any(failure in output for failure in known_failures for output in outputs), outputs[0][-3000:]


def test_a_killed_run_resumes_mid_epoch_and_ends_like_an_uninterrupted_one(tmp_path, train, tiny_backbone):
    options = ["--epochs", "2", "--backup-every-steps", "2", "--max-train-examples", "200"]  # 20 steps per epoch
    train(tmp_path / "uninterrupted", *options)

    run = tmp_path / "killed"
    state = kill_after_backup([train(run, *options, wait=False)], run, step=2)
    assert state["epoch"] == 0 and 0 < state["step_in_epoch"] < 20, f"kill landed outside epoch 1: {state}"
    assert not (run / "metrics.json").exists()

    # The same run with another option is refused, naming it, and nothing is touched.
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    refused = subprocess.run([sys.executable, "train.py", "--output-dir", str(run), *TINY, *tiny_backbone, *options,
                              "--learning-rate", "1e-4", "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "config differs in --learning-rate (run: 5e-05, now: 0.0001)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before

    output = train(run, *options)  # the same command again
    assert f"epoch 1, step {state['step_in_epoch']} of 20 (global step {state['global_step']})" in output
    resumed = files.read_json(run / "metrics.json")
    uninterrupted = files.read_json(tmp_path / "uninterrupted" / "metrics.json")
    assert resumed["optimizer_steps"] == uninterrupted["optimizer_steps"] == 40
    assert not (run / "backup").exists(), "the backup is deleted once the run is complete"
    assert resumed["test"]["accuracy"] == pytest.approx(uninterrupted["test"]["accuracy"])
    assert resumed["test"]["loss"] == pytest.approx(uninterrupted["test"]["loss"], rel=1e-3)
    assert resumed["validation"]["loss"] == pytest.approx(uninterrupted["validation"]["loss"], rel=1e-3)


def test_resume_refuses_a_finished_run(finished_run, capsys):
    config, _ = finished_run
    before = sorted(os.listdir(config.output_dir))
    assert cli.main(["train", "--output-dir", config.output_dir, "--resume", "--data-dir", config.data_dir]) == 2
    assert "has no backup to resume from" in capsys.readouterr().err
    assert sorted(os.listdir(config.output_dir)) == before


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG task index 2 is out of range: job 'worker' has 2 task(s)"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
     "TF_CONFIG task type 'chief' is not a job of the cluster"),
    ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}',
     "must list host:port addresses"),
])
def test_bad_tf_config_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert cli.main(["train", "--output-dir", str(tmp_path / "run"), "--strategy", "multi-worker"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_cluster_needs_the_multi_worker_strategy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert cli.main(["train", "--output-dir", str(tmp_path / "run"), "--strategy", "mirrored"]) == 2
    assert "use --strategy multi-worker" in capsys.readouterr().err


def test_tpu_strategy_without_a_tpu_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert cli.main(["train", "--output-dir", str(tmp_path / "run"), "--strategy", "tpu"]) == 2
    assert "--strategy tpu: no TPU is attached" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cluster_task_finds_the_chief():
    def task(cluster, task_type, index):
        return cluster_task({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})})

    workers = {"worker": ["a:1", "b:2"]}
    assert task(workers, "worker", 0) == Task("worker", 0, 2, False) and task(workers, "worker", 0).is_chief
    assert not task(workers, "worker", 1).is_chief
    with_chief = {"chief": ["c:0"], "worker": ["a:1"]}
    assert task(with_chief, "chief", 0).is_chief and not task(with_chief, "worker", 0).is_chief
    assert cluster_task({}) == Task() and Task().is_chief


def test_config_differences_ignore_restart_options():
    config = TrainConfig(max_seq_length=64)
    recorded = {**config.to_dict(), "resume": True, "overwrite": True, "output_dir": "elsewhere"}
    assert config.differences_from(recorded) == []
    assert config.differences_from({**recorded, "epochs": 3, "seed": 1}) == ["epochs", "seed"]


def test_the_default_command_killed_and_run_again_resumes_its_own_run(tmp_path, tiny_backbone):
    """`python train.py` without --output-dir: the rerun finds its interrupted run under runs/."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *TINY, *tiny_backbone, "--backup-every-steps", "1"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if any((run / "backup" / "state.json").exists() for run in runs.glob("*")):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    (interrupted,) = runs.iterdir()
    assert (interrupted / "backup" / "state.json").exists() and not (interrupted / "metrics.json").exists()

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert f"resuming the interrupted run {os.path.join('runs', interrupted.name)}" in rerun.stdout
    assert sorted(os.listdir(runs)) == sorted([interrupted.name, "latest"]), "no second run started"
    assert os.path.samefile(os.path.realpath(runs / "latest" / "metrics.json"), interrupted / "metrics.json")
    assert (interrupted / "metrics.json").exists() and not (interrupted / "backup").exists()
