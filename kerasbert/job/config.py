"""`TrainConfig`: the single source of configuration for a training run (and
`ExportConfig`, `AdaptConfig` for the export and adaptation jobs).

The command line of `train.py` is generated from the dataclass fields (name,
type, default, help text and choices; `kerasbert.job.arguments`), and the run
directory records the resolved config as `config.json`, so a run can be
replayed from it (`train.py --config runs/X/config.json`).

Example:

>>> config = TrainConfig(max_seq_length=128, epochs=2)  # checked on construction
>>> TrainConfig.from_dict(config.to_dict()) == config
True
"""

import dataclasses
import os
import re

from kerasbert.choices import TFLITE_FORMATS, TRUNCATIONS
from kerasbert.errors import KerasbertError
from kerasbert.hardware import PRECISIONS
from kerasbert.job.options import (
    Options,
    check_types,
    check_values,
    clip_norm_option,
    data_dir_option,
    log_every_steps_option,
    logical_cpu_devices_option,
    mixed_precision_option,
    option,
    preset_option,
    seed_option,
    strategy_option,
    validation_split_option,
    warmup_ratio_option,
    weight_decay_option,
)


@dataclasses.dataclass
class TrainConfig(Options):
    # Model
    preset: str = preset_option()
    max_seq_length: int = option(256, "Tokens per review, [CLS] and [SEP] included.")
    truncation: str = option(
        "head+tail",
        "Which tokens of a long review to keep: the first ones (head), the "
        "last ones (tail), or the first 128 and the last max_seq_length-130 "
        "(head+tail, Sun et al. 2019).",
        choices=TRUNCATIONS,
    )
    length_warmup: int = option(-1, "Sequence-length warm-up: tokens per review (truncated as --truncation says) for "
                                "the first --length-warmup-fraction of the training steps (-1: half of --max-seq-length; "
                                "0: off).")
    length_warmup_fraction: float = option(0.5, "The share of the training steps taken at --length-warmup tokens.")
    dropout: float = option(0.1, "Dropout before the classification layer.")
    backbone_dropout: float = option(
        0.0, "Dropout inside the BERT backbone (-1: the preset's own, 0.1 for BERT and MiniLM; none by default, "
        "chosen on validation: benchmarks/sweep_recipe.md)."
    )
    # Data
    dataset: str = option(
        "imdb_reviews",
        "A tensorflow-datasets name with train and test splits and (text, "
        "label) supervised keys, or the path of a Stanford-layout aclImdb "
        "folder or .tar.gz.",
    )
    data_dir: str = data_dir_option()
    train_file: str = option(
        "", "CSV or JSONL file with text,label columns to train on instead of --dataset."
    )
    test_file: str = option("", "CSV or JSONL test file, required with --train-file.")
    streaming: str = option("auto", "Read the data from its files (CSV/TSV/JSONL, folders or globs, gzip) or tfds on every "
                            "pass instead of into memory: on (a bare --streaming), off, or auto: on for a folder, glob, "
                            "gzip or file over 256 MiB. Validation by a hash of each text, --max-*-examples the first rows.",
                            choices=("auto", "on", "off"), bare="on")
    class_names: str = option("", "With --train-file: comma-separated class names in label order (default: the "
                              "distinct labels, sorted).")
    validation_split: float = validation_split_option()
    max_train_examples: int = option(
        0, "Use a seeded random subset of this many training examples (0: all)."
    )
    max_test_examples: int = option(
        0, "Evaluate on a seeded random subset of this many test examples (0: all)."
    )
    length_bucketing: bool = option(
        True,
        "Batch reviews of similar length together and pad each batch only to "
        "its longest review instead of max_seq_length.",
    )
    # Optimisation
    epochs: int = option(1, "Passes over the training data.")
    steps_per_epoch: int = option(0, "Train each epoch on its first this many batches (0: all); the schedule spans "
                                  "epochs x this many steps.")
    batch_size: int = option(16, "Global training batch size (split over replicas).")
    eval_batch_size: int = option(64, "Global batch size for validation and test.")
    learning_rate: float = option(5e-5, "Peak learning rate of AdamW.")
    layer_decay: float = option(
        1.0, "Layer-wise learning rates: each transformer layer below the top one learns at this "
        "factor times the rate of the layer above, the embeddings at this factor times the "
        "first layer's (1: one rate for all; Sun et al. 2019)."
    )
    weight_decay: float = weight_decay_option()
    warmup_ratio: float = warmup_ratio_option()
    clip_norm: float = clip_norm_option()
    early_stopping_patience: int = option(0, "Stop after this many epochs without validation improvement (0: off).")
    mixed_precision: str = mixed_precision_option()
    jit_compile: bool = option(False, "Compile the train step with XLA.")
    fused_layers: bool = option(
        True,
        "Compute the backbone's dense layers as MatMul+BiasAdd(+GELU) and attention as "
        "BatchMatMul with an additive mask, which TensorFlow fuses, and dropout masks from 16 "
        "random bits per element (kerasbert/fused_layers.py).",
    )
    trim_last_layer: bool = option(
        True,
        "Compute the last transformer layer at the [CLS] position only, the one the classification "
        "head reads: the same logits for a seventh less work with MiniLM-L6 (kerasbert/backbone.py).",
    )
    seed: int = seed_option()
    # Distribution and fault tolerance
    strategy: str = strategy_option()
    logical_cpu_devices: int = logical_cpu_devices_option()
    peer_timeout: int = option(600, "Seconds a multi-worker run waits for a worker of TF_CONFIG that has not started, "
                               "or for one that stopped answering, before it ends with a message (0: forever).")
    backup_every_steps: int = option(100, "Back up weights, optimizer state and progress to <run>/backup every this "
                                     "many steps (and at every epoch end; 0: epoch ends only). A killed run "
                                     "restarted with the same command resumes from the backup.")
    resume: bool = option(False, "Resume an interrupted run: the one in --output-dir, else the latest under runs/ "
                          "with a backup. Refused if the options differ from the run's.")
    # Run directory
    output_dir: str = option("", "Run directory (default: runs/<UTC date and time>).")
    overwrite: bool = option(False, "Replace an existing non-empty run directory.")
    log_every_steps: int = log_every_steps_option()
    profile_steps: str = option("", "Profile this range of training steps, e.g. 10,20, into the TensorBoard profiler "
                                "(Profile tab; needs tensorboard-plugin-profile). Empty: off.")
    quick: bool = option(False, "Smoke-test profile: 320 training and 200 test examples, sequence length 64 (explicit "
                         "options still win). Under a minute on a 2-core CPU.")

    QUICK_PROFILE = {"max_train_examples": 320, "max_test_examples": 200, "max_seq_length": 64}
    # Options of the attempt, not of the run: a replayed config leaves them out.
    RESTART_OPTIONS = ("resume", "overwrite", "output_dir", "peer_timeout")

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise `KerasbertError` naming the first invalid value."""
        check_values(self, positive=("max_seq_length", "epochs", "batch_size", "eval_batch_size", "log_every_steps"),
                     non_negative=("max_train_examples", "max_test_examples", "steps_per_epoch", "early_stopping_patience", "clip_norm",
                                   "weight_decay", "logical_cpu_devices", "backup_every_steps", "peer_timeout"),
                     fractions=("validation_split", "warmup_ratio", "dropout", "length_warmup_fraction"))
        if self.length_warmup not in (-1, 0) and not 3 <= self.length_warmup < self.max_seq_length:
            raise KerasbertError(f"--length-warmup must be -1, 0 or from 3 to under --max-seq-length, got {self.length_warmup}")
        if not (self.backbone_dropout == -1.0 or 0.0 <= self.backbone_dropout < 1.0):
            raise KerasbertError(f"--backbone-dropout must be -1 or in [0, 1), got {self.backbone_dropout}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise KerasbertError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if self.profile_steps:
            self.profile_range()
        if bool(self.train_file) != bool(self.test_file):
            raise KerasbertError("--train-file and --test-file go together: give both")
        if self.class_names and not self.train_file:
            raise KerasbertError("--class-names goes with --train-file (a dataset names its own classes)")
        if 0 < len(self.class_name_list()) < 2 or len(set(self.class_name_list())) != len(self.class_name_list()):
            raise KerasbertError(f"--class-names needs two or more different names, got {self.class_names!r}")

    def profile_range(self):
        """--profile-steps as (first, last) steps, (0, 0) when off."""
        if not self.profile_steps:
            return (0, 0)
        parts = self.profile_steps.split(",")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise KerasbertError(f"--profile-steps must be two step numbers FIRST,LAST, got {self.profile_steps!r}")
        first, last = (int(part) for part in parts)
        if not 0 < first <= last:
            raise KerasbertError(f"--profile-steps needs 0 < FIRST <= LAST, got {self.profile_steps!r}")
        return first, last

    def data_options(self):
        """The keywords of `splits.load_splits` for this run's data."""
        names = ("dataset", "data_dir", "train_file", "test_file", "validation_split", "max_train_examples",
                 "max_test_examples", "seed")
        return {**{name: getattr(self, name) for name in names}, "class_names": self.class_name_list()}

    def streamed_data_options(self):
        """The keywords of `splits.load_streamed_splits` for this run's data."""
        return {name: value for name, value in self.data_options().items() if name != "seed"}

    def class_name_list(self):
        return [name.strip() for name in self.class_names.split(",") if name.strip()]




@dataclasses.dataclass
class ExportConfig:
    run: str = option("", "Run directory of a finished training run (holds model.keras).", required=True)
    export_root: str = option("saved_models", "Root of the exported models (TF Serving's base path is <root>/<name>).")
    model_name: str = option("kerasbert", "Model name: the folder under --export-root, and TF Serving's model name.")
    version: int = option(0, "Version number to write (0: the next free one).")
    tflite: str = option(
        "dynamic-int8",
        "Comma-separated TFLite variants to write beside the SavedModel: float32, float16, "
        "dynamic-int8 (empty: none).",
    )
    parity_examples: int = option(
        2000, "Test reviews on which every artifact is compared with the Keras model (0: skip the check)."
    )
    serving_precision: str = option(
        "auto", "What the SavedModel computes in: auto (bf16 where this machine has it natively and parity holds, "
        "else float32; export on the serving machine kind), off (float32), bf16 or fp16.", choices=PRECISIONS)
    overwrite: bool = option(False, "Replace an existing version.")

    def validate(self):
        check_types(self)
        if self.version < 0:
            raise KerasbertError(f"--version must not be negative, got {self.version}")
        if self.parity_examples < 0:
            raise KerasbertError(f"--parity-examples must not be negative, got {self.parity_examples}")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.model_name) or self.model_name.isdigit():
            raise KerasbertError(f"--model-name must be a plain folder name that is not a number, got {self.model_name!r}")
        unknown = [name for name in self.tflite_formats() if name not in TFLITE_FORMATS]
        if unknown:
            raise KerasbertError(f"unknown TFLite format {unknown[0]!r} (choose from {', '.join(TFLITE_FORMATS)})")

    def __post_init__(self):
        self.validate()

    def tflite_formats(self):
        return [name.strip() for name in self.tflite.split(",") if name.strip()]


@dataclasses.dataclass
class AdaptConfig(Options):
    """`kerasbert adapt`: continue a preset's masked-language-model training on the domain's
    unlabeled text and write the adapted preset (`kerasbert.adaptation`)."""
    preset: str = preset_option()
    output: str = option("adapted/minilm-imdb", "Folder to write the adapted preset to (Hugging Face format, with "
                         "kerasbert_preset.json); pass it to train.py --preset.")
    dataset: str = option("imdb_reviews", "The tensorflow-datasets dataset whose texts to adapt on.")
    data_dir: str = data_dir_option()
    splits: str = option("unsupervised,train", "Comma-separated splits of --dataset to adapt on (never test). The "
                         "validation reviews of train (--validation-split, --seed, as train.py carves them) are "
                         "left out.")
    validation_split: float = validation_split_option()
    max_texts: int = option(0, "Adapt on a seeded random subset of this many texts (0: all; streamed, the first ones).")
    streaming: bool = option(False, "Read the splits through tf.data on every pass instead of into memory; train's "
                             "validation reviews left out are then those train.py --streaming validates on.")
    heldout_texts: int = option(500, "Texts held out of adaptation to report the masked-LM loss and accuracy on "
                                "at each epoch end (0: none).")
    max_seq_length: int = option(256, "Tokens per text, [CLS] and [SEP] included (the head of a longer text).")
    mask_rate: float = option(0.15, "Fraction of the tokens to mask and predict.")
    epochs: int = option(1, "Passes over the texts.")
    batch_size: int = option(32, "Global batch size.")
    learning_rate: float = option(5e-5, "Peak learning rate of AdamW (Sun et al. 2019 further pre-train at 5e-5).")
    weight_decay: float = weight_decay_option()
    warmup_ratio: float = warmup_ratio_option()
    clip_norm: float = clip_norm_option()
    mixed_precision: str = mixed_precision_option()
    seed: int = seed_option()
    strategy: str = strategy_option()
    logical_cpu_devices: int = logical_cpu_devices_option()
    backup_every_steps: int = option(200, "Back up weights, optimizer state and progress every this many steps; "
                                     "the same command resumes a killed adaptation from its backup.")
    log_every_steps: int = log_every_steps_option()
    run_dir: str = option("", "Folder for the adaptation's TensorBoard logs and backup (default: "
                          "runs/adapt-<name of --output>).")
    overwrite: bool = option(False, "Replace an existing adapted preset, and start over instead of resuming.")

    RESTART_OPTIONS = ("overwrite",)

    def __post_init__(self):
        self.validate()

    def validate(self):
        check_values(self, positive=("max_seq_length", "epochs", "batch_size", "log_every_steps"),
                     non_negative=("max_texts", "heldout_texts", "clip_norm", "weight_decay", "logical_cpu_devices",
                                   "backup_every_steps"),
                     fractions=("validation_split", "warmup_ratio"))
        if not 0.0 < self.mask_rate < 1.0:
            raise KerasbertError(f"--mask-rate must be in (0, 1), got {self.mask_rate}")
        if not self.output:
            raise KerasbertError("--output must name a folder")
        if "test" in self.split_names():
            raise KerasbertError("--splits must not include test: adapting on it would leak it into every test score")
        if not self.split_names():
            raise KerasbertError("--splits must name at least one split")

    def split_names(self):
        return tuple(name.strip() for name in self.splits.split(",") if name.strip())

    def run_directory(self):
        name = os.path.basename(os.path.normpath(self.output))
        return self.run_dir or os.path.join("runs", f"adapt-{name}")



