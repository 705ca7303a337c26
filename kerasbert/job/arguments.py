"""The command lines of `train.py` and `export.py`, generated from the config
dataclasses: one option per field (name, type, default, help text, choices).

Example:

>>> config_from_args(["--epochs", "2", "--max-seq-length", "128"]).epochs
2
"""

import argparse
import json
import sys

from kerasbert.errors import KerasbertError
from kerasbert.job.config import AdaptConfig, ExportConfig, TrainConfig
from kerasbert.job.options import fields, flag

TRAIN_DESCRIPTION = ("Fine-tune a pre-trained BERT into a text classifier, evaluate it on the test split "
                     "and save it in a run directory.")
EXPORT_DESCRIPTION = ("Export a trained run as a TF Serving SavedModel and TFLite models, each checked "
                      "against the Keras model on test reviews (parity.json).")


class ArgumentParser(argparse.ArgumentParser):
    """argparse without abbreviations (`--max-seq 48` must not quietly mean --max-seq-length)
    whose errors are one line (`KerasbertError`), not the usage text and a SystemExit."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        raise KerasbertError(f"{message} (`{self.prog} --help` lists the options)")


def build_argument_parser(cls=TrainConfig, prog="train.py", description=TRAIN_DESCRIPTION):
    """An argparse parser with one option per field of the dataclass `cls`."""
    parser = ArgumentParser(prog=prog, description=description,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, field in fields(cls).items():
        kwargs = {"help": field.metadata["help"], "default": field.default, "dest": name}
        if field.type in (bool, "bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}.get(field.type, field.type)
            kwargs["metavar"] = kwargs["type"].__name__.upper()
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
            kwargs.pop("metavar", None)
        if "bare" in field.metadata:  # the value of the option given without one
            kwargs.update(nargs="?", const=field.metadata["bare"])
        if field.metadata.get("required"):
            kwargs["required"] = True
            kwargs.pop("default")
        parser.add_argument(f"--{flag(name)}", **kwargs)
    return parser


def config_from_args(argv=None, prog="train.py"):
    """Parse command-line arguments into a validated `TrainConfig`.

    `--config runs/X/config.json` replays a run: every option comes from that
    file (but --output-dir, --resume and --overwrite), except the options
    given explicitly on the command line. `--quick` fills in its profile
    values for the options not given explicitly either.
    """
    parser = build_argument_parser(TrainConfig, prog)
    parser.add_argument("--config", metavar="JSON", help="Replay a run: take every option from its config.json "
                        "(e.g. runs/latest/config.json); options given here override it.")
    values = vars(parser.parse_args(argv))
    explicit = {name for name in fields(TrainConfig) if _given(name, argv)}
    replayed = values.pop("config")
    if replayed:
        recorded = TrainConfig.from_dict(read_recorded_config(replayed)).to_dict()
        values.update({name: value for name, value in recorded.items()
                       if name not in explicit and name not in TrainConfig.RESTART_OPTIONS})
    if values["quick"]:
        values.update({name: value for name, value in TrainConfig.QUICK_PROFILE.items() if name not in explicit})
    return TrainConfig(**values)


def read_recorded_config(path):
    try:
        with open(path) as file:
            values = json.load(file)
    except OSError as error:
        raise KerasbertError(f"--config {path}: {error.strerror}") from None
    except ValueError as error:
        raise KerasbertError(f"--config {path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise KerasbertError(f"--config {path} must hold one JSON object of options")
    return values


ADAPT_DESCRIPTION = ("Continue a preset's masked-language-model training on unlabeled text of the domain (never "
                     "the test split) and write the adapted preset, which train.py --preset takes.")


def adapt_config_from_args(argv=None, prog="kerasbert adapt"):
    parser = build_argument_parser(AdaptConfig, prog, ADAPT_DESCRIPTION)
    return AdaptConfig(**vars(parser.parse_args(argv)))


def export_config_from_args(argv=None, prog="export.py"):
    parser = build_argument_parser(ExportConfig, prog, EXPORT_DESCRIPTION)
    return ExportConfig(**vars(parser.parse_args(argv)))


def _given(name, argv):
    argv = sys.argv[1:] if argv is None else argv
    options = (f"--{flag(name)}", f"--no-{flag(name)}")
    return any(arg.split("=", 1)[0] in options for arg in argv)
