"""When the machine fails, not the input: a run ends in one line saying what happened and
how to go on, and what it had published stays whole.

- A full (or over-quota, read-only) file system: refused before the first step when the
  run's files cannot fit (`check_room_to_train`, `check_room_to_adapt`), and, when space runs
  out anyway, the write that failed is named (`kerasbert.disk`) with the step the same command
  resumes from.
- A lost worker: a collective that fails because a peer died, was preempted or cannot be
  reached ends every survivor with the peer's name and how to resume (`lost_worker`).
- SIGTERM, the notice cloud VMs and schedulers send before they take a machine away
  (`TerminationNotice`): training writes a backup at the current step (on every worker, at
  the same step) and stops; anywhere else the run stops at once. Either way the same command
  resumes from the newest backup.
"""

import contextlib
import json
import os
import re
import signal
import threading

import tensorflow as tf

from kerasbert.disk import (
    SPARE_BYTES,
    OutputFailure,
    check_free_space,
    existing_folder,
    mebibytes,
    variable_bytes,
)
from kerasbert.errors import KerasbertError, first_line
from kerasbert.job.resume import Backup

# What one run keeps on disk at most, in copies of the model's weights: the backup being written
# and the one it replaces (weights and Adam's two moments each), the best weights, and at the
# end model.keras (weights, moments) beside the last backup.
WEIGHT_COPIES_ON_DISK = 7
BACKUP_COPIES_ON_DISK = 6  # an adaptation's: the two backups alone


class Preempted(KerasbertError):
    """The run stopped on SIGTERM."""


def check_room_to_train(classifier, run_dir):
    """Refuse a run whose backups, best weights and model cannot fit where it writes, before
    its first step (what the run directory holds already will be replaced, so it counts as free)."""
    model_bytes = variable_bytes(classifier.weights)
    needed = (WEIGHT_COPIES_ON_DISK * model_bytes + SPARE_BYTES
              - bytes_held(run_dir.backup_dir, os.path.dirname(run_dir.best_weights)))
    check_free_space(run_dir, needed, f"training ({mebibytes(model_bytes)} of weights, kept {WEIGHT_COPIES_ON_DISK} "
                                      "times over in backups, best weights and model.keras)")


def check_room_to_adapt(masked_lm, run_dir, output):
    """Refuse an adaptation whose backups or adapted preset cannot fit, before its first step."""
    model_bytes, preset_bytes = variable_bytes(masked_lm.weights), variable_bytes(masked_lm.backbone.weights)
    needed = BACKUP_COPIES_ON_DISK * model_bytes + SPARE_BYTES - bytes_held(run_dir.backup_dir)
    what = f"adapting ({mebibytes(model_bytes)} of weights, kept {BACKUP_COPIES_ON_DISK} times over in backups"
    if os.stat(existing_folder(run_dir)).st_dev == os.stat(existing_folder(output)).st_dev:
        check_free_space(run_dir, needed + preset_bytes, f"{what}, and the adapted preset)")
        return
    check_free_space(run_dir, needed, f"{what})")
    check_free_space(output, preset_bytes + SPARE_BYTES, f"the adapted preset ({mebibytes(preset_bytes)})")


def bytes_held(*folders):
    """What a run directory's `folders` hold already: replaced as the run goes, so free for it."""
    return sum(os.path.getsize(os.path.join(root, name))
               for folder in folders for root, _, names in os.walk(folder) for name in names)


def resume_hint(run_dir):
    """How the same command goes on after a failure of the machine."""
    backup = Backup(run_dir.backup_dir)
    if not backup.exists():
        return "the same command starts the run again"
    return f"the same command resumes from the backup at step {backup.read_state().global_step}"


@contextlib.contextmanager
def ended_clearly(run_dir, task):
    """Inside, a full disk, a lost worker and a SIGTERM end in one `KerasbertError` line that says
    how to resume; anything else passes through."""
    try:
        yield
    except OutputFailure as failure:
        raise OutputFailure(f"{failure} ({resume_hint(run_dir)})") from None
    except Preempted as preempted:
        raise Preempted(f"{preempted}; {resume_hint(run_dir)}") from None
    except tf.errors.OpError as error:
        if task.workers < 2:
            raise
        raise KerasbertError(f"{lost_worker(error)} ({first_line(error)}); this worker's outputs in {run_dir} are "
                             f"whole; {resume_hint(run_dir)}, run on every worker") from None


ADDRESS = re.compile(r"(?:ipv4:|ipv6:|//)?\[?([\w.-]+)\]?:(\d+)")
TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def lost_worker(error, environ=os.environ):
    """'lost worker-1 (hostB:12345)': the peer a collective's error names, by its TF_CONFIG address
    or task; 'lost a peer worker' when the message names none."""
    message = str(error)
    cluster = json.loads(environ.get("TF_CONFIG") or "{}").get("cluster", {})
    for job, index in TASK.findall(message):
        if job in cluster and int(index) < len(cluster[job]):
            return f"lost {job}-{index} ({cluster[job][int(index)]})"
    for host, port in ADDRESS.findall(message):
        for job, addresses in cluster.items():
            for index, address in enumerate(addresses):
                if address.rsplit(":", 1) == [host, port] or address.endswith(f":{port}") and host in (
                        "127.0.0.1", "localhost"):
                    return f"lost {job}-{index} ({address})"
    return "lost a peer worker"


@contextlib.contextmanager
def training(notice):
    """Inside, SIGTERM is the backup callback's to act on (`notice.training`)."""
    if notice is not None:
        notice.training = True
    try:
        yield
    finally:
        if notice is not None:
            notice.training = False


class TerminationNotice:
    """`with TerminationNotice() as notice:` SIGTERM is noted in `notice.received`. While
    `notice.training` is set, training acts on it at its next step (a backup, then it stops);
    anywhere else the run gets `Preempted` at once. `listen()` takes SIGTERM back from
    TensorFlow, whose multi-worker runtime installs a handler of its own that only logs it."""

    def __init__(self):
        self.received, self.training = False, False

    def __enter__(self):
        self.previous = self.listen()
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def listen(self):
        """Handle SIGTERM here (from the main thread only, as Python allows); returns the handler before."""
        if threading.current_thread() is threading.main_thread():
            return signal.signal(signal.SIGTERM, self.note)
        return None

    def note(self, signum, frame):
        self.received = True
        if not self.training:
            raise Preempted("stopped by SIGTERM (a preemption notice)")
