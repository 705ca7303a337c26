"""When the machine's file system fails, not the input: a full disk, a quota, a read-only
mount. `check_free_space` refuses work whose output cannot fit before it starts, and
`output_failure` turns the error of a write that failed anyway into one line naming the path
and what to do (an `OutputFailure`, which the command line prints like any `KerasbertError`).

Example:

>>> import errno
>>> str(output_failure(OSError(errno.ENOSPC, "No space left on device", "runs/a/metrics.json")))
'no space left on device while writing runs/a/metrics.json: free space there and run the same command again'
>>> output_failure(ValueError("a bug")) is None
True
"""

import contextlib
import errno
import math
import os
import shutil

from kerasbert.errors import KerasbertError

# The errors of a file system that cannot take what is written to it, as os.strerror words them.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# Room kept free beside an estimate: TensorBoard events, JSON, pictures, file-system overhead.
SPARE_BYTES = 64 << 20


class OutputFailure(KerasbertError):
    """The file system being written to failed: full, over quota, or read-only."""


def output_failure(error, path=None):
    """An `OutputFailure` naming `path` (default: the error's own file name) for an error of a
    full, over-quota or read-only file system, else None. Knows `OSError`s and TensorFlow's
    and h5py's errors, which carry the system's words in their message."""
    code = getattr(error, "errno", None)
    if code not in OUTPUT_ERRNOS:
        code = next((known for known in OUTPUT_ERRNOS if os.strerror(known) in str(error)), None)
    if code is None:
        return None
    where = path or getattr(error, "filename", None)
    return OutputFailure(f"{os.strerror(code).lower()} while writing {where or 'the output'}: free space there "
                         "and run the same command again")


@contextlib.contextmanager
def writing(path):
    """Inside, an error of a full, over-quota or read-only file system becomes an `OutputFailure`
    naming `path`; other errors pass through."""
    try:
        yield
    except KerasbertError:
        raise
    except Exception as error:
        failure = output_failure(error, path)
        if failure is None:
            raise
        raise failure from None


def existing_folder(path):
    """`path`, or the nearest of its ancestors that exists."""
    while not os.path.exists(path):
        path = os.path.dirname(path) or "."
    return path


def free_bytes(path):
    """Bytes free for writing at `path` (on the file system of its nearest existing folder)."""
    return shutil.disk_usage(existing_folder(path)).free


def mebibytes(count):
    return f"{count / 2**20:,.0f} MiB"


def check_free_space(path, needed, what):
    """Refuse, before the work that writes them, `needed` bytes of `what` at `path` when its file
    system has less free."""
    free = free_bytes(path)
    if free < needed:
        raise OutputFailure(f"{what} needs about {mebibytes(needed)} in {existing_folder(path)}, which has "
                            f"{mebibytes(free)} free: free some space there, or write elsewhere")


def variable_bytes(variables):
    """The bytes that saving `variables` (Keras variables) takes, headers aside; from their shapes
    and dtypes, without copying them out of TensorFlow (it runs before every backup)."""
    import tensorflow as tf  # here: the command line imports this module before it needs TensorFlow

    return sum(math.prod(variable.shape) * tf.as_dtype(variable.dtype).size for variable in variables)
