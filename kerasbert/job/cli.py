"""The `kerasbert` command (and `train.py`): one line of error, never a traceback, for bad input."""

import os
import re
import sys

from kerasbert import load_library
from kerasbert.disk import output_failure
from kerasbert.errors import KerasbertError

USAGE = """usage: kerasbert COMMAND [options]

commands:
  train     fine-tune, evaluate and save a classifier (same as train.py)
  adapt     continue a preset's masked-LM training on unlabeled reviews; write the adapted preset
  export    SavedModel for TF Serving and TFLite models of a run (same as export.py)
  predict   label texts with a .keras, SavedModel or .tflite model
  report    print a run's config, metrics and timings; write its report.md

`kerasbert COMMAND --help` lists a command's options."""


def train_command(argv):
    from kerasbert.job.arguments import config_from_args

    config = config_from_args(argv, prog="kerasbert train")
    load_library()  # TensorFlow: after --help and the checks of the options
    from kerasbert.job.training import train_and_evaluate

    train_and_evaluate(config)


def adapt_command(argv):
    from kerasbert.job.arguments import adapt_config_from_args

    config = adapt_config_from_args(argv, prog="kerasbert adapt")
    load_library()
    from kerasbert.job.adapting import adapt

    adapt(config)


def export_command(argv):
    from kerasbert.job.arguments import export_config_from_args

    config = export_config_from_args(argv, prog="kerasbert export")
    load_library()
    from kerasbert.job.exporting import export_run

    export_run(config)


def predict_command(argv):
    from kerasbert.job.arguments import ArgumentParser

    parser = ArgumentParser(prog="kerasbert predict", description="Label texts with a trained model.")
    parser.add_argument("texts", nargs="*", help="Texts to label (or use --input).")
    parser.add_argument("--model", required=True, help="A .keras file, a SavedModel version folder or a .tflite file.")
    parser.add_argument("--input", help="A .txt (one text a line), .csv/.tsv (text column, optional id) or .jsonl "
                        "(text field, optional id) file.")
    parser.add_argument("--output", help="Write one JSON line per text here (with its input line number and id) "
                        "instead of printing a table.")
    parser.add_argument("--batch-size", type=int, default=64, help="Texts per model call.")
    args = parser.parse_args(argv)
    if bool(args.texts) == bool(args.input):
        raise KerasbertError("give either texts or --input, not both and not neither")
    if args.batch_size <= 0:
        raise KerasbertError(f"--batch-size must be a positive integer, got {args.batch_size}")
    from kerasbert.deploy.predict import InputTexts, load_predictor, predict_file, predictions

    if args.output and args.input and os.path.realpath(args.output) == os.path.realpath(args.input):
        raise KerasbertError(f"--output {args.output} is the input file; write the predictions elsewhere")
    records = InputTexts(args.input) if args.input else [(None, None, text) for text in args.texts]
    load_library()
    predictor = load_predictor(args.model)
    if args.output:
        predict_file(predictor, records, args.output, args.batch_size)
    else:
        for _, _, row in predictions(predictor, records, args.batch_size):
            if row["label"] is not None:
                print(f"{row['label']}\t{row['probability']:.4f}\t{row['text'][:80]}")


def report_command(argv):
    from kerasbert.job.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="kerasbert report",
        description="Print a finished run's config, metrics and timings, and write <run>/report.md with "
                    "its pictures (training curves drawn from the TensorBoard events).")
    parser.add_argument("run", help="A run directory, e.g. runs/latest.")
    args = parser.parse_args(argv)
    load_library()
    from kerasbert.job.report import write_report
    from kerasbert.job.rundir import REPORT_FILE

    print(write_report(args.run))
    print(f"written: {os.path.join(args.run, REPORT_FILE)}")


COMMANDS = {"train": train_command, "adapt": adapt_command, "export": export_command, "predict": predict_command, "report": report_command}


# The library's parameters whose command-line flag has another name.
FLAG_OF_PARAMETER = {"sequence_length": "max-seq-length", "precision": "mixed-precision"}


def as_flags(message):
    """A library message in the command line's words: a parameter in backquotes, `data_dir`,
    becomes its flag, --data-dir."""
    return re.sub(r"`([a-z_]+)`", lambda match: "--" + FLAG_OF_PARAMETER.get(match[1], match[1].replace("_", "-")),
                  message)


def run(command, argv):
    """Run one command; bad input becomes `error: ...` on stderr and exit status 2."""
    try:
        try:
            command(argv)
        except KerasbertError:
            raise
        except Exception as error:  # a full or read-only file system is one line too; anything else a traceback
            raise output_failure(error) or error
    except KerasbertError as error:
        print(f"error: {as_flags(str(error))}", file=sys.stderr)
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
        print(f"error: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)}; `kerasbert --help`)",
              file=sys.stderr)
        return 2
    return run(COMMANDS[argv[0]], argv[1:])


def exit_process(argv=None):
    """Run the command as this whole process (`kerasbert`, train.py, export.py) and leave with its
    exit status. After an `error: ...` line, nothing else reaches stderr: on its way out TensorFlow's
    runtime still writes (a multi-worker run's gRPC threads report the peers that left first), and the
    error is to stay the last line. `main` leaves stderr alone, for callers that go on."""
    status = main(argv)
    if status == 2:
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    sys.exit(status)


if __name__ == "__main__":
    exit_process()
