"""What a run leaves on disk, and how it is written (atomically).

A run directory holds:

    config.json          the resolved TrainConfig
    logs/                TensorBoard events (see kerasbert.monitoring): train/,
                         validation/, test/ and the HParams session
    checkpoints/best.weights.h5   weights of the best validation epoch
    backup/              training state for resuming (kerasbert.resume); removed when the run finishes
    model.keras          the trained classifier, tokenizer included
    metrics.json         test metrics, timings, throughput, peak memory
    confusion_matrix.png, precision_recall.png, training_curves.png
    report.md            config, metrics, timings and the pictures (kerasbert report)

and `latest` beside it links to the last finished run.
"""

import contextlib
import ctypes
import datetime
import errno
import glob
import json
import os
import shutil
import tempfile

from kerasbert.errors import KerasbertError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
LOG_DIR = "logs"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
PRECISION_RECALL_PNG = "precision_recall.png"


def default_run_directory():
    return os.path.join("runs", datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))


def latest_resumable_run(root="runs"):
    """The most recently backed-up run under `root` that has not finished, or None."""
    states = glob.glob(os.path.join(root, "*", BACKUP_DIR, "state.json"))
    if not states:
        return None
    newest = max(states, key=os.path.getmtime)
    return os.path.dirname(os.path.dirname(newest))


def check_run_directory(path, overwrite):
    """Refuse a directory that cannot be written, or holds files, unless `overwrite`.

    Nothing is created or removed here: this runs before the slow work, so a
    refused run leaves the directory as it was.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise KerasbertError(f"output directory {path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise KerasbertError(f"output directory {path} exists and is not empty (pass --overwrite to replace it)")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise KerasbertError(f"output directory {path} is not writable ({existing} is not a writable directory)")


def create_run_directory(path, overwrite):
    """Create the directory, emptying it first when `overwrite` was given."""
    check_run_directory(path, overwrite)
    if overwrite and os.path.isdir(path):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            shutil.rmtree(full) if os.path.isdir(full) and not os.path.islink(full) else os.remove(full)
    try:
        os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
    except OSError as error:
        raise KerasbertError(f"cannot create output directory {path}: {error.strerror}") from None
    return path


def point_latest_at(run_dir):
    """Make `latest` beside the run directory a symlink to it (replaced atomically)."""
    parent, name = os.path.split(os.path.abspath(run_dir))
    temporary = os.path.join(parent, f".latest-{os.getpid()}")
    os.symlink(name, temporary)
    os.replace(temporary, os.path.join(parent, "latest"))


def next_version(model_root):
    versions = [int(name) for name in os.listdir(model_root) if name.isdigit()] if os.path.isdir(model_root) else []
    return max(versions, default=0) + 1


def staging_directory(root, version, overwrite):
    """A fresh temporary folder beside `<root>/<version>`, which must not exist unless `overwrite`."""
    final = os.path.join(root, str(version))
    if os.path.exists(final) and not overwrite:
        raise KerasbertError(f"{final} already exists (pass --overwrite to replace it)")
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".partial-{version}-", dir=root), final


def publish_directory(staged, final, overwrite):
    """Flush a fully written directory to disk and rename it into place; an old one is removed only after."""
    make_readable(staged)
    fsync_tree(staged)
    if os.path.exists(final):
        if not overwrite:
            raise KerasbertError(f"{final} already exists (pass --overwrite to replace it)")
        if exchange(staged, final):  # one atomic step: a server never sees the version missing
            shutil.rmtree(staged)
        else:
            retired = tempfile.mkdtemp(prefix=".retired-", dir=os.path.dirname(final))
            os.replace(final, os.path.join(retired, "old"))
            os.replace(staged, final)
            shutil.rmtree(retired)
    else:
        os.replace(staged, final)
    fsync_directory(os.path.dirname(final) or ".")


def temporary_beside(path):
    """A new empty file in `path`'s folder (created exclusively, so never someone else's) whose
    name ends like `path`'s, to write before `publish_file` renames it over `path`."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-",
                                         suffix=os.path.basename(path))
    os.close(handle)
    return temporary


def publish_file(temporary, path):
    """Flush a fully written file to disk, rename it over `path`, and make the rename durable:
    after a crash `path` holds the old contents or the new ones, never a mix or nothing."""
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    make_readable(temporary)
    os.replace(temporary, path)
    fsync_directory(os.path.dirname(path) or ".")


@contextlib.contextmanager
def written_atomically(path):
    """`with written_atomically(path) as temporary:` write `temporary`; it replaces `path` on success."""
    temporary = temporary_beside(path)
    try:
        yield temporary
        publish_file(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def fsync_directory(directory):
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def fsync_tree(folder):
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as file:
                os.fsync(file.fileno())
        fsync_directory(root)


def exchange(first, second):
    """Swap two paths in one atomic step (Linux's renameat2 with RENAME_EXCHANGE); False where
    the system or file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_current_directory, rename_exchange = -100, 2
    if renameat2(at_current_directory, os.fsencode(first), at_current_directory, os.fsencode(second),
                 rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), second)


def write_text_atomically(path, text):
    with written_atomically(path) as temporary, open(temporary, "w") as file:
        file.write(text)


def write_json(path, values):
    write_text_atomically(path, json.dumps(values, indent=2, sort_keys=False) + "\n")


def read_json(path):
    with open(path) as file:
        return json.load(file)


def make_readable(path):
    """Give `path` (and what is below it) the permissions a plain create would have.

    Temporary files and folders are private (0600/0700); published artifacts
    must be readable by a model server running as another user.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)
    if os.path.isdir(path):
        for root, folders, files in os.walk(path):
            for name in folders:
                os.chmod(os.path.join(root, name), 0o777 & ~umask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~umask)


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
