"""Export a trained run as a TF Serving SavedModel and TFLite models, parity-checked.

    python export.py --run runs/latest
"""

import sys

from kerasbert.job.cli import exit_process

if __name__ == "__main__":
    exit_process(["export", *sys.argv[1:]])
