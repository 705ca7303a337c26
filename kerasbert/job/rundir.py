"""What a run leaves on disk, and how it is written (atomically).

A run directory holds:

    config.json          the resolved TrainConfig
    logs/                TensorBoard events (see kerasbert.monitoring): train/,
                         validation/, test/ and the HParams session
    checkpoints/best.weights.h5   weights of the best validation epoch
    backup/              training state for resuming (kerasbert.job.resume); removed when the run finishes
    model.keras          the trained classifier, tokenizer included
    metrics.json         test metrics, timings, throughput, peak memory
    confusion_matrix.png, precision_recall.png, training_curves.png
    report.md            config, metrics, timings and the pictures (kerasbert report)
    .lock                held by the process writing the run, so no second one writes into it

and, for runs under the default root `runs/`, `runs/latest/` holds links to the last finished
one's files, but not to its TensorBoard logs. `RunDirectory` owns all of that:

>>> run = RunDirectory("runs/example")
>>> run.config_file, run.has_backup(), run.recorded_config()
('runs/example/config.json', False, None)
"""

import contextlib
import datetime
import fcntl
import os
import shutil
import tempfile

from kerasbert.errors import KerasbertError
from kerasbert.files import TEMPORARY_PREFIX, check_can_create, publish_directory, read_json
from kerasbert.progress import phase

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
LOG_DIR = "logs"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
PRECISION_RECALL_PNG = "precision_recall.png"
TRAINING_CURVES_PNG = "training_curves.png"
REPORT_FILE = "report.md"
LOCK_FILE = ".lock"
BACKUP_STATE = os.path.join(BACKUP_DIR, "state.json")
RUNS_ROOT = "runs"
# What a run directory may hold; --overwrite empties nothing else.
RUN_ENTRIES = {CONFIG_FILE, METRICS_FILE, MODEL_FILE, LOG_DIR, os.path.dirname(BEST_WEIGHTS), BACKUP_DIR,
               CONFUSION_MATRIX_PNG, PRECISION_RECALL_PNG, TRAINING_CURVES_PNG, REPORT_FILE, LOCK_FILE}


def default_run_directory():
    return os.path.join(RUNS_ROOT, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))


def interrupted_runs(root=RUNS_ROOT):
    """Run directories under `root` holding a backup (started, not finished) that no process is
    writing to now, newest backup first."""
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:  # not glob: brackets are just brackets
        run = RunDirectory(os.path.join(root, name))
        if run.has_backup() and not run.in_use():
            found.append((os.path.getmtime(run.file(BACKUP_STATE)), run))
    return [run for _, run in sorted(found, key=lambda pair: pair[0], reverse=True)]


class RunDirectory(os.PathLike):
    """One run's folder: its paths, the options it started with (`config.json`), its lock, its
    backup, the `runs/latest` links to it. A path-like: `os.path.join(run, ...)` works on it."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    def file(self, name):
        return os.path.join(self.path, name)

    config_file = property(lambda self: self.file(CONFIG_FILE))
    metrics_file = property(lambda self: self.file(METRICS_FILE))
    model_file = property(lambda self: self.file(MODEL_FILE))
    log_dir = property(lambda self: self.file(LOG_DIR))
    best_weights = property(lambda self: self.file(BEST_WEIGHTS))
    backup_dir = property(lambda self: self.file(BACKUP_DIR))
    report_file = property(lambda self: self.file(REPORT_FILE))

    def has_backup(self):
        return os.path.isfile(self.file(BACKUP_STATE))

    def contents(self):
        """What the directory holds, leaving out its lock file."""
        return sorted(name for name in os.listdir(self.path) if name != LOCK_FILE) if os.path.isdir(self.path) else []

    def in_use(self):
        """Whether a live process holds the directory's lock."""
        try:
            handle = os.open(self.file(LOCK_FILE), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(handle)

    def recorded_config(self, purpose=None):
        """The options the run was started with (a dict). When `config.json` is missing or
        unreadable: None, or, given a `purpose` ("resume"), a one-line `KerasbertError`."""
        try:
            recorded = read_json(self.config_file)
        except (OSError, ValueError) as error:
            recorded = error
        if isinstance(recorded, dict) or purpose is None:
            return recorded if isinstance(recorded, dict) else None
        problem = f"{self.config_file} is unreadable ({recorded})" if os.path.isfile(self.config_file) else \
            f"it is not a kerasbert run directory (no {CONFIG_FILE})"
        raise KerasbertError(f"cannot {purpose} {self.path}: {problem}")

    def finished_run(self, purpose):
        """The recorded options and metrics of a finished run, or a one-line `KerasbertError`
        that says what is missing."""
        if not os.path.isdir(self.path):
            raise KerasbertError(f"run directory {self.path} does not exist")
        config = self.recorded_config(purpose)
        try:
            metrics = read_json(self.metrics_file)
        except OSError:
            raise KerasbertError(f"cannot {purpose} {self.path}: it has no test metrics ({METRICS_FILE} is missing: "
                                 "training did not finish, or is still running)") from None
        except ValueError as error:
            raise KerasbertError(f"cannot {purpose} {self.path}: {self.metrics_file} is corrupt ({error})") from None
        if not isinstance(metrics, dict) or "test" not in metrics:
            raise KerasbertError(f"cannot {purpose} {self.path}: it has no test metrics in {METRICS_FILE}")
        return config, metrics

    def check(self, overwrite):
        """Refuse a directory that cannot be written, or holds files, unless `overwrite`; even
        then, refuse one holding anything a kerasbert run does not write (`.`, a home folder).

        Nothing is created or removed here: this runs before the slow work, so a
        refused run leaves the directory as it was.
        """
        check_can_create(self.path, "output directory")
        held = self.contents()
        if held and not overwrite:
            raise KerasbertError(f"output directory {self.path} exists and is not empty (pass --overwrite to replace it)")
        foreign = foreign_entries(held)
        if foreign:
            raise KerasbertError(f"--overwrite replaces only a kerasbert run directory, and {self.path} also holds "
                                 f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}; choose another "
                                 "--output-dir")

    def left_before_first_backup(self, config):
        """Whether the directory holds only what a run with `config` writes before its first backup
        (it was killed before that): the same command then starts it over instead of refusing it."""
        held = self.contents()
        if not held or METRICS_FILE in held or self.has_backup() or foreign_entries(held):
            return False
        recorded = self.recorded_config()
        return recorded is None or not config.differences_from(recorded)

    def create(self, overwrite):
        """Create the directory, emptying it first when `overwrite` was given."""
        self.check(overwrite)
        if overwrite and os.path.isdir(self.path):
            for name in self.contents():
                full = self.file(name)
                shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
        try:
            os.makedirs(os.path.dirname(self.best_weights), exist_ok=True)
        except OSError as error:
            raise KerasbertError(f"cannot create output directory {self.path}: {error.strerror}") from None
        return self

    @contextlib.contextmanager
    def locked(self):
        """`with run.locked():` hold the directory's lock (creating the directory): a second
        process that tries to write into the same run is refused, not interleaved. The operating
        system drops the lock when the holder exits, even by SIGKILL. A directory made here and
        still empty when the block fails is removed: a refused run leaves nothing."""
        created = not os.path.exists(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            handle = os.open(self.file(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise KerasbertError(f"cannot create output directory {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise KerasbertError(f"another kerasbert process is writing to {self.path}; wait for it to end, "
                                 "or choose another --output-dir") from None
        try:
            yield self
        except BaseException:
            if created and not self.contents():
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        finally:
            os.close(handle)

    def check_same_config(self, config):
        """Refuse to resume the run with a config other than the one it was started with."""
        recorded = self.recorded_config("resume")
        differences = config.differences_from(recorded)
        if differences:
            details = ", ".join(f"--{name.replace('_', '-')} (run: {recorded.get(name)!r}, now: "
                                f"{config.to_dict().get(name)!r})" for name in differences)
            raise KerasbertError(f"cannot resume {self.path}: its config differs in {details}; "
                                 "resume with the original options, or start over with --overwrite")

    def point_latest_here(self):
        """For a run under the default root `runs/`, make `runs/latest` a folder of links to the
        run's files (model, metrics, config, report, pictures; replaced atomically), not to its
        TensorBoard logs nor to the run folder itself: TensorBoard follows links, and
        `tensorboard --logdir runs` would show the newest run twice. Returns the folder, or None:
        kerasbert adds nothing to the parent folder of an `--output-dir` elsewhere, and never
        replaces a `latest` that it did not make."""
        parent, name = os.path.split(os.path.abspath(self.path))
        latest = os.path.join(parent, "latest")
        if parent != os.path.abspath(RUNS_ROOT) or (os.path.lexists(latest) and not is_latest_folder(latest)):
            return None
        staged = tempfile.mkdtemp(prefix=".latest-", dir=parent)
        for entry in sorted(set(self.contents()) - {LOG_DIR, BACKUP_DIR}):
            os.symlink(os.path.join(os.pardir, name, entry), os.path.join(staged, entry))
        publish_directory(staged, latest, overwrite=True)
        return latest


def foreign_entries(names):
    """The names among a directory's entries that no kerasbert run writes."""
    return [name for name in names if name not in RUN_ENTRIES and not name.startswith(TEMPORARY_PREFIX)]


def resolved(path):
    """The run a `runs/latest` folder links to; any other path as it is."""
    if is_latest_folder(path):
        return RunDirectory(os.path.dirname(os.path.realpath(os.path.join(path, CONFIG_FILE))))
    return RunDirectory(path)


def is_latest_folder(path):
    """Whether `path` is a `runs/latest` that `point_latest_here` made (links only, config.json among them)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    names = os.listdir(path)
    return CONFIG_FILE in names and all(os.path.islink(os.path.join(path, name)) for name in names)


def choose_run_directory(config, task):
    """The `RunDirectory` of this process, checked; a non-chief worker gets a temporary one beside the chief's.

    Nothing is created or removed here, so a refused run destroys nothing.
    """
    if task.workers > 1 and not config.output_dir:
        raise KerasbertError("multi-worker training needs --output-dir, the same on every worker")
    run = RunDirectory(config.output_dir) if config.output_dir else None
    if not run and config.resume:
        run = next(iter(interrupted_runs()), None)
        if not run:
            raise KerasbertError("--resume: no run under runs/ has a backup to resume from (give --output-dir)")
    if not run and not config.overwrite:
        run = interrupted_run_of(config)
    run = run or RunDirectory(default_run_directory())
    if not task.is_chief:
        run = RunDirectory(f"{run.path.rstrip(os.sep)}.{task.name}")
    has_backup = run.has_backup()
    restart = not has_backup and run.left_before_first_backup(config)
    if restart and not config.resume:
        phase(f"{run} was interrupted before its first backup: starting it over")
    if config.overwrite or not (has_backup or config.resume):
        run.check(config.overwrite or restart)
    elif not has_backup:
        raise KerasbertError(f"--resume: {run} has no backup to resume from (the run finished, "
                             "or never saved one)")
    else:
        run.check_same_config(config)
    return run


def interrupted_run_of(config):
    """The newest interrupted run under runs/ started with the same options: the default command,
    run again after a kill, resumes it. Interrupted runs with other options are named, and left."""
    for run in interrupted_runs():
        recorded = run.recorded_config()
        differences = config.differences_from(recorded) if recorded is not None else ["config.json"]
        if not differences:
            phase(f"resuming the interrupted run {run}, started with these options "
                  "(--output-dir runs/<new> starts a separate run instead)")
            return run
        phase(f"{run} holds an interrupted run with other options ({', '.join(differences[:4])}); left as it "
              f"is: resume it with --config {run.config_file} --output-dir {run}")
    return None
