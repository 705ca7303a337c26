"""Fine-tune BERT on IMDB (or your data), evaluate on the test split, save the run.

    python train.py --help
"""

import sys

from kerasbert.job.cli import exit_process

if __name__ == "__main__":
    exit_process(["train", *sys.argv[1:]])
