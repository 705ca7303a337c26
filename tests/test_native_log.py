"""TensorFlow's native INFO lines are dropped; everything else written to stderr is kept, in order."""

import os
import subprocess
import sys

import pytest

from kerasbert.native_log import ABSL_PREAMBLE, cuda_driver_missing, native_info_lines_dropped

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITES = (f"{ABSL_PREAMBLE}\n"
          "I0000 00:00:1795916098.176558    7756 port.cc:153] oneDNN custom operations are on.\n"
          "E0000 00:00:1795916098.18     7756 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)\n"
          "E0000 00:00:1795916098.18     7756 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE (804)\n"
          "Illegal value in the config\n"
          "W0000 00:00:1795916098.19     7756 some.cc:1] a warning\n")


@pytest.mark.parametrize("level, expected", [
    ("2", WRITES.splitlines(keepends=True)[3:]),
    ("0", WRITES.splitlines(keepends=True)),
])
def test_native_info_lines_are_dropped_unless_info_is_asked_for(capfd, monkeypatch, level, expected):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    with native_info_lines_dropped():
        os.write(2, WRITES.encode())  # as native code writes: to the descriptor, not sys.stderr
    assert capfd.readouterr().err.splitlines(keepends=True) == expected


def test_a_bad_option_on_the_command_line_is_the_only_line_on_stderr():
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--batch-size", "0"],
                            capture_output=True, text=True, cwd=ROOT, env=environment)
    assert result.returncode == 2
    assert result.stderr == "error: --batch-size must be a positive integer, got 0\n"


@pytest.mark.parametrize("imports, kerasbert_first", [
    ("import kerasbert\nkerasbert.TextClassifier\nimport tensorflow as tf", True),  # loaded on first use
    # Loaded at once, its Keras classes registered, when Keras came first (whose own start-up lines are the user's).
    ("import tensorflow as tf, keras, kerasbert\nassert 'kerasbert>TextClassifier' in keras.saving.get_custom_objects()",
     False),
])
def test_loading_kerasbert_probes_cuda_without_a_line_on_stderr(imports, kerasbert_first):
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    script = f"{imports}\nprint(len(tf.config.list_physical_devices('GPU')))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=environment)
    assert result.returncode == 0, result.stderr
    if cuda_driver_missing():  # as on this project's machines: the probe ran inside the filter, its line dropped
        assert result.stdout.strip() == "0" and "cuInit" not in result.stderr
    assert ("I0000" not in result.stderr) == kerasbert_first


def test_the_command_line_answers_help_and_bad_options_without_tensorflow():
    for arguments in (["train.py", "--help"], ["export.py", "--help"], ["train.py", "--batch-size", "0"],
                      ["-m", "kerasbert.job.cli", "adapt", "--help"], ["-m", "kerasbert.job.cli", "predict", "--help"]):
        script = ("import runpy, sys\n"
                  f"sys.argv = {arguments!r}\n"
                  "try:\n"
                  "    runpy.run_module(sys.argv.pop(1), run_name='__main__') if sys.argv[0] == '-m' else "
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n"
                  "except SystemExit:\n"
                  "    pass\n"
                  "print(sorted(name for name in ('tensorflow', 'keras', 'keras_hub') if name in sys.modules))")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
        assert result.stdout.splitlines()[-1] == "[]", (arguments, result.stdout[-300:])
