"""The `kerasbert` command (and `train.py`): one line of error, never a traceback, for bad input."""

import os
import sys

# TensorFlow's C++ start-up chatter (CUDA probing, CPU feature notes) is noise
# for users; real errors still reach them as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasbert.errors import KerasbertError  # noqa: E402

USAGE = """usage: kerasbert COMMAND [options]

commands:
  train     fine-tune, evaluate and save a classifier (same as train.py)

`kerasbert COMMAND --help` lists a command's options."""


def train_command(argv):
    from kerasbert.config import config_from_args

    config = config_from_args(argv, prog="kerasbert train")
    from kerasbert.training import train_and_evaluate  # imports TensorFlow: after --help

    train_and_evaluate(config)


COMMANDS = {"train": train_command}


def run(command, argv):
    """Run one command; bad input becomes `error: ...` on stderr and exit status 2."""
    try:
        command(argv)
    except KerasbertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    return run(COMMANDS[argv[0]], argv[1:])
