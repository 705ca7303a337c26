"""Surviving a kill: a backup of the training state every N steps, and resuming from it.

The backup (`<run dir>/backup/`) holds a weights file (model and optimizer
variables, so the Adam moments and the step counter come back) and
`state.json`: the epoch and step reached, the per-epoch history, the
best validation accuracy so far and the training time spent. Each save
writes the new weights under a new name and then replaces `state.json`
atomically, so a kill at any moment leaves a complete backup behind. The
one before stays too (`previous-state.json`, its weights): a worker killed
while writing its backup of step N still holds step M < N, which its peers,
whose writing of N may have completed, also hold; the workers resume from
the newest step all of them hold (`ResumableJob.build`).

Keras' own `BackupAndRestore` restores at epoch granularity only (it records
the batch but does not skip to it), writes in place and collides between
workers. Here every epoch's batch order is a function of (seed, epoch), so
a resumed run skips exactly the batches it had trained on and then sees the
same batches an uninterrupted run would.

Example:

>>> backup = Backup("runs/example/backup")
>>> backup.exists()
False
"""

import dataclasses
import os
import shutil

import keras

from kerasbert import files
from kerasbert.disk import check_free_space, variable_bytes
from kerasbert.errors import KerasbertError
from kerasbert.job import rundir
from kerasbert.weight_files import load_weights

STATE_FILE = os.path.basename(rundir.BACKUP_STATE)
PREVIOUS_STATE_FILE = "previous-state.json"
WRITE_MARGIN_BYTES = 4 << 20  # an HDF5 file's headers and metadata, and a little room to spare


@dataclasses.dataclass
class RunState:
    epoch: int = 0  # the epoch being trained (or next to train, when step_in_epoch is 0)
    step_in_epoch: int = 0  # optimizer steps already taken in that epoch
    global_step: int = 0
    history: list = dataclasses.field(default_factory=list)  # one dict of logs per finished epoch
    best: float = None  # best monitored value so far (validation accuracy)
    epochs_since_best: int = 0
    train_seconds: float = 0.0
    trained_sequences: int = 0
    weights: str = ""  # file name of the weights in the backup folder

    def finish_epoch(self, logs, monitor):
        self.history.append({name: float(value) for name, value in logs.items()})
        value = logs.get(monitor)
        if value is not None and (self.best is None or value > self.best):
            self.best, self.epochs_since_best = float(value), 0
        else:
            self.epochs_since_best += 1
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def out_of_patience(self, patience):
        """Whether `patience` epochs (0: never) passed without improvement: early stopping."""
        return bool(patience) and self.epochs_since_best >= patience


def save_weights(model, path, what):
    """`model.save_weights(path)` (its optimizer's too) atomically, refused first when the file
    system has no room for it: h5py, which writes it, crashes the process on a full disk."""
    optimizer = [] if model.optimizer is None else model.optimizer.variables
    check_free_space(path, variable_bytes(model.variables + optimizer) + WRITE_MARGIN_BYTES, what)
    with files.written_atomically(path) as temporary:
        model.save_weights(temporary, overwrite=True)


class Backup:
    """One training-state backup in a folder; replaced atomically at each save."""

    def __init__(self, folder):
        self.folder = folder

    def exists(self):
        return os.path.isfile(os.path.join(self.folder, STATE_FILE))

    def save(self, model, state):
        os.makedirs(self.folder, exist_ok=True)
        name = f"step-{state.global_step:08d}.weights.h5"
        save_weights(model, os.path.join(self.folder, name), "the backup")
        state.weights = name  # only once the weights it names are on disk
        kept = [name]
        if self.exists():
            previous = self.read_state()
            files.write_json(os.path.join(self.folder, PREVIOUS_STATE_FILE), dataclasses.asdict(previous))
            kept.append(previous.weights)
        files.write_json(os.path.join(self.folder, STATE_FILE), dataclasses.asdict(state))
        for stale in os.listdir(self.folder):  # not glob: brackets in a folder name are just brackets
            if stale.endswith(".weights.h5") and stale not in kept:
                os.remove(os.path.join(self.folder, stale))

    def read_state(self, file=STATE_FILE):
        try:
            values = files.read_json(os.path.join(self.folder, file))
            return RunState(**values)
        except (OSError, ValueError, TypeError) as error:
            raise KerasbertError(f"backup {self.folder} is unreadable ({error}); start over with --overwrite") from None

    def held_steps(self):
        """The global steps of the complete backups here: the newest, and the one before if kept."""
        states = [self.read_state(file) for file in (STATE_FILE, PREVIOUS_STATE_FILE)
                  if os.path.isfile(os.path.join(self.folder, file))]
        return [state.global_step for state in states if os.path.isfile(os.path.join(self.folder, state.weights))]

    def restore(self, model, step=None):
        """Load the backed-up weights and optimizer state (of `step`, default the newest) into `model`;
        returns the RunState."""
        state = self.read_state()
        if step is not None and step != state.global_step:
            state = self.read_state(PREVIOUS_STATE_FILE)
        path = os.path.join(self.folder, state.weights)
        if not os.path.isfile(path):
            raise KerasbertError(f"backup {self.folder} lists {state.weights}, which is missing; "
                                 "start over with --overwrite")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        load_weights(model, path)
        restored_step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if restored_step != state.global_step:
            raise KerasbertError(f"backup {self.folder} is inconsistent: optimizer step {restored_step}, "
                                 f"state says {state.global_step}")
        return state

    def delete(self):
        shutil.rmtree(self.folder, ignore_errors=True)


class BestWeights(keras.callbacks.Callback):
    """Saves the weights whenever `monitor` beats its best so far (`best`: the best before this fit).

    Unlike `keras.callbacks.ModelCheckpoint`, it writes a temporary file and
    renames it into place, so a kill never leaves a truncated file, and it
    does not format the path, so braces in a folder name are just braces.
    """

    def __init__(self, path, monitor, best=None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and (self.best is None or value > self.best):
            self.best = float(value)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            save_weights(self.model, self.path, "the best weights")


class TrainingBackup(keras.callbacks.Callback):
    """Keeps `state` up to date and saves the backup every `every` optimizer steps
    (0: epoch ends only) and at every epoch end; stops training once the
    monitored metric has not improved for `patience` epochs (0: never).

    An epoch cut short by another callback (TerminateOnNaN) is not recorded
    as finished: `diverged` is set instead. Once `notice` (a `TerminationNotice`) has
    received SIGTERM, the backup is saved at the next step and training stops
    (`preempted_at`: that step). `agree` turns this worker's "received" into the
    cluster's (any worker's), so that every worker stops after the same step.
    """

    def __init__(self, backup, state, throughput, every, monitor, patience=0, notice=None, agree=bool):
        super().__init__()
        self.backup, self.state, self.throughput, self.every = backup, state, throughput, every
        self.monitor, self.patience, self.notice, self.agree = monitor, patience, notice, agree
        self.steps_before_this_epoch, self.diverged, self.preempted_at = 0, False, None

    def on_epoch_begin(self, epoch, logs=None):
        self.steps_before_this_epoch = self.state.step_in_epoch  # non-zero in a resumed epoch

    def on_train_batch_end(self, batch, logs=None):
        # Not at an epoch's last step: the epoch-end backup follows, and a backup of a finished epoch
        # that is not recorded as finished would resume into an epoch with no batches left.
        if batch + 1 == self.params.get("steps"):
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        terminated = self.terminated()
        if terminated or (self.every and step % self.every == 0):
            self.state.step_in_epoch = self.steps_before_this_epoch + batch + 1
            self.save(step)
        if terminated:
            self.stop_at(step)

    def on_epoch_end(self, epoch, logs=None):
        if self.preempted_at is not None:
            return
        if self.model.stop_training:
            self.diverged = True
            return
        self.state.finish_epoch(dict(logs or {}), self.monitor)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.save(step)
        if self.terminated():
            self.stop_at(step)
        elif self.state.out_of_patience(self.patience):
            self.model.stop_training = True

    def terminated(self):
        """Whether SIGTERM reached this worker, or (through `agree`) any worker."""
        return self.agree(self.notice is not None and self.notice.received)

    def stop_at(self, step):
        self.preempted_at, self.model.stop_training = step, True

    def save(self, step):
        self.state.global_step = step
        self.state.train_seconds, self.state.trained_sequences = self.throughput.totals_so_far()
        self.backup.save(self.model, self.state)
