"""kerasbert against a plain Hugging Face transformers + PyTorch loop, side by side.

Same machine, same offline MiniLM checkpoint and vocabulary, same real IMDB
train reviews, same batch size and maximum length. Each measurement runs in its
own process (so peak memory is per stack), and the stacks alternate (A B A B)
within one invocation, so both see the same machine noise.

- throughput: training sequences/s (AdamW, global-norm clipping) and inference
  sequences/s, at each `--lengths`, each timed on a second pass over the same
  reviews: the first pass meets every batch shape once (kerasbert traces and
  XLA-compiles its kernels per shape, PyTorch's oneDNN makes its primitives),
  as a full run does in its first minutes;
- variants: kerasbert with one speed-up switched off at a time, and HF with
  bf16 autocast, at `--variant-length`;
- `--time-to-accuracy TARGET`: train each stack until accuracy on a held-out
  slice of train reaches TARGET and report the wall time;
- the CPU's measured bf16 and float32 matmul peak, against which the training
  arithmetic throughput is stated.

The PyTorch side needs `pip install -r benchmarks/requirements-hf.txt`;
kerasbert itself never imports torch.

    python benchmarks/versus_hugging_face.py --data-dir ../shared/data/tensorflow_datasets
"""

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import results_heading  # noqa: E402

KERASBERT_VARIANTS = {
    "kerasbert": {},
    "kerasbert float32": {"mixed_precision": "off"},
    "kerasbert bf16": {"mixed_precision": "bf16"},
    "kerasbert no bucketing": {"length_bucketing": False},
    "kerasbert XLA": {"jit_compile": True},
    "kerasbert unfused": {"fused_layers": False},
    "kerasbert untrimmed": {"trim_last_layer": False},
}
HF_VARIANTS = {"hf": {}, "hf bf16 autocast": {"bf16": True}}


# --- the orchestrating process ---------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--lengths", default="128,256,512")
    parser.add_argument("--rounds", type=int, default=2, help="A B repetitions of every measurement.")
    parser.add_argument("--train-examples", type=int, default=320)
    parser.add_argument("--inference-examples", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--variant-length", type=int, default=256, help="Length of the variant runs (0: none).")
    parser.add_argument("--variants", default=",".join(list(KERASBERT_VARIANTS)[1:] + list(HF_VARIANTS)[1:]),
                        help="Comma-separated variants to run at --variant-length.")
    parser.add_argument("--time-to-accuracy", type=float, default=0.0,
                        help="Also train each stack until this held-out accuracy (0: skip).")
    parser.add_argument("--tta-length", type=int, default=128)
    parser.add_argument("--tta-eval-every", type=int, default=50, help="Steps between held-out checks.")
    parser.add_argument("--results", default="benchmarks/RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, json.loads(args.job))
    unknown = set(args.variants.split(",")) - set(KERASBERT_VARIANTS) - set(HF_VARIANTS) - {""}
    if unknown:
        parser.error(f"unknown --variants {', '.join(sorted(unknown))}; known: {', '.join(KERASBERT_VARIANTS)}, "
                     f"{', '.join(HF_VARIANTS)}")

    lengths = [int(length) for length in args.lengths.split(",") if length]
    peaks = matmul_peaks()  # first: a failure here costs no measurement
    peaks.update(encoder_rates(lengths, args.batch_size))
    reviews_file = write_review_sample(args)
    measurements = []
    plan = [(name, length) for length in lengths for name in ("kerasbert", "hf")]
    if args.variant_length:
        plan += [(name, args.variant_length) for name in args.variants.split(",") if name]
    for round_number in range(1, args.rounds + 1):
        for name, length in plan:
            job = {"mode": "throughput", "reviews": reviews_file, "length": length, "options": variant_options(name),
                   "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size}
            result = launch(name, job)
            measurements.append({"name": name, "length": length, "round": round_number, **result})
            print(json.dumps(measurements[-1]), flush=True)
    accuracy_runs = []
    if args.time_to_accuracy:
        for name in ("kerasbert", "hf"):
            job = {"mode": "time_to_accuracy", "reviews": reviews_file, "length": args.tta_length,
                   "options": variant_options(name), "batch_size": args.batch_size,
                   "eval_batch_size": args.eval_batch_size, "target": args.time_to_accuracy,
                   "eval_every": args.tta_eval_every}
            accuracy_runs.append({"name": name, **launch(name, job)})
            print(json.dumps(accuracy_runs[-1]), flush=True)
    append_results(args, measurements, accuracy_runs, peaks)


def variant_options(name):
    return {**KERASBERT_VARIANTS, **HF_VARIANTS}[name]


def launch(name, job):
    worker = "hf" if name.startswith("hf") else "kerasbert"
    command = [sys.executable, __file__, "--worker", worker, "--job", json.dumps(job)]
    completed = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode or not lines:
        raise SystemExit(f"{name} worker failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1])


def write_review_sample(args):
    """A seeded sample of IMDB train reviews in a JSON file every worker reads.

    Held-out reviews (for time-to-accuracy) come from train as well: the test
    split is never read here.
    """
    from kerasbert.data import read_tfds

    train, _, _ = read_tfds("imdb_reviews", args.data_dir)
    order = random.Random(1234).sample(range(len(train)), len(train))
    texts, labels = train.texts.tolist(), train.labels.tolist()
    pick = lambda indices: {"texts": [texts[i] for i in indices], "labels": [labels[i] for i in indices]}  # noqa: E731
    sample = {
        "train": pick(order[: args.train_examples]),
        "inference": pick(order[: args.inference_examples]),
        "tta_train": pick(order[1000:]),
        "tta_heldout": pick(order[:1000]),
    }
    handle, path = tempfile.mkstemp(prefix="kerasbert-vs-hf-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(sample, file)
    return path


def matmul_dtypes():
    """float32 and bf16, or float32 alone under an ONEDNN_MAX_CPU_ISA cap that hides the CPU's
    bf16 instructions: TensorFlow 2.21 then aborts on a bf16 matmul (oneDNN cannot create the
    primitive) instead of falling back as it does on a CPU without them."""
    import tensorflow as tf

    from kerasbert.hardware import detect_hardware

    hardware = detect_hardware()
    capped = hardware.onednn_max_isa and not hardware.cpu_computes_bf16
    return (tf.float32,) if capped else (tf.float32, tf.bfloat16)


def matmul_rate(products, dtype, repeats=20):
    """TFLOP/s of TensorFlow (all cores) over `products`, a list of (a shape, b shape,
    transpose_a, transpose_b), each run `repeats` times: their FLOPs over their summed time."""
    import tensorflow as tf

    flops, seconds = 0, 0.0
    for a_shape, b_shape, transpose_a, transpose_b in products:
        a, b = (tf.cast(tf.random.normal(shape), dtype) for shape in (a_shape, b_shape))
        product = tf.function(lambda x, y: tf.matmul(x, y, transpose_a=transpose_a, transpose_b=transpose_b))
        product(a, b).numpy()
        started = time.perf_counter()
        for _ in range(repeats):
            result = product(a, b)
        result.numpy()
        seconds += time.perf_counter() - started
        rows, inner = (a_shape[-1], a_shape[-2]) if transpose_a else (a_shape[-2], a_shape[-1])
        flops += 2 * math.prod(a_shape[:-2]) * rows * inner * (b_shape[-2] if transpose_b else b_shape[-1]) * repeats
    return flops / seconds / 1e12


def matmul_peaks(size=2048):
    """This CPU's matmul rate in TFLOP/s at size x size, by dtype name."""
    return {dtype.name: matmul_rate([((size, size), (size, size), False, False)], dtype) for dtype in matmul_dtypes()}


def encoder_products(batch, length, hidden=384, ffn=1536, heads=12):
    """The matrix products of one MiniLM training step at `batch` x `length` tokens: each
    projection forward (query, key and value in one), its input gradient and its weight
    gradient, and attention's scores and weighted sum (taken three times for the step)."""
    tokens, size = batch * length, hidden // heads
    products = []
    for inputs, outputs in ((hidden, 3 * hidden), (hidden, hidden), (hidden, ffn), (ffn, hidden)):
        products += [((tokens, inputs), (inputs, outputs), False, False),
                     ((tokens, outputs), (inputs, outputs), False, True),
                     ((tokens, inputs), (tokens, outputs), True, False)]
    attention = [((batch * heads, length, size), (batch * heads, length, size), False, True),
                 ((batch * heads, length, length), (batch * heads, length, size), False, False)]
    return products + attention * 3


def encoder_rates(lengths, batch):
    """The matmul rate at the encoder's own shapes, by (dtype name, length)."""
    return {(dtype.name, length): matmul_rate(encoder_products(batch, length), dtype, repeats=5)
            for dtype in matmul_dtypes() for length in lengths}


def train_flops_per_token(length, trimmed_last_layer=False):
    """Training FLOPs per processed token of all-MiniLM-L6-v2 (forward x 3).

    Forward: 2 per weight of the 6 transformer layers (hidden 384, FFN 1536)
    plus the attention scores and their weighted sum (2 x 2 x length x 384).
    A trimmed last layer (`kerasbert.backbone`) computes only its key
    and value projections per token (its [CLS] row, per sequence, is left out).
    """
    layers, hidden, ffn = 6, 384, 1536
    per_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * length * hidden
    if trimmed_last_layer:
        return 3 * ((layers - 1) * per_layer + 2 * 2 * hidden * hidden)
    return 3 * layers * per_layer


def append_results(args, measurements, accuracy_runs, peaks):
    by_key = {}
    for row in measurements:
        by_key.setdefault((row["name"], row["length"]), []).append(row)

    def median(name, length, field):
        rows = by_key.get((name, length), [])
        return statistics.median(row[field] for row in rows) if rows else float("nan")

    policy = next((row["policy"] for row in measurements if row["name"] == "kerasbert"), "float32")
    peak_names = ["float32"] + (["bfloat16"] if "bfloat16" in policy else [])
    square = {name: rate for name, rate in peaks.items() if isinstance(name, str)}
    at_shapes = {key: rate for key, rate in peaks.items() if not isinstance(key, str)}
    lines = [
        results_heading(),
        f"Matmul rate measured here (TensorFlow, {2048}x{2048}): "
        + ", ".join(f"{name} {rate:.2f} TFLOP/s" for name, rate in square.items()) + "; at the encoder's own "
        f"shapes (`encoder_products`, batch {args.batch_size}): "
        + ", ".join(f"{name} {rate:.2f} at length {length}" for (name, length), rate in at_shapes.items()) + ".\n",
    ]
    if measurements:
        lines += [
            f"Real IMDB train reviews: {args.train_examples} for training, "
            f"{args.inference_examples} for inference, each timed on a second pass (the first meets every batch "
            f"shape once); batch {args.batch_size} (inference {args.eval_batch_size}); "
            f"medians of {args.rounds} interleaved rounds. HF: `BertForSequenceClassification`, fast tokenizer, "
            "dynamic padding, AdamW, float32 (plain loop). kerasbert: its defaults (`--mixed-precision auto`, "
            f"which chose {policy}; length bucketing).\n",
            "| length | train seq/s kerasbert | train seq/s HF | ratio | inference seq/s kerasbert | "
            "inference seq/s HF | ratio | peak RSS MiB kerasbert / HF | kerasbert train TFLOP/s ("
            + ", ".join(f"% of the {name} rate at 2048 / at the encoder's shapes" for name in peak_names) + ") |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for length in sorted({length for _, length in by_key}):
        if (("hf", length) not in by_key) or (("kerasbert", length) not in by_key):
            continue
        k_train, h_train = median("kerasbert", length, "train_sps"), median("hf", length, "train_sps")
        k_infer, h_infer = median("kerasbert", length, "inference_sps"), median("hf", length, "inference_sps")
        flops = median("kerasbert", length, "train_tflops")
        lines.append(
            f"| {length} | {k_train:.2f} | {h_train:.2f} | {k_train / h_train:.2f}x | {k_infer:.1f} | {h_infer:.1f} | "
            f"{k_infer / h_infer:.2f}x | {median('kerasbert', length, 'peak_rss_mib'):.0f} / "
            f"{median('hf', length, 'peak_rss_mib'):.0f} | {flops:.3f} ("
            + ", ".join(f"{flops / square[name]:.0%} / {flops / at_shapes[name, length]:.0%}" for name in peak_names)
            + ") |"
        )
    if args.variant_length:
        length = args.variant_length
        lines += ["", f"Variants at length {length} (one option changed from the stack's default):", "",
                  "| variant | train seq/s | inference seq/s | mean padded tokens per sequence |", "|---|---|---|---|"]
        for name in dict.fromkeys(row["name"] for row in measurements if row["length"] == length):
            lines.append(f"| {name} | {median(name, length, 'train_sps'):.2f} | "
                         f"{median(name, length, 'inference_sps'):.1f} | {median(name, length, 'padded_tokens'):.0f} |")
    if accuracy_runs:
        lines += ["", f"Time to {args.time_to_accuracy:.0%} accuracy on 1000 held-out train reviews "
                  f"(length {args.tta_length}, checked every {args.tta_eval_every} steps, checks included):", "",
                  "| stack | reached | steps | wall seconds |", "|---|---|---|---|"]
        for run in accuracy_runs:
            lines.append(f"| {run['name']} | {run['accuracy']:.4f} | {run['steps']} | {run['seconds']:.0f} |")
    lines.append("\nRaw measurements:\n\n```\n" + "\n".join(json.dumps(row) for row in measurements + accuracy_runs)
                 + "\n```\n")
    with open(args.results, "a") as results:
        results.write("\n".join(lines))
    print("\n".join(lines))


# --- worker processes ------------------------------------------------------


def run_worker(stack, job):
    with open(job["reviews"]) as file:
        reviews = json.load(file)
    worker = {"kerasbert": KerasbertWorker, "hf": HuggingFaceWorker}[stack](job)
    if job["mode"] == "throughput":
        result = worker.throughput(reviews)
    else:
        result = worker.time_to_accuracy(reviews)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


def preset_folder():
    from kerasbert.presets import resolve_preset

    return resolve_preset("all_minilm_l6_v2_offline")


class KerasbertWorker:
    def __init__(self, job):
        import dataclasses

        from kerasbert.job.config import TrainConfig
        from kerasbert.model import TextClassifier

        self.job = job
        # The checkpoint's own dropout (0.1), as in the Hugging Face loop: the same arithmetic on both sides.
        self.config = config = dataclasses.replace(TrainConfig(max_seq_length=job["length"], batch_size=job["batch_size"],
                                                               eval_batch_size=job["eval_batch_size"],
                                                               backbone_dropout=-1.0), **job["options"])
        self.classifier = TextClassifier.from_preset(
            preset_folder(), num_classes=2, sequence_length=config.max_seq_length, truncation=config.truncation,
            dropout=config.dropout, precision=config.mixed_precision,
            backbone_dropout=None if config.backbone_dropout < 0 else config.backbone_dropout,
            fused_layers=config.fused_layers, trim_last_layer=config.trim_last_layer)
        self.preprocessor = self.classifier.preprocessor

    def texts(self, part):
        import numpy as np

        from kerasbert.texts import LabeledTexts

        return LabeledTexts(np.array(part["texts"], dtype=object), np.array(part["labels"], dtype="int32"))

    def compile(self, steps):
        from kerasbert.optimizers import adamw_with_warmup

        config = self.config
        self.classifier.compile(optimizer=adamw_with_warmup(config.learning_rate, steps, config.warmup_ratio,
                                                            config.weight_decay, config.clip_norm),
                                jit_compile=config.jit_compile)

    def training_data(self, part):
        from kerasbert import data

        return data.training_dataset(self.texts(part), self.preprocessor, self.config.batch_size, self.config.seed,
                                     self.config.length_bucketing)

    def evaluation_data(self, part):
        from kerasbert import data

        texts = self.texts(part)
        if self.config.length_bucketing:
            texts = texts.sorted_by_length()
        return data.evaluation_dataset(texts, self.preprocessor, self.config.eval_batch_size,
                                       self.config.length_bucketing), texts

    def throughput(self, reviews):
        train = self.training_data(reviews["train"])
        padded = sum(int(features["token_ids"].shape[1]) * int(features["token_ids"].shape[0])
                     for features, _ in train)
        self.compile(2 * len(reviews["train"]) // self.config.batch_size)
        self.classifier.fit(train, epochs=1, verbose=0)  # the warm-up pass
        started = time.perf_counter()
        self.classifier.fit(train, epochs=1, verbose=0)
        train_seconds = time.perf_counter() - started
        inference, _ = self.evaluation_data(reviews["inference"])
        self.classifier.predict(inference, verbose=0)
        started = time.perf_counter()
        self.classifier.predict(inference, verbose=0)
        inference_seconds = time.perf_counter() - started
        count = len(reviews["train"]["texts"])
        return {"train_sps": count / train_seconds, "inference_sps": len(reviews["inference"]["texts"]) / inference_seconds,
                "padded_tokens": padded / count, "policy": self.classifier.dtype_policy.name,
                "train_tflops": padded * train_flops_per_token(self.config.max_seq_length, self.config.trim_last_layer)
                / train_seconds / 1e12}

    def time_to_accuracy(self, reviews):
        import keras
        import numpy as np

        heldout, heldout_texts = self.evaluation_data(reviews["tta_heldout"])
        train = self.training_data(reviews["tta_train"])
        self.compile(len(reviews["tta_train"]["texts"]) // self.config.batch_size)
        job, state = self.job, {"accuracy": 0.0, "steps": 0}

        class CheckAccuracy(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                state["steps"] = batch + 1
                if (batch + 1) % job["eval_every"] == 0:
                    logits = self.model.predict(heldout, verbose=0)
                    state["accuracy"] = float(np.mean(logits.argmax(axis=1) == heldout_texts.labels))
                    print(f"step {batch + 1}: held-out accuracy {state['accuracy']:.4f}", file=sys.stderr, flush=True)
                    if state["accuracy"] >= job["target"]:
                        self.model.stop_training = True

        started = time.perf_counter()
        self.classifier.fit(train, epochs=1, verbose=0, callbacks=[CheckAccuracy()])
        return {**state, "seconds": time.perf_counter() - started}


class HuggingFaceWorker:
    """The loop an HF user writes: fast tokenizer, dynamic padding, AdamW, linear warm-up/decay."""

    def __init__(self, job):
        import torch
        from transformers import AutoTokenizer, BertForSequenceClassification

        torch.manual_seed(42)
        self.torch, self.job = torch, job
        folder = preset_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
        self.autocast = job["options"].get("bf16", False)

    def batches(self, part, batch_size, shuffle):
        order = list(range(len(part["texts"])))
        if shuffle:
            random.Random(42).shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            encoded = self.tokenizer([part["texts"][i] for i in chunk], truncation=True,
                                     max_length=self.job["length"], padding=True, return_tensors="pt")
            yield encoded, self.torch.tensor([part["labels"][i] for i in chunk])

    def context(self):
        import contextlib

        if self.autocast:
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def optimizer(self, steps):
        from transformers import get_linear_schedule_with_warmup

        optimizer = self.torch.optim.AdamW(self.model.parameters(), lr=5e-5, weight_decay=0.01)
        return optimizer, get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)

    def train_step(self, optimizer, scheduler, encoded, labels):
        with self.context():
            loss = self.model(**encoded, labels=labels).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

    def train_pass(self, part, optimizer, scheduler):
        """One pass over `part` in shuffled batches; returns how many padded tokens it trained on."""
        padded = 0
        for encoded, labels in self.batches(part, self.job["batch_size"], shuffle=True):
            padded += encoded["input_ids"].numel()
            self.train_step(optimizer, scheduler, encoded, labels)
        return padded

    def predict(self, part):
        self.model.eval()
        logits = []
        with self.torch.inference_mode(), self.context():
            for encoded, _ in self.batches(part, self.job["eval_batch_size"], shuffle=False):
                logits.append(self.model(**encoded).logits.float())
        self.model.train()
        return self.torch.cat(logits).numpy()

    def throughput(self, reviews):
        count = len(reviews["train"]["texts"])
        optimizer, scheduler = self.optimizer(2 * count // self.job["batch_size"])
        self.model.train()
        self.train_pass(reviews["train"], optimizer, scheduler)  # the warm-up pass
        started = time.perf_counter()
        padded = self.train_pass(reviews["train"], optimizer, scheduler)
        train_seconds = time.perf_counter() - started
        self.predict(reviews["inference"])
        started = time.perf_counter()
        self.predict(reviews["inference"])
        inference_seconds = time.perf_counter() - started
        return {"train_sps": count / train_seconds, "inference_sps": len(reviews["inference"]["texts"]) / inference_seconds,
                "padded_tokens": padded / count,
                "train_tflops": padded * train_flops_per_token(self.job["length"]) / train_seconds / 1e12}

    def time_to_accuracy(self, reviews):
        import numpy as np

        steps_per_epoch = len(reviews["tta_train"]["texts"]) // self.job["batch_size"]
        optimizer, scheduler = self.optimizer(steps_per_epoch)
        heldout_labels = np.array(reviews["tta_heldout"]["labels"])
        accuracy, steps = 0.0, 0
        started = time.perf_counter()
        self.model.train()
        for encoded, labels in self.batches(reviews["tta_train"], self.job["batch_size"], shuffle=True):
            self.train_step(optimizer, scheduler, encoded, labels)
            steps += 1
            if steps % self.job["eval_every"] == 0:
                accuracy = float(np.mean(self.predict(reviews["tta_heldout"]).argmax(axis=1) == heldout_labels))
                print(f"step {steps}: held-out accuracy {accuracy:.4f}", file=sys.stderr, flush=True)
                if accuracy >= self.job["target"]:
                    break
        return {"accuracy": accuracy, "steps": steps, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    main()
