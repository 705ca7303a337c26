"""The heading of every benchmark's results: the date, the machine (CPU model,
the flags that matter, cores, accelerators), TensorFlow's version, any
instruction-set caps in force, and the command."""

import datetime
import os
import shlex
import sys

# The environment this benchmark started in, before kerasbert's import sets defaults of its own
# (TF_ENABLE_ONEDNN_OPTS): what a run of another revision must get.
STARTED_ENVIRONMENT = dict(os.environ)

import kerasbert  # noqa: E402,F401  (before TensorFlow: it may turn on oneDNN, as in a user's run)
import tensorflow as tf  # noqa: E402

from kerasbert.hardware import detect_hardware  # noqa: E402

# Environment variables that cap the instruction sets of TensorFlow's oneDNN and XLA (--xla_cpu_max_isa),
# PyTorch's ATen and MKL.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "XLA_FLAGS", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "TF_ENABLE_ONEDNN_OPTS")


def append_results(path, lines):
    """Append a results section to `path` and print it."""
    with open(path, "a") as results:
        results.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def results_heading():
    caps = [f"{name}={STARTED_ENVIRONMENT[name]}" for name in ISA_CAPS if name in STARTED_ENVIRONMENT]
    command = shlex.join(caps + ["python", *sys.argv])
    return (f"\n## {datetime.date.today()} on {detect_hardware().describe()}; TensorFlow {tf.__version__}\n\n"
            f"Command: `{command}`\n")
