"""Durable files and folders: every file kerasbert writes goes to a new temporary
file beside its target (created exclusively), is flushed to disk, renamed over the
target, and the rename is flushed too; a version folder is written under a
temporary name and published whole. After a kill or a host crash a path holds
the old contents or the new ones, never a mix or nothing.

Example:

>>> write_json("scratch.json", {"steps": 3}); read_json("scratch.json")
{'steps': 3}
"""

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import tempfile

from kerasbert.disk import writing
from kerasbert.errors import KerasbertError

TEMPORARY_PREFIX = ".tmp-"
STAGING_PREFIX = ".partial-"


def check_can_create(path, what):
    """Refuse, before any slow work, a `path` that exists and is not a folder, or that
    could not be created or written (its nearest existing ancestor is not a writable folder)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise KerasbertError(f"{what} {path} exists and is not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise KerasbertError(f"{what} {path} is not writable ({existing} is not a writable directory)")


def check_free(path, overwrite):
    """Refuse a `path` that exists, unless `overwrite`."""
    if os.path.lexists(path) and not overwrite:
        raise KerasbertError(f"{path} already exists (pass `overwrite` to replace it)")


def next_version(model_root):
    versions = [int(name) for name in os.listdir(model_root) if name.isdigit()] if os.path.isdir(model_root) else []
    return max(versions, default=0) + 1


def staging_directory(root, version, overwrite):
    """A fresh temporary folder beside `<root>/<version>`, which must not exist unless `overwrite`.

    Its name says which host and process write it, so the folders a killed
    export left are removed by the next one on that host.
    """
    final = os.path.join(root, str(version))
    check_free(final, overwrite)
    os.makedirs(root, exist_ok=True)
    remove_abandoned_staging(root)
    prefix = f"{STAGING_PREFIX}{version}-{socket.gethostname()}-{os.getpid()}-"
    return tempfile.mkdtemp(prefix=prefix, dir=root), final


def remove_abandoned_staging(root):
    """Remove the staging folders in `root` whose writer, a process on this host, is gone."""
    writer = re.compile(rf"{re.escape(STAGING_PREFIX)}\d+-{re.escape(socket.gethostname())}-(\d+)-")
    for name in os.listdir(root):
        match = writer.match(name)
        if match and not process_exists(int(match.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def publish_directory(staged, final, overwrite):
    """Flush a fully written directory to disk and rename it into place; an old one is removed only after."""
    make_readable(staged)
    fsync_tree(staged)
    check_free(final, overwrite)
    if os.path.exists(final):
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
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=TEMPORARY_PREFIX,
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
    """`with written_atomically(path) as temporary:` write `temporary`; it replaces `path` on success.
    A full, over-quota or read-only file system raises an `OutputFailure` naming `path`; `path`
    keeps what it held."""
    with writing(path):
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
