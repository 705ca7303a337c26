"""Export a trained run as a TF Serving SavedModel and TFLite models, parity-checked.

    python export.py --run runs/latest
"""

import sys

from kerasbert.job.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
