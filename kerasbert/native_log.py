"""TensorFlow's native start-up lines, filtered by TF_CPP_MIN_LOG_LEVEL.

Loading TensorFlow's libraries logs INFO lines ("oneDNN custom operations are
on", "Could not find cuda drivers") through absl before absl's log is
initialised, and absl then ignores every threshold (abseil-cpp pull 1718), so
`TF_CPP_MIN_LOG_LEVEL=2` does not hide them and every `kerasbert` command, even
one that only says `error: ...`, started with half a dozen lines of them.

On a machine without NVIDIA's driver, the first device listing also logs
"failed call to cuInit: ... UNKNOWN ERROR (303)" at ERROR level: the code
TensorFlow's CUDA stub returns when libcuda cannot be loaded, which is the
expected state of a CPU machine, not an error (tensorflow issue 37689). That
line is dropped too; any other cuInit failure (a driver that is there but
fails) is kept.
"""

import contextlib
import ctypes
import os
import sys
import tempfile

ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
NO_CUDA_DRIVER = "UNKNOWN ERROR (303)"


@contextlib.contextmanager
def native_info_lines_dropped():
    """Inside, what is written to file descriptor 2 is held; on leaving, it is written
    out without TensorFlow's native INFO lines, absl's preamble and the no-CUDA-driver
    cuInit line when TF_CPP_MIN_LOG_LEVEL asks for warnings or worse. Other lines keep
    their order."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not (is_native_info(line) or is_missing_cuda_driver(line))]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def is_native_info(line):
    """An absl INFO line (`I0000 00:00:... file.cc:12] ...`) or absl's preamble."""
    return line.startswith(ABSL_PREAMBLE) or (line[:1] == "I" and line[1:5].isdigit() and " " in line[:6])


def is_missing_cuda_driver(line):
    """TensorFlow's cuInit failure on a machine where libcuda cannot be loaded."""
    return "failed call to cuInit" in line and NO_CUDA_DRIVER in line


def cuda_driver_missing():
    """True when NVIDIA's driver library cannot be loaded: no GPU can be used."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return True
    return False
