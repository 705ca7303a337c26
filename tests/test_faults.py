"""When the machine fails, not the input: a full disk (a real size-limited tmpfs, and a writer
that fails with ENOSPC), SIGTERM (a preemption notice), a worker that never comes and one that
is lost. Each ends with exit status 2 and a last line `error: ...` that says what to do, with no
traceback, and the same command then goes on."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from kerasbert import disk, files
from kerasbert.distribution import free_loopback_ports
from kerasbert.errors import KerasbertError
from kerasbert.job import cli, faults
from tests.conftest import ROOT, TFDS_DIR

TINY = ["--data-dir", str(TFDS_DIR), "--max-train-examples", "40", "--validation-split", "0.2",
        "--max-test-examples", "16", "--max-seq-length", "32", "--batch-size", "8", "--eval-batch-size", "16",
        "--mixed-precision", "off", "--backup-every-steps", "1"]
# With the tiny backbone, long enough to be stopped in the middle: 135 steps, a backup every 4.
LONGER = [*TINY[:2], "--max-train-examples", "1200", "--max-seq-length", "64", "--validation-split", "0.1",
          "--max-test-examples", "16", "--batch-size", "8", "--mixed-precision", "off", "--backup-every-steps", "4"]


@pytest.fixture
def small_filesystem(tmp_path):
    """`mount(megabytes)`: a tmpfs of that size (needs root, as CI and these machines have), unmounted after."""
    mounted = []

    def mount(megabytes):
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.fail(f"mounting a {megabytes} MB tmpfs needs root: {result.stderr.strip()}", pytrace=False)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def run(*arguments, cwd=ROOT, env=None, wait=True):
    process = subprocess.Popen([sys.executable, *arguments], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})
    if not wait:
        return process
    out, err = process.communicate(timeout=900)
    return process.returncode, out, err


def assert_one_line_error(returncode, err, *phrases):
    assert returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err, err[-3000:]
    for phrase in phrases:
        assert phrase in last, last
    return last


# --- a full disk -----------------------------------------------------------------------------


def test_a_write_that_fails_with_enospc_names_the_target_and_keeps_its_old_contents(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}\n')
    with pytest.raises(disk.OutputFailure, match=f"no space left on device while writing {target}: free space"):
        with files.written_atomically(str(target)) as temporary:
            with open(temporary, "w") as file:
                file.write("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), temporary)
    assert target.read_text() == '{"old": true}\n' and os.listdir(tmp_path) == ["metrics.json"]
    # TensorFlow's and h5py's errors carry the system's words in their message.
    assert "read-only file system" in str(disk.output_failure(RuntimeError("... Read-only file system [Op:SaveV2]")))
    assert disk.output_failure(OSError(errno.ENOENT, "No such file or directory")) is None


def test_training_that_cannot_fit_is_refused_before_the_first_step_then_goes_on(tmp_path, small_filesystem):
    small = small_filesystem(40)  # the real MiniLM: 87 MiB of weights
    returncode, out, err = run("train.py", *TINY, "--output-dir", str(small / "run"))
    last = assert_one_line_error(returncode, err, "training (", f"in {small / 'run'}, which has", "MiB free")
    needed, free = (float(number.replace(",", "")) for number in
                    re.search(r"needs about ([\d,]+) MiB .* which has ([\d,]+) MiB free", last).groups())
    assert needed > 500 > free and not (small / "run" / "backup").exists(), "refused before the first step"
    # The same command, where there is room, starts the refused run over and finishes it.
    subprocess.run(["umount", "-l", str(small)], check=True)
    returncode, out, err = run("train.py", *TINY, "--output-dir", str(small / "run"))
    assert returncode == 0, err[-3000:]


def test_an_adaptation_that_cannot_fit_is_refused_before_the_first_step(tmp_path, small_filesystem, tiny_hf_preset,
                                                                       capsys):
    small = small_filesystem(40)
    adapt = ["adapt", "--preset", tiny_hf_preset, "--data-dir", str(TFDS_DIR), "--splits", "train", "--max-texts",
             "48", "--heldout-texts", "16", "--max-seq-length", "32", "--batch-size", "8", "--mixed-precision", "off"]
    assert cli.main([*adapt, "--run-dir", str(small / "run"), "--output", str(small / "adapted")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: adapting (") and "in backups, and the adapted preset) needs about" in last, last
    # The backups have room, the preset's folder (another file system) has not.
    assert cli.main([*adapt, "--run-dir", str(tmp_path / "run"), "--output", str(small / "adapted")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: the adapted preset (") and f"in {small}, which has" in last, last
    assert not (small / "adapted").exists() and not (tmp_path / "run" / "backup").exists()


def test_a_disk_filled_during_training_ends_in_one_line_and_the_same_command_resumes(tmp_path, small_filesystem,
                                                                                     tiny_backbone):
    room = small_filesystem(128)  # room for the tiny run (the check asks for 77 MiB)
    command = ["train.py", *TINY, *tiny_backbone, "--backup-every-steps", "2", "--output-dir", str(room / "run")]
    process = run(*command, wait=False)
    state = room / "run" / "backup" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGSTOP)  # between two backups: the run is training, not writing
    filler = room / "someone-else.bin"
    with open(filler, "wb") as file:  # another program takes the space the next backup needs
        os.posix_fallocate(file.fileno(), 0, disk.free_bytes(str(room)) - (2 << 20))  # a backup takes 6 MiB
    process.send_signal(signal.SIGCONT)
    out, err = process.communicate(timeout=300)
    last = assert_one_line_error(process.returncode, err, "free some space there",
                                 "(the same command resumes from the backup at step 2)")
    assert json.loads(state.read_text())["global_step"] == 2, "the last backup is whole"
    filler.unlink()
    returncode, out, err = run(*command)
    assert returncode == 0 and "resuming from" in out, err[-3000:]
    assert last


def test_an_export_that_cannot_fit_is_refused_and_one_that_fails_keeps_the_published_versions(
        tmp_path, small_filesystem, finished_run, monkeypatch, capsys):
    config, _ = finished_run
    small = small_filesystem(40)
    returncode, out, err = run("export.py", "--run", config.output_dir, "--export-root", str(small),
                               "--parity-examples", "0")
    assert_one_line_error(returncode, err, "the export (a SavedModel of", "MiB free")
    assert os.listdir(small) == [] or os.listdir(small / "kerasbert") == []
    # Space taken during the SavedModel's write: TensorFlow's own error, as SaveV2 raises it.
    import tensorflow as tf

    (tmp_path / "exports" / "kerasbert" / "1").mkdir(parents=True)
    (tmp_path / "exports" / "kerasbert" / "1" / "saved_model.pb").write_text("published")

    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "saved_model/variables/variables.data-00000-of-00001; "
                                               "No space left on device [Op:SaveV2]")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    assert cli.main(["export", "--run", config.output_dir, "--export-root", str(tmp_path / "exports"),
                     "--parity-examples", "0", "--tflite", ""]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on device while writing") and "kerasbert/2" in last
    assert sorted(os.listdir(tmp_path / "exports" / "kerasbert")) == ["1"], "no partial version left"
    assert (tmp_path / "exports" / "kerasbert" / "1" / "saved_model.pb").read_text() == "published"


# --- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_writes_a_backup_at_the_current_step_and_the_same_command_resumes(tmp_path, tiny_backbone):
    command = ["train.py", *LONGER, *tiny_backbone, "--output-dir", str(tmp_path / "run")]
    process = run(*command, wait=False)
    state = tmp_path / "run" / "backup" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first = json.loads(state.read_text())["global_step"]
    time.sleep(0.5)  # a few steps past the first backup
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert time.monotonic() - signalled < 60
    assert_one_line_error(process.returncode, err, "stopped by SIGTERM", "the same command resumes from the backup "
                                                                        "at step")
    stopped = json.loads(state.read_text())["global_step"]
    assert stopped > first and f"step {stopped}" in err.strip().splitlines()[-1]
    returncode, out, err = run(*command)
    assert returncode == 0 and f"(global step {stopped})" in out, err[-3000:]


def test_sigterm_outside_training_stops_at_once(monkeypatch):
    with pytest.raises(faults.Preempted, match="stopped by SIGTERM"):
        with faults.TerminationNotice():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    with faults.TerminationNotice() as notice:
        notice.training = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert notice.received  # left to the backup callback
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# --- workers -----------------------------------------------------------------------------------


def cluster_environment(ports, index):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}


def test_a_lone_worker_ends_after_its_peer_timeout_and_at_once_on_sigterm(tmp_path, tiny_backbone):
    ports = free_loopback_ports(2)
    started = time.monotonic()
    returncode, out, err = run("train.py", *TINY, *tiny_backbone, "--strategy", "multi-worker", "--peer-timeout", "5",
                               "--output-dir", str(tmp_path / "run"), env=cluster_environment(ports, 0))
    assert_one_line_error(returncode, err, f"worker-0 waited 5 s for worker-1 (127.0.0.1:{ports[1]}), which did not "
                                           "start", "--peer-timeout")
    assert time.monotonic() - started < 60
    process = run("train.py", *TINY, *tiny_backbone, "--strategy", "multi-worker", "--output-dir", str(tmp_path / "run"),
                  env=cluster_environment(ports, 0), wait=False)
    assert "waiting up to 600 s for the other workers" in process.stdout.readline()
    time.sleep(2)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert time.monotonic() - signalled < 10
    assert_one_line_error(process.returncode, err, "stopped by SIGTERM")


def test_a_lost_worker_ends_the_survivor_in_one_line_and_the_same_commands_resume(tmp_path, tiny_backbone):
    ports = free_loopback_ports(2)
    command = ["train.py", *LONGER, *tiny_backbone, "--strategy", "multi-worker", "--output-dir", str(tmp_path / "run")]
    workers = [run(*command, env=cluster_environment(ports, index), wait=False) for index in range(2)]
    states = [tmp_path / "run" / "backup" / "state.json", tmp_path / "run.worker-1" / "backup" / "state.json"]

    def backed_up_steps():
        return [json.loads(state.read_text())["global_step"] if state.exists() else None for state in states]

    deadline = time.monotonic() + 600
    while None in backed_up_steps() or len(set(backed_up_steps())) > 1:  # both at the same step: a resumable pair
        assert workers[0].poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait()
    out, err = workers[0].communicate(timeout=300)
    assert_one_line_error(workers[0].returncode, err, f"lost worker-1 (127.0.0.1:{ports[1]})", "run on every worker",
                          "the same command resumes from the backup at step")
    assert (tmp_path / "run" / "config.json").exists() and backed_up_steps()[0] >= 4
    workers = [run(*command, env=cluster_environment(ports, index), wait=False) for index in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()


def test_the_lost_worker_is_named_from_the_collective_error():
    environ = {"TF_CONFIG": json.dumps({"cluster": {"worker": ["hostA:2222", "hostB:2222"]},
                                        "task": {"type": "worker", "index": 0}})}
    error = RuntimeError("Collective ops is aborted by: failed to connect to all addresses; last error: "
                         "ipv4:hostB:2222: Connection refused")
    assert faults.lost_worker(error, environ) == "lost worker-1 (hostB:2222)"
    assert faults.lost_worker(RuntimeError("/job:worker/replica:0/task:1 is unavailable"), environ) == \
        "lost worker-1 (hostB:2222)"
    assert faults.lost_worker(RuntimeError("something else"), environ) == "lost a peer worker"
    with pytest.raises(KerasbertError):
        disk.check_free_space(os.getcwd(), 1 << 62, "an exabyte")


def test_sigterm_to_one_worker_stops_every_worker_after_the_same_step(tmp_path, tiny_backbone):
    ports = free_loopback_ports(2)
    command = ["train.py", *LONGER, *tiny_backbone, "--strategy", "multi-worker", "--output-dir", str(tmp_path / "run")]
    workers = [run(*command, env=cluster_environment(ports, index), wait=False) for index in range(2)]
    states = [tmp_path / "run" / "backup" / "state.json", tmp_path / "run.worker-1" / "backup" / "state.json"]
    deadline = time.monotonic() + 600
    while not all(state.exists() for state in states):
        assert workers[0].poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    workers[1].send_signal(signal.SIGTERM)  # the scheduler preempts one machine
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert_one_line_error(worker.returncode, err, "stopped by SIGTERM", "the same command resumes from the "
                                                                           "backup at step")
        assert "eagerly has significant overhead" not in err, "the workers' vote on stopping runs in a tf.function"
    steps = [json.loads(state.read_text())["global_step"] for state in states]
    assert steps[0] == steps[1], "both workers backed up the same step"
    workers = [run(*command, env=cluster_environment(ports, index), wait=False) for index in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=900)
        assert worker.returncode == 0 and f"(global step {steps[0]})" in out, err[-3000:]
