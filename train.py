"""Fine-tune BERT on IMDB (or your data), evaluate on the test split, save the run.

    python train.py --help
"""

import sys

from kerasbert.job.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
