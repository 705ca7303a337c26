"""Where one layer's self-attention spends its time in training: each op of kerasbert's
attention (`kerasbert.kernels`), forward and back, timed alone at the encoder's shape
(MiniLM: 12 heads of 32) in bf16, beside a projection MatMul of the same tokens, with
the matrix-multiply rate (TFLOP/s) and the memory traffic of the [batch, heads, length,
length] tensors each op reads and writes (GB/s). A fused attention kernel that never
writes those tensors (FlashAttention's way) would replace the ops marked "L x L". The whole attention runs
both on the whole batch at once and a slice of the batch at a time (`in_batch_slices`,
what kerasbert's training and in-process inference do).

    python benchmarks/attention_parts.py --length 512 --batch 16

Each op runs 3 times to warm up, then `--repeats` times per round; rounds alternate
over the ops (the first op timed in a process runs slow), the median round counts.
"""

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasbert  # noqa: E402,F401  (before TensorFlow, as in a user's run: it may turn on oneDNN)
import tensorflow as tf  # noqa: E402

from kerasbert.kernels import (  # noqa: E402
    attention_scores,
    attention_scores_gradient,
    attention_written_gradient,
    in_batch_slices,
)

HEADS, SIZE, HIDDEN, INTERMEDIATE = 12, 32, 384, 1536


def parts(batch, length):
    """(name, function, FLOPs, bytes of L x L tensors read and written) for one layer."""
    def normal(shape, seed):
        return tf.cast(tf.random.stateless_normal(shape, (seed, 0)), tf.bfloat16)

    heads = [batch, HEADS, length, SIZE]
    square = [batch, HEADS, length, length]
    query, key, value, outputs, upstream = (normal(heads, seed) for seed in range(5))
    probabilities = tf.nn.softmax(normal(square, 5))
    kept = tf.range(length) < length - length // 8  # the last eighth of every review is padding
    mask = tf.cast(tf.where(tf.broadcast_to(kept, [batch, length])[:, None, None, :], 0.0, -1e9), tf.bfloat16)
    scale = 1 / math.sqrt(SIZE)
    tokens, weights = normal([batch * length, HIDDEN], 6), normal([HIDDEN, INTERMEDIATE], 7)
    product = 2 * batch * HEADS * length * length * SIZE  # FLOPs of one [length, length] x [length, size] product
    tensor = batch * HEADS * length * length * 2  # bytes of one L x L tensor in bf16

    def attend(q, k, v, m):
        return attention_written_gradient(q, k, v, m, scale)

    def sliced(q, k, v, m):
        return in_batch_slices(attend, q, k, v, m)

    def forward_and_back(attention):
        def run():
            with tf.GradientTape() as tape:
                tape.watch([query, key, value])
                attended = attention(query, key, value, mask)
            return tape.gradient(attended, [query, key, value], output_gradients=upstream)
        return run

    return [
        ("projection MatMul, tokens x 384 x 1536", lambda: tf.matmul(tokens, weights), 2 * batch * length * HIDDEN * INTERMEDIATE, 0),
        ("scores: q k^T scale + mask (kerasbert)", lambda: attention_scores(query, key, mask, scale), product, tensor),
        ("scores: BatchMatMul fused with scale and mask",
         lambda: tf.matmul(query, key, transpose_b=True) * tf.cast(scale, tf.bfloat16) + mask, product, tensor),
        ("softmax (oneDNN), L x L", lambda: tf.nn.softmax(probabilities), 0, 2 * tensor),
        ("p v, L x L", lambda: tf.matmul(probabilities, value), product, tensor),
        ("back: dp = do v^T, L x L", lambda: tf.matmul(upstream, value, transpose_b=True), product, tensor),
        ("back: scores' gradient (XLA), L x L",
         lambda: attention_scores_gradient(probabilities, probabilities, outputs, upstream, scale), 0, 3 * tensor),
        ("back: dv = p^T do, L x L", lambda: tf.matmul(probabilities, upstream, transpose_a=True), product, tensor),
        ("back: dq = ds k, L x L", lambda: tf.matmul(probabilities, key), product, tensor),
        ("back: dk = ds^T q, L x L", lambda: tf.matmul(probabilities, query, transpose_a=True), product, tensor),
        ("attention forward, the whole batch at once", lambda: attend(query, key, value, mask), 2 * product, 4 * tensor),
        ("attention forward, in batch slices (kerasbert)", lambda: sliced(query, key, value, mask), 2 * product, 4 * tensor),
        ("attention forward and back, the whole batch at once", forward_and_back(attend), 6 * product, 11 * tensor),
        ("attention forward and back, in batch slices (kerasbert)", forward_and_back(sliced), 6 * product, 11 * tensor),
    ]


def wait_for(result):
    """Block until `result` is computed, copying out one number of each tensor, not the tensors."""
    tf.nest.map_structure(lambda tensor: tf.reshape(tensor, [-1])[0].numpy(), result)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--results", default="benchmarks/attention_parts.md")
    args = parser.parse_args()
    measured = [(name, tf.function(function), flops, moved) for name, function, flops, moved in parts(args.batch, args.length)]
    times = {name: [] for name, *_ in measured}
    for _ in range(args.rounds):
        for name, function, _, _ in measured:
            for _ in range(3):
                wait_for(function())
            start = time.perf_counter()
            for _ in range(args.repeats):
                result = function()
            wait_for(result)
            times[name].append((time.perf_counter() - start) / args.repeats)
            print(f"{name}: {times[name][-1] * 1000:.1f} ms", flush=True)
    from machine import append_results, results_heading

    rows = ["| op | ms | TFLOP/s | GB/s of L x L tensors |", "|---|---|---|---|"]
    for name, _, flops, moved in measured:
        seconds = statistics.median(times[name])
        rate = f"{flops / seconds / 1e12:.2f}" if flops else ""
        traffic = f"{moved / seconds / 1e9:.1f}" if moved else ""
        rows.append(f"| {name} | {seconds * 1000:.1f} | {rate} | {traffic} |")
    append_results(args.results, [
        results_heading(),
        f"One layer's self-attention in bf16: batch {args.batch}, {HEADS} heads of {SIZE}, length {args.length} "
        f"(the last eighth of each row masked); median of {args.rounds} alternating rounds of {args.repeats} runs.",
        "", *rows])


if __name__ == "__main__":
    main()
