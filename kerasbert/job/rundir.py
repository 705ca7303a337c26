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
one's files, but not to its TensorBoard logs.
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
        state = os.path.join(root, name, BACKUP_STATE)
        if os.path.isfile(state) and not in_use(os.path.join(root, name)):
            found.append((os.path.getmtime(state), os.path.join(root, name)))
    return [path for _, path in sorted(found, reverse=True)]


def in_use(run_dir):
    """Whether a live process holds the run directory's lock."""
    try:
        handle = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(handle)


def recorded_config(run_dir):
    """The options a run directory was started with, or None if it has no readable config.json."""
    try:
        recorded = read_json(os.path.join(run_dir, CONFIG_FILE))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def contents(path):
    """What a directory holds, leaving out its lock file."""
    return sorted(name for name in os.listdir(path) if name != LOCK_FILE) if os.path.isdir(path) else []


def foreign_entries(names):
    """The names among a directory's entries that no kerasbert run writes."""
    return [name for name in names if name not in RUN_ENTRIES and not name.startswith(TEMPORARY_PREFIX)]


def check_run_directory(path, overwrite):
    """Refuse a directory that cannot be written, or holds files, unless `overwrite`; even
    then, refuse one holding anything a kerasbert run does not write (`.`, a home folder).

    Nothing is created or removed here: this runs before the slow work, so a
    refused run leaves the directory as it was.
    """
    check_can_create(path, "output directory")
    held = contents(path)
    if held and not overwrite:
        raise KerasbertError(f"output directory {path} exists and is not empty (pass --overwrite to replace it)")
    foreign = foreign_entries(held)
    if foreign:
        raise KerasbertError(f"--overwrite replaces only a kerasbert run directory, and {path} also holds "
                             f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}; choose another "
                             "--output-dir")


def left_before_first_backup(path, config):
    """Whether `path` holds only what a run with `config` writes before its first backup (it
    was killed before that): the same command then starts it over instead of refusing it."""
    held = contents(path)
    if not held or METRICS_FILE in held or os.path.isfile(os.path.join(path, BACKUP_STATE)):
        return False
    if foreign_entries(held):
        return False
    recorded = recorded_config(path)
    return recorded is None or not config.differences_from(recorded)


def create_run_directory(path, overwrite):
    """Create the directory, emptying it first when `overwrite` was given."""
    check_run_directory(path, overwrite)
    if overwrite and os.path.isdir(path):
        for name in contents(path):
            full = os.path.join(path, name)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
    try:
        os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
    except OSError as error:
        raise KerasbertError(f"cannot create output directory {path}: {error.strerror}") from None
    return path


@contextlib.contextmanager
def locked(run_dir):
    """`with locked(run_dir):` hold the run directory's lock (creating the directory):
    a second process that tries to write into the same run is refused, not interleaved.
    The operating system drops the lock when the holder exits, even by SIGKILL. A directory
    made here and still empty when the block fails is removed: a refused run leaves nothing."""
    created = not os.path.exists(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        handle = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise KerasbertError(f"cannot create output directory {run_dir}: {error.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise KerasbertError(f"another kerasbert process is writing to {run_dir}; wait for it to end, "
                             "or choose another --output-dir") from None
    try:
        yield run_dir
    except BaseException:
        if created and not contents(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        os.close(handle)


def point_latest_at(run_dir):
    """For a run under the default root `runs/`, make `runs/latest` a folder of links to the
    run's files (model, metrics, config, report, pictures; replaced atomically), not to its
    TensorBoard logs nor to the run folder itself: TensorBoard follows links, and
    `tensorboard --logdir runs` would show the newest run twice. Returns the folder, or None:
    kerasbert adds nothing to the parent folder of an `--output-dir` elsewhere, and never
    replaces a `latest` that it did not make."""
    parent, name = os.path.split(os.path.abspath(run_dir))
    latest = os.path.join(parent, "latest")
    if parent != os.path.abspath(RUNS_ROOT) or (os.path.lexists(latest) and not is_latest_folder(latest)):
        return None
    staged = tempfile.mkdtemp(prefix=".latest-", dir=parent)
    for entry in sorted(set(contents(run_dir)) - {LOG_DIR, BACKUP_DIR}):
        os.symlink(os.path.join(os.pardir, name, entry), os.path.join(staged, entry))
    publish_directory(staged, latest, overwrite=True)
    return latest


def resolved(run_dir):
    """The run a `runs/latest` folder links to; any other path as it is."""
    return os.path.dirname(os.path.realpath(os.path.join(run_dir, CONFIG_FILE))) if is_latest_folder(run_dir) \
        else run_dir


def is_latest_folder(path):
    """Whether `path` is a `runs/latest` that `point_latest_at` made (links only, config.json among them)."""
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    names = os.listdir(path)
    return CONFIG_FILE in names and all(os.path.islink(os.path.join(path, name)) for name in names)


def check_same_config(run_dir, config):
    """Refuse to resume `run_dir` with a config other than the one it was started with."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise KerasbertError(f"cannot resume {run_dir}: it has no {CONFIG_FILE}")
    try:
        recorded = read_json(path)
    except ValueError as error:
        raise KerasbertError(f"cannot resume {run_dir}: {path} is not valid JSON ({error})") from None
    differences = config.differences_from(recorded)
    if differences:
        details = ", ".join(f"--{name.replace('_', '-')} (run: {recorded.get(name)!r}, now: "
                            f"{config.to_dict().get(name)!r})" for name in differences)
        raise KerasbertError(f"cannot resume {run_dir}: its config differs in {details}; "
                             "resume with the original options, or start over with --overwrite")


def choose_run_directory(config, task):
    """The run directory of this process, checked; a non-chief worker gets a temporary one beside the chief's.

    Nothing is created or removed here, so a refused run destroys nothing.
    """
    if task.workers > 1 and not config.output_dir:
        raise KerasbertError("multi-worker training needs --output-dir, the same on every worker")
    run_dir = config.output_dir
    if not run_dir and config.resume:
        run_dir = next(iter(interrupted_runs()), None)
        if not run_dir:
            raise KerasbertError("--resume: no run under runs/ has a backup to resume from (give --output-dir)")
    if not run_dir and not config.overwrite:
        run_dir = interrupted_run_of(config)
    run_dir = run_dir or default_run_directory()
    if not task.is_chief:
        run_dir = f"{run_dir.rstrip(os.sep)}.{task.name}"
    has_backup = os.path.isfile(os.path.join(run_dir, BACKUP_STATE))
    restart = not has_backup and left_before_first_backup(run_dir, config)
    if restart and not config.resume:
        phase(f"{run_dir} was interrupted before its first backup: starting it over")
    if config.overwrite or not (has_backup or config.resume):
        check_run_directory(run_dir, config.overwrite or restart)
    elif not has_backup:
        raise KerasbertError(f"--resume: {run_dir} has no backup to resume from (the run finished, "
                             "or never saved one)")
    else:
        check_same_config(run_dir, config)
    return run_dir


def interrupted_run_of(config):
    """The newest interrupted run under runs/ started with the same options: the default command,
    run again after a kill, resumes it. Interrupted runs with other options are named, and left."""
    for run_dir in interrupted_runs():
        recorded = recorded_config(run_dir)
        differences = config.differences_from(recorded) if recorded is not None else ["config.json"]
        if not differences:
            phase(f"resuming the interrupted run {run_dir}, started with these options "
                  "(--output-dir runs/<new> starts a separate run instead)")
            return run_dir
        phase(f"{run_dir} holds an interrupted run with other options ({', '.join(differences[:4])}); left as it "
              f"is: resume it with --config {os.path.join(run_dir, CONFIG_FILE)} --output-dir {run_dir}")
    return None
