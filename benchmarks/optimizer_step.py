"""One optimizer step for MiniLM's 22.7M weights, side by side: kerasbert's AdamW
(`kerasbert.adamw_with_warmup`: clipping at global norm 1.0, decay, Adam's step as one
XLA kernel per variable) against Keras' own `keras.optimizers.AdamW` with the same
settings, on the same variables and gradients (the token embedding's sparse, as a
training step gives it: 16 x 400 rows).

    python benchmarks/optimizer_step.py

Each optimizer applies 3 warm-up steps, then `--steps` per round; rounds alternate, the
median round counts. `--baseline REV` adds kerasbert's AdamW as the commit REV has it
(its `kerasbert/optimizers.py`), to measure a change side by side:

    python benchmarks/optimizer_step.py --baseline e16c013
"""

import argparse
import os
import re
import statistics
import subprocess
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasbert  # noqa: E402,F401  (before TensorFlow, as in a user's run: it may turn on oneDNN)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerasbert.optimizers import WarmupLinearDecay, adamw_with_warmup  # noqa: E402

TOKENS = 16 * 400  # rows of the token embedding's gradient in one step


def minilm_shapes():
    """The paths and shapes of the trainable variables of the classifier `train.py` fine-tunes
    (all-MiniLM-L6-v2 from the offline preset), the token embedding first."""
    from kerasbert.model import TextClassifier

    classifier = TextClassifier.from_preset("all_minilm_l6_v2_offline", num_classes=2)
    shapes = {variable.path: tuple(variable.shape) for variable in classifier.trainable_variables}
    token_embedding = next(path for path in shapes if "token_embedding" in path)
    return {token_embedding: shapes.pop(token_embedding), **shapes}


def optimizer_step(optimizer, shapes):
    """A traced step applying fixed gradients with `optimizer` to fresh variables of `shapes`, the first
    one's gradient sparse (the token embedding's rows)."""
    variables = [keras.Variable(tf.random.stateless_normal(shape, (1, 2)) * 0.02, name=path.replace("/", "_"))
                 for path, shape in shapes.items()]
    gradients = [tf.random.stateless_normal(v.shape, (3, index)) * 1e-3 for index, v in enumerate(variables)]
    vocabulary, hidden = variables[0].shape
    rows = tf.random.stateless_uniform([TOKENS], (5, 6), 0, vocabulary, tf.int32)
    gradients[0] = tf.IndexedSlices(tf.random.stateless_normal([TOKENS, hidden], (7, 8)) * 1e-3, rows,
                                    tf.constant([vocabulary, hidden]))
    optimizer.build(variables)
    return tf.function(lambda: optimizer.apply(gradients, variables)), variables


def optimizers_at(revision):
    """`kerasbert.optimizers` as commit `revision` has it, a separate module (its classes not
    registered with Keras, where they would replace today's)."""
    source = subprocess.run(["git", "show", f"{revision}:kerasbert/optimizers.py"], capture_output=True, text=True,
                            check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    module = types.ModuleType(f"optimizers_{revision}")
    exec(compile(re.sub(r"^@keras\.saving\.register_keras_serializable.*$", "", source, flags=re.M),
                 f"{revision}:kerasbert/optimizers.py", "exec"), module.__dict__)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--baseline", help="a commit whose kerasbert AdamW to time beside today's")
    parser.add_argument("--results", default="benchmarks/optimizer_step.md")
    args = parser.parse_args()
    kerasbert_adamw = adamw_with_warmup(5e-5, total_steps=10_000)
    keras_adamw = keras.optimizers.AdamW(learning_rate=WarmupLinearDecay(5e-5, 10_000), weight_decay=0.01,
                                         global_clipnorm=1.0)
    keras_adamw.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    shapes = minilm_shapes()
    steps = {"kerasbert.adamw_with_warmup": optimizer_step(kerasbert_adamw, shapes),
             "keras.optimizers.AdamW": optimizer_step(keras_adamw, shapes)}
    if args.baseline:
        baseline = optimizers_at(args.baseline).adamw_with_warmup(5e-5, total_steps=10_000)
        steps[f"kerasbert.adamw_with_warmup at {args.baseline}"] = optimizer_step(baseline, shapes)
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
        f"the {len(shapes)} trainable variables of the MiniLM classifier, the token embedding's gradient "
        f"{TOKENS} sparse rows; median of {args.rounds} "
        f"alternating rounds of {args.steps} steps.", "",
        "| optimizer | ms per step |", "|---|---|",
        *(f"| {name} | {seconds * 1000:.1f} |" for name, seconds in median.items()),
        "", *(f"kerasbert's against {name}: {seconds / median['kerasbert.adamw_with_warmup']:.2f}x."
              for name, seconds in median.items() if name != "kerasbert.adamw_with_warmup")])


if __name__ == "__main__":
    main()
