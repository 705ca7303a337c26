import dataclasses
import json
import os
import platform
import subprocess
import sys

import pytest
import tensorflow as tf

from kerasbert import hardware
from kerasbert.hardware import Gpu, Hardware, choose_precision, detect_hardware, read_cpu_info
from tests.conftest import ROOT, TFDS_DIR

ZEN3 = Hardware("AMD EPYC 7R13 Processor", ("avx", "avx2", "fma"), 2)
ZEN4 = Hardware("AMD EPYC 9R14 Processor", ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"), 2)
SAPPHIRE_RAPIDS = Hardware("Intel Xeon Platinum 8488C", ("avx2", "avx512f", "amx_tile", "amx_bf16", "amx_int8"), 8)
GRAVITON3 = Hardware("Neoverse-V1", ("asimd", "bf16", "i8mm", "sve"), 4)
A100, H100 = Gpu("NVIDIA A100-SXM4-40GB", (8, 0)), Gpu("NVIDIA H100 80GB HBM3", (9, 0))
T4, V100, P100 = Gpu("Tesla T4", (7, 5)), Gpu("Tesla V100-SXM2-16GB", (7, 0)), Gpu("Tesla P100-PCIE-16GB", (6, 0))


@pytest.mark.parametrize("machine, expected", [
    (ZEN3, "off"),
    (ZEN4, "bf16"),
    (SAPPHIRE_RAPIDS, "bf16"),
    (GRAVITON3, "bf16"),
    (Hardware(gpus=(A100,)), "bf16"),
    (Hardware(gpus=(H100, H100)), "bf16"),
    (Hardware(gpus=(T4,)), "fp16"),
    (Hardware(gpus=(V100,)), "fp16"),
    (Hardware(gpus=(A100, T4)), "fp16"),  # the slowest GPU decides: all replicas compute alike
    (Hardware(gpus=(P100,)), "off"),
    (Hardware(gpus=(Gpu("unknown GPU"),)), "off"),
    (Hardware(cpu_flags=ZEN3.cpu_flags, tpu=True), "bf16"),
    (Hardware(cpu_flags=ZEN4.cpu_flags, gpus=(T4,)), "fp16"),  # the GPU computes, not the CPU
    (Hardware(cpu_flags=ZEN4.cpu_flags, onednn_max_isa="AVX2"), "off"),
    (Hardware(cpu_flags=ZEN4.cpu_flags, onednn_max_isa="avx512_core_bf16"), "bf16"),
])
def test_auto_precision_follows_the_hardware(machine, expected):
    choice = choose_precision("auto", machine)
    assert choice.name == expected
    assert choice.policy == {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[expected]
    # The reason names what decided: the TPU, the slowest GPU, the oneDNN cap, or the CPU's bf16 flags.
    deciding = ("TPU" if machine.tpu else "GPU" if machine.gpus else "ONEDNN_MAX_CPU_ISA=AVX2"
                if machine.onednn_max_isa == "AVX2" else "bf16")
    assert deciding in choice.reason, choice.reason
    if machine.gpus and expected != "off":
        slowest = min(gpu.compute_capability for gpu in machine.gpus)
        assert f"{slowest[0]}.{slowest[1]}" in choice.reason


@pytest.mark.parametrize("requested", ["off", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_on_any_hardware(requested):
    for machine in (ZEN3, ZEN4, Hardware(gpus=(T4,)), Hardware(tpu=True)):
        assert choose_precision(requested, machine).name == requested


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, off, bf16, fp16"):
        choose_precision("float64", ZEN3)


def test_cpu_info_of_an_avx2_and_an_arm_machine(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                   "model name\t: AMD EPYC 7R13 Processor\nflags\t\t: fpu sse avx avx2 fma bmi2\n\n"
                   "processor\t: 1\nmodel name\t: another CPU\nflags\t\t: avx512_bf16\n")
    assert read_cpu_info(str(x86)) == ("AMD EPYC 7R13 Processor (family 25, model 1)", ("avx", "avx2", "fma"))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd bf16 i8mm sve\n")
    model, flags = read_cpu_info(str(arm))
    assert flags == ("asimd", "bf16", "i8mm", "sve") and model
    assert choose_precision("auto", Hardware(model, flags)).name == "bf16"


def test_this_machine_is_described_as_lscpu_sees_it():
    machine = detect_hardware()
    assert machine.cores == os.cpu_count()
    with open("/proc/cpuinfo") as cpuinfo:
        flags = set(next(line for line in cpuinfo if line.startswith("flags")).split(":", 1)[1].split())
    assert set(machine.cpu_flags) == flags & set(hardware.RELEVANT_CPU_FLAGS)
    assert machine.cpu_model.split(" (")[0] in machine.describe()
    assert Hardware.from_dict(json.loads(json.dumps(machine.to_dict()))) == machine


def test_gpus_and_tpus_are_detected_from_tensorflow(monkeypatch):
    devices = {"GPU": [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
                       tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU")], "TPU": []}
    details = {"/physical_device:GPU:0": {"device_name": "Tesla T4", "compute_capability": (7, 5)},
               "/physical_device:GPU:1": {"device_name": "Tesla T4", "compute_capability": (7, 5)}}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: devices.get(kind, []))
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details[device.name])
    machine = detect_hardware()
    assert machine.gpus == (T4, T4) and not machine.tpu
    assert choose_precision("auto", machine).name == "fp16"
    assert "GPU Tesla T4 (compute capability 7.5)" in machine.describe()
    round_tripped = Hardware.from_dict(json.loads(json.dumps(machine.to_dict())))
    assert round_tripped == machine

    # The slowest GPU decides: an A100 beside a T4 still trains in fp16; one without a capability (not NVIDIA) in float32.
    details["/physical_device:GPU:0"] = {"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)}
    assert choose_precision("auto", detect_hardware()).name == "fp16"
    details["/physical_device:GPU:1"] = {"device_name": "AMD Instinct MI210"}
    mixed = detect_hardware()
    assert mixed.gpus[1] == Gpu("AMD Instinct MI210", None) and choose_precision("auto", mixed).name == "off"
    devices["GPU"].pop()
    assert choose_precision("auto", detect_hardware()).name == "bf16"

    devices.update(GPU=[], TPU=[tf.config.PhysicalDevice("/physical_device:TPU:0", "TPU")])
    assert detect_hardware().tpu and choose_precision("auto", detect_hardware()).name == "bf16"


def test_onednn_isa_cap_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    machine = detect_hardware()
    assert machine.onednn_max_isa == "AVX2" and "ONEDNN_MAX_CPU_ISA=AVX2" in machine.describe()
    assert choose_precision("auto", machine).name == "off"


def test_a_cpu_without_onednn_gets_advice_and_one_with_it_none():
    without = dataclasses.replace(ZEN3, onednn=False)
    assert "TF_ENABLE_ONEDNN_OPTS=1" in without.onednn_advice()
    assert "TensorFlow without oneDNN" in without.describe()
    assert Hardware.from_dict(json.loads(json.dumps(without.to_dict()))) == without
    for fine in (dataclasses.replace(ZEN3, onednn=True), ZEN3, dataclasses.replace(without, gpus=(T4,)),
                 dataclasses.replace(GRAVITON3, onednn=False)):
        assert fine.onednn_advice() == ""
    assert "oneDNN" not in dataclasses.replace(ZEN3, onednn=True).describe()


ONEDNN_PROBE = """
import warnings
import kerasbert
import tensorflow
from kerasbert.hardware import detect_hardware
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    machine = detect_hardware(warn=True)
print(machine.onednn, len(caught))
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="kerasbert turns oneDNN on for x86 CPUs")
@pytest.mark.parametrize("setting, expected", [(None, "True 0"), ("0", "False 1"), ("1", "True 0")])
def test_importing_kerasbert_first_turns_on_onednn_unless_the_user_said_otherwise(setting, expected):
    environment = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        environment["TF_ENABLE_ONEDNN_OPTS"] = setting
    probe = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], env=environment, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[-2] == expected  # a process without oneDNN on this AVX2+ CPU also warns


@pytest.mark.skipif(platform.machine() != "x86_64", reason="kerasbert turns oneDNN on for x86 CPUs")
def test_a_run_without_onednn_names_it_and_the_fix(tmp_path):
    # The machine lines come before the preset is resolved: a missing preset ends the run right after them.
    run = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--preset", str(tmp_path / "missing"),
                          "--output-dir", str(tmp_path / "run"), "--data-dir", str(TFDS_DIR)],
                         env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    machine = next(index for index, line in enumerate(lines) if "] on " in line)
    assert lines[machine].endswith("TensorFlow without oneDNN") and "set TF_ENABLE_ONEDNN_OPTS=1" in lines[machine + 1]
