"""Where kerasbert's CPU time goes: TensorFlow op time by kind, for training and inference steps.

Traces a few training steps and one inference pass over real IMDB train reviews
with the TensorFlow profiler (the trace TensorBoard's profile plugin shows,
kept under `--trace-dir`), then sums the executed ops' time by op type and by
kind (matrix multiplies, element-wise math, data movement, ...), and appends
the tables to `--results`.

    python benchmarks/profile_ops.py --data-dir ../shared/data/tensorflow_datasets --length 256
"""

import argparse
import collections
import glob
import json
import os
import random
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasbert  # noqa: E402,F401  (before TensorFlow, as in a user's run: it may turn on oneDNN)
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from machine import results_heading  # noqa: E402
from versus_hugging_face import KerasbertWorker  # noqa: E402

WARMUP_STEPS = 3  # steps run before the trace: they trace and compile the first batch shapes

# Op types by kind; oneDNN ops carry an "_Mkl" prefix and fused ones "_Fused".
KINDS = {
    "matrix multiply": ("MatMul", "Einsum", "BatchMatMul", "Conv"),
    "softmax": ("Softmax",),
    "data movement": ("Transpose", "Reshape", "Concat", "Gather", "Slice", "Pad", "Tile", "Pack", "Unpack",
                      "Identity", "Fill", "ZerosLike", "OnesLike", "BroadcastTo", "ScatterNd"),
    "reductions": ("Sum", "Mean", "Max", "Min", "Prod", "ArgMax", "L2Loss"),
    "optimizer and variables": ("Apply", "Assign", "ReadVariable", "VarHandle"),
    "XLA kernels (compiled element-wise)": ("XLA kernels",),
    "XLA compilation (once per shape)": ("XLA compilation",),
    "tokenization (tf.data)": ("WordpieceTokenize", "RegexSplit", "Utf8", "StringLower", "CaseFold", "Normalize",
                               "StaticRegex", "RaggedTensor", "Ragged"),
}
XLA_EVENTS = {"CpuExecutable::ExecuteAsyncOnStream": "XLA kernels", "CpuCompiler::CompileCpuExecutable": "XLA compilation"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--inference-examples", type=int, default=320)
    parser.add_argument("--top", type=int, default=12, help="Op types listed per phase.")
    parser.add_argument("--trace-dir", default=os.path.join("runs", "profile"))
    parser.add_argument("--mixed-precision", default="auto", help="kerasbert's --mixed-precision (auto, off, bf16).")
    parser.add_argument("--backbone-dropout", type=float, default=0.0,
                        help="kerasbert's --backbone-dropout (0.0, its default; -1: the checkpoint's 0.1).")
    parser.add_argument("--results", default="benchmarks/profile.md")
    args = parser.parse_args()

    worker = KerasbertWorker({"length": args.length, "batch_size": 16, "eval_batch_size": 64,
                              "options": {"mixed_precision": args.mixed_precision,
                                          "backbone_dropout": args.backbone_dropout}})
    train_count = (args.train_steps + WARMUP_STEPS) * 16
    train_part, inference_part = split_part(real_reviews(args.data_dir, train_count + args.inference_examples),
                                            train_count)
    train = worker.training_data(train_part)
    inference, _ = worker.evaluation_data(inference_part)
    worker.compile(args.train_steps + WARMUP_STEPS)
    worker.classifier.fit(train.take(WARMUP_STEPS), epochs=1, verbose=0)
    worker.classifier.predict(inference.take(1), verbose=0)

    phases = {}
    for phase, run in (("training", lambda: worker.classifier.fit(train.skip(WARMUP_STEPS), epochs=1, verbose=0)),
                       ("inference", lambda: worker.classifier.predict(inference, verbose=0))):
        trace_dir = os.path.join(args.trace_dir, phase)
        tf.profiler.experimental.start(trace_dir)
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
        tf.profiler.experimental.stop()
        phases[phase] = {"wall_seconds": wall, "op_seconds": op_seconds(latest_trace(trace_dir))}
        print(json.dumps({"phase": phase, "wall_seconds": round(wall, 2)}), flush=True)
    append_results(args, phases, worker)


def real_reviews(data_dir, count):
    from kerasbert.data import read_tfds

    train, _, _ = read_tfds("imdb_reviews", data_dir)
    picked = random.Random(1234).sample(range(len(train)), count)
    return {"texts": [train.texts[i] for i in picked], "labels": [int(train.labels[i]) for i in picked]}


def split_part(reviews, count):
    head = {key: values[:count] for key, values in reviews.items()}
    tail = {key: values[count:] for key, values in reviews.items()}
    return head, tail


def latest_trace(trace_dir):
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise SystemExit(f"the profiler wrote no trace under {trace_dir}")
    return paths[-1]


def op_seconds(path):
    """Seconds spent in each op type, summed over TensorFlow's executor threads."""
    space = xplane_pb2.XSpace()
    with open(path, "rb") as file:
        space.ParseFromString(file.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith(("tf_Compute", "tf_data")):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Ops are "scope/op_name:OpType"; executor events ("ExecutorState::Process") contain them.
                # XLA's compiled kernels (kerasbert's GELU and softmax gradient in training) run outside ops.
                if ":" in name and "::" not in name:
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps / 1e12
                elif name in XLA_EVENTS:
                    totals[XLA_EVENTS[name]] += event.duration_ps / 1e12
    return totals


def kind_of(op_type):
    bare = op_type.replace("_Mkl", "").replace("_Fused", "").lstrip("_")
    for kind, markers in KINDS.items():
        if any(marker in bare for marker in markers):
            return kind
    return "element-wise math and other"


def append_results(args, phases, worker):
    lines = [results_heading(),
             f"kerasbert defaults (--mixed-precision {args.mixed_precision}: {worker.classifier.dtype_policy.name}, "
             f"length bucketing, backbone dropout {args.backbone_dropout}), length {args.length}; training: "
             f"{args.train_steps} steps of batch 16 after {WARMUP_STEPS} warm-up steps; inference: "
             f"{args.inference_examples} reviews in batches of 64. Op seconds are summed over TensorFlow's "
             "executor threads, so they can exceed the wall time when ops run side by side.\n"]
    for phase, measured in phases.items():
        ops = measured["op_seconds"]
        total = sum(ops.values())
        kinds = collections.Counter()
        for op_type, seconds in ops.items():
            kinds[kind_of(op_type)] += seconds
        lines += [f"### {phase}: {measured['wall_seconds']:.1f} s wall, {total:.1f} op-seconds\n",
                  "| kind | op-seconds | share |", "|---|---|---|"]
        lines += [f"| {kind} | {seconds:.2f} | {seconds / total:.0%} |" for kind, seconds in kinds.most_common()]
        lines += ["", "| op type | kind | op-seconds | share |", "|---|---|---|---|"]
        lines += [f"| {op_type} | {kind_of(op_type)} | {seconds:.2f} | {seconds / total:.1%} |"
                  for op_type, seconds in ops.most_common(args.top)]
        lines.append("")
    if not os.path.exists(args.results):
        lines.insert(0, "# Where the time goes\n\nWritten by `benchmarks/profile_ops.py`.\n")
    with open(args.results, "a") as results:
        results.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
