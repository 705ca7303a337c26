"""What the machine computes fast, and the defaults that follow from it.

`--mixed-precision auto` (the default) picks the compute dtype the hardware
runs natively:

    TPU                                        bf16 (mixed_bfloat16)
    NVIDIA GPU, compute capability >= 8.0      bf16 (A100, H100, L4, RTX 30xx/40xx)
    NVIDIA GPU, compute capability 7.x         fp16 (mixed_float16, loss scaling: V100, T4)
    other GPUs                                 off (float32)
    CPU with avx512_bf16 or amx_bf16 (x86),    bf16 (Zen 4/5 EPYC, Cooper Lake,
        or bf16 (Arm)                              Sapphire Rapids, Graviton 3)
    any other CPU                              off (float32: emulated bf16 is slower,
                                                   benchmarks/RESULTS.md)

On a CPU whose oneDNN is capped below its bf16 instructions
(`ONEDNN_MAX_CPU_ISA=AVX2`, say), the cap wins: the matrix multiplies
could not use them.

On x86 CPUs TensorFlow computes with oneDNN's kernels, which kerasbert turns on
where TensorFlow would not (x86 CPUs without VNNI, bf16 or AMX) when it is imported before
TensorFlow; `Hardware.onednn_advice` says when a process runs without them.

Example:

>>> cpu = Hardware(cpu_model="AMD EPYC", cpu_flags=("avx2", "fma"), cores=2)
>>> choose_precision("auto", cpu).name
'off'
>>> choose_precision("auto", Hardware(gpus=(Gpu("Tesla T4", (7, 5)),))).name
'fp16'
"""

import dataclasses
import os
import platform
import warnings

DTYPE_POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
PRECISIONS = ("auto", *DTYPE_POLICIES)
# CPU flags that decide a default or explain a measurement (as /proc/cpuinfo spells them).
RELEVANT_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
                      "amx_tile", "amx_bf16", "amx_int8", "asimd", "bf16", "i8mm", "sve")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which its kernels still use bf16 instructions.
BF16_ONEDNN_ISAS = ("avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx", "avx512_core_amx_fp16",
                    "avx10_1_512", "avx10_1_512_amx", "avx10_1_512_amx_fp16", "all", "default")


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple = None  # (major, minor) for NVIDIA GPUs, else None


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The devices a run computes on."""

    cpu_model: str = ""
    cpu_flags: tuple = ()  # the RELEVANT_CPU_FLAGS this CPU has
    cores: int = 1
    gpus: tuple = ()  # of Gpu
    tpu: bool = False
    onednn_max_isa: str = ""  # ONEDNN_MAX_CPU_ISA, if set
    onednn: bool = None  # whether TensorFlow runs oneDNN's CPU kernels (None: not known)

    def describe(self):
        """One line for logs and result files, e.g. 'AMD EPYC 9R14, 2 cores, flags avx2 fma avx512_bf16'."""
        parts = [self.cpu_model or "unknown CPU", f"{self.cores} cores",
                 f"flags {' '.join(self.cpu_flags) or 'none of ' + ', '.join(RELEVANT_CPU_FLAGS[:4])}"]
        if self.onednn_max_isa:
            parts.append(f"ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}")
        if self.onednn is False:
            parts.append("TensorFlow without oneDNN")
        parts += [f"GPU {gpu.name} (compute capability {'.'.join(map(str, gpu.compute_capability or ('?',)))})"
                  for gpu in self.gpus]
        if self.tpu:
            parts.append("TPU")
        return ", ".join(parts)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The inverse of `to_dict`, also after a JSON round trip."""
        gpus = tuple(Gpu(gpu["name"], tuple(gpu["compute_capability"] or ()) or None) for gpu in values["gpus"])
        return cls(**{**values, "cpu_flags": tuple(values["cpu_flags"]), "gpus": gpus})

    def onednn_advice(self):
        """A line for the user when this process computes on the CPU without oneDNN's kernels
        (Eigen's ran attention's batched products 3.5-4.5x slower on a Zen 3), else ""."""
        if self.onednn is not False or self.gpus or self.tpu or "avx2" not in self.cpu_flags:
            return ""
        return ("TensorFlow runs without oneDNN here (TF_ENABLE_ONEDNN_OPTS=0, or TensorFlow was imported before "
                "kerasbert): training and inference take about 1.3-1.4x longer on this CPU; import kerasbert first or "
                "set TF_ENABLE_ONEDNN_OPTS=1")

    @property
    def cpu_computes_bf16(self):
        has_instructions = any(flag in self.cpu_flags for flag in BF16_CPU_FLAGS)
        return has_instructions and (not self.onednn_max_isa or self.onednn_max_isa.lower() in BF16_ONEDNN_ISAS)


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    name: str  # off, bf16 or fp16
    reason: str

    @property
    def policy(self):
        """The Keras dtype policy name."""
        return DTYPE_POLICIES[self.name]


def choose_precision(requested, hardware):
    """The compute precision for `requested` (auto, off, bf16 or fp16) on `hardware`, and why."""
    if requested != "auto":
        if requested not in DTYPE_POLICIES:
            raise ValueError(f"mixed precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
        return PrecisionChoice(requested, "asked for explicitly")
    if hardware.tpu:
        return PrecisionChoice("bf16", "TPUs compute in bf16")
    if hardware.gpus:
        capabilities = [gpu.compute_capability or (0, 0) for gpu in hardware.gpus]
        slowest = min(capabilities)
        if slowest >= (8, 0):
            return PrecisionChoice("bf16", f"every GPU has compute capability >= 8.0 (lowest {slowest[0]}.{slowest[1]})")
        if slowest >= (7, 0):
            return PrecisionChoice("fp16", f"GPU compute capability {slowest[0]}.{slowest[1]} has float16 tensor "
                                           "cores but no bf16")
        return PrecisionChoice("off", "GPU without float16 or bf16 tensor cores")
    if hardware.cpu_computes_bf16:
        flags = [flag for flag in BF16_CPU_FLAGS if flag in hardware.cpu_flags]
        return PrecisionChoice("bf16", f"the CPU has bf16 instructions ({', '.join(flags)})")
    if any(flag in hardware.cpu_flags for flag in BF16_CPU_FLAGS):
        return PrecisionChoice("off", f"ONEDNN_MAX_CPU_ISA={hardware.onednn_max_isa} keeps oneDNN off the CPU's "
                                      "bf16 instructions")
    return PrecisionChoice("off", "the CPU has no bf16 instructions (avx512_bf16, amx_bf16), and emulated bf16 "
                                  "is slower than float32")


def detect_hardware(strategy=None, warn=False):
    """The CPU (model, flags, cores), the visible GPUs, whether `strategy` (default: the one in
    scope) runs on TPUs, and whether TensorFlow runs oneDNN's kernels (`warn`: a Python warning
    when their absence slows this CPU down).

    Lists physical devices only, so it can run before a strategy is created.
    """
    import tensorflow as tf

    model, flags = read_cpu_info()
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(Gpu(details.get("device_name", device.name), details.get("compute_capability")))
    strategy = strategy or tf.distribute.get_strategy()
    tpu = isinstance(strategy, tf.distribute.TPUStrategy) or bool(tf.config.list_physical_devices("TPU"))
    hardware = Hardware(model, flags, os.cpu_count() or 1, tuple(gpus), tpu, os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                        onednn_is_on())
    if warn and hardware.onednn_advice():
        warnings.warn(hardware.onednn_advice(), stacklevel=3)
    return hardware


def onednn_is_on():
    """Whether this TensorFlow computes with oneDNN's CPU kernels (fixed when it loaded), or None
    if its build does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def read_cpu_info(path="/proc/cpuinfo"):
    """(model name, the RELEVANT_CPU_FLAGS present) of the first CPU in a Linux cpuinfo file."""
    fields = {}
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first CPU's block ends here
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    if "cpu family" in fields:  # virtual machines often say only "AMD EPYC"; the family tells Zen 3, 4 and 5 apart
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return model, tuple(flag for flag in RELEVANT_CPU_FLAGS if flag in flags)
