"""One optimizer step for MiniLM's 22.7M weights, side by side: kerasbert's AdamW
(`kerasbert.adamw_with_warmup`: clipping at global norm 1.0, decay, Adam's step as one
XLA kernel per variable) against Keras' own `keras.optimizers.AdamW` with the same
settings, on the same variables and gradients (the token embedding's sparse, as a
training step gives it: 16 x 400 rows).

    python benchmarks/optimizer_step.py

Each optimizer applies 3 warm-up steps, then `--steps` per round; rounds alternate, the
median round counts.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasbert.optimizers import WarmupLinearDecay, adamw_with_warmup  # noqa: E402

TOKENS = 16 * 400  # rows of the token embedding's gradient in one step


def minilm_shapes():
    shapes = {"token_embedding/embeddings": (30522, 384), "position_embedding/embeddings": (512, 384),
              "segment_embedding/embeddings": (2, 384)}
    for layer in range(6):
        for name, shape in [("query/kernel", (384, 12, 32)), ("key/kernel", (384, 12, 32)),
                            ("value/kernel", (384, 12, 32)), ("attention_output/kernel", (12, 32, 384)),
                            ("query/bias", (12, 32)), ("key/bias", (12, 32)), ("value/bias", (12, 32)),
                            ("attention_output/bias", (384,)), ("intermediate/kernel", (384, 1536)),
                            ("intermediate/bias", (1536,)), ("output/kernel", (1536, 384)), ("output/bias", (384,)),
                            ("attention_norm/gamma", (384,)), ("attention_norm/beta", (384,)),
                            ("output_norm/gamma", (384,)), ("output_norm/beta", (384,))]:
            shapes[f"transformer_layer_{layer}/{name}"] = shape
    return shapes


def optimizer_step(optimizer):
    """A traced step applying fixed gradients with `optimizer` to fresh MiniLM-shaped variables."""
    variables = [keras.Variable(tf.random.stateless_normal(shape, (1, 2)) * 0.02, name=path.replace("/", "_"))
                 for path, shape in minilm_shapes().items()]
    gradients = [tf.random.stateless_normal(v.shape, (3, index)) * 1e-3 for index, v in enumerate(variables)]
    rows = tf.random.stateless_uniform([TOKENS], (5, 6), 0, 30522, tf.int32)
    gradients[0] = tf.IndexedSlices(tf.random.stateless_normal([TOKENS, 384], (7, 8)) * 1e-3, rows,
                                    tf.constant([30522, 384]))
    optimizer.build(variables)
    return tf.function(lambda: optimizer.apply(gradients, variables)), variables


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--results", default="benchmarks/optimizer_step.md")
    args = parser.parse_args()
    kerasbert_adamw = adamw_with_warmup(5e-5, total_steps=10_000)
    keras_adamw = keras.optimizers.AdamW(learning_rate=WarmupLinearDecay(5e-5, 10_000), weight_decay=0.01,
                                         global_clipnorm=1.0)
    keras_adamw.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    steps = {"kerasbert.adamw_with_warmup": optimizer_step(kerasbert_adamw),
             "keras.optimizers.AdamW": optimizer_step(keras_adamw)}
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, (step, variables) in steps.items():
            for _ in range(3):
                step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            float(variables[0][0, 0])  # waits for the last step
            times[name].append((time.perf_counter() - start) / args.steps)
            print(f"{name}: {times[name][-1] * 1000:.1f} ms", flush=True)
    from machine import append_results, results_heading

    median = {name: statistics.median(values) for name, values in times.items()}
    append_results(args.results, [
        results_heading(),
        f"One AdamW step (clipping at global norm 1.0, weight decay 0.01 but on LayerNorm and biases) for "
        f"MiniLM's variables, the token embedding's gradient {TOKENS} sparse rows; median of {args.rounds} "
        f"alternating rounds of {args.steps} steps.", "",
        "| optimizer | ms per step |", "|---|---|",
        *(f"| {name} | {seconds * 1000:.1f} |" for name, seconds in median.items()),
        "", f"kerasbert's against Keras': {median['keras.optimizers.AdamW'] / median['kerasbert.adamw_with_warmup']:.2f}x."])


if __name__ == "__main__":
    main()
