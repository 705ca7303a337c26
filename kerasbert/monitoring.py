"""What a run shows in TensorBoard, under `<run dir>/logs/`:

    train/        per-step (every --log-every-steps) and per-epoch loss, accuracy,
                  learning rate, gradient global norm, sequences/s; profiler traces
    validation/   per-epoch loss and accuracy; a text sample of misclassified reviews
    test/         final test metrics as scalars, confusion matrix and
                  precision-recall images, PR curves (PR-curve plugin)
    (logs/ itself) the HParams session: the config and its final metrics

Example, after a run: `tensorboard --logdir runs/` compares every run in the
HParams table.
"""

import contextlib
import html
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from kerasbert.model import softmax
from kerasbert.optimizers import GradientNormAdamW

MISCLASSIFIED_SAMPLE = 256  # validation reviews scored at each epoch end for the text summary
MISCLASSIFIED_SHOWN = 8
REVIEW_CHARACTERS = 400


class TrainingTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, with learning rate, gradient global norm and
    sequences/s in the per-step scalars (`batch_*` tags), every `update_freq` steps.

    The gradient norm comes from `GradientNormAdamW`; with another optimizer it is left out.
    Sequences/s need the `batch_size`.
    """

    def __init__(self, log_dir, batch_size=None, update_freq=20, profile_batch=0):
        super().__init__(log_dir, update_freq=update_freq, profile_batch=profile_batch)
        self.batch_size = batch_size

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # Count steps from the optimizer: a resumed run, or the next epoch's `fit`, continues the curve.
        self._global_train_batch = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.interval_started, self.interval_steps = time.perf_counter(), 0

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.interval_started, self.interval_steps = time.perf_counter(), 0  # not the validation pass before

    def on_train_batch_end(self, batch, logs=None):
        self.interval_steps += 1
        if self._global_train_batch % self.update_freq == 0:
            logs = {**(logs or {}), **self.optimizer_scalars()}
            now = time.perf_counter()
            if self.batch_size:
                logs["sequences_per_second"] = self.batch_size * self.interval_steps / (now - self.interval_started)
            self.interval_started, self.interval_steps = now, 0
        super().on_train_batch_end(batch, logs)

    def optimizer_scalars(self):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        scalars = {"learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate))}
        if isinstance(optimizer, GradientNormAdamW):
            scalars["gradient_norm"] = float(keras.ops.convert_to_numpy(optimizer.gradient_norm))
        return scalars

    def on_epoch_end(self, epoch, logs=None):
        # Keras adds the learning rate itself; add the last gradient norm beside it.
        logs = dict(logs or {})
        logs.update({key: value for key, value in self.optimizer_scalars().items() if key == "gradient_norm"})
        # Keras writes the epoch scalars inside its per-step `record_if`, so they were
        # dropped whenever the epoch's last step was not a multiple of update_freq.
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)


class MisclassifiedReviews(keras.callbacks.Callback):
    """At each epoch end, a text summary of the most confidently misclassified reviews
    of a fixed validation sample, with their true label and probabilities."""

    def __init__(self, log_dir, reviews, batches, class_names):
        super().__init__()
        self.log_dir, self.reviews, self.batches, self.class_names = log_dir, reviews, batches, class_names

    def on_epoch_end(self, epoch, logs=None):
        # Direct calls, not `predict`: under a multi-worker strategy `predict` needs every worker.
        logits = [self.model(features, training=False) for features, _ in self.batches]
        probabilities = softmax(tf.concat(logits, axis=0)).numpy()
        text = misclassified_table(self.reviews, probabilities, self.class_names)
        with summaries_to(self.log_dir):
            tf.summary.text("misclassified_reviews", text, step=epoch,
                            description=f"Most confident mistakes among {len(self.reviews)} validation reviews")


@contextlib.contextmanager
def summaries_to(log_dir):
    """Write summaries under `log_dir`, whatever `tf.summary.record_if` a surrounding `fit` set
    (Keras' TensorBoard callback records only on every `update_freq`-th step, and an epoch's end
    is rarely one), and have them on disk when the block ends, also after an error."""
    writer = tf.summary.create_file_writer(log_dir)
    try:
        with writer.as_default(), tf.summary.record_if(True):
            yield writer
    finally:
        writer.close()


def misclassified_table(reviews, probabilities, class_names, shown=MISCLASSIFIED_SHOWN):
    """A Markdown table of the most confident wrong predictions."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != reviews.labels)
    lines = [f"{len(wrong)} of {len(reviews)} sampled validation reviews misclassified; "
             f"the {min(len(wrong), shown)} most confident:", "",
             "| true | predicted | p(true) | review |", "|---|---|---|---|"]
    for index in wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:shown]:
        true = reviews.labels[index]
        review = reviews.texts[index][:REVIEW_CHARACTERS].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {class_names[true]} | {class_names[predicted[index]]} | "
                     f"{probabilities[index, true]:.3f} | {html.escape(review)}... |")
    return "\n".join(lines)


def log_hyperparameters(log_dir, options, run_name):
    """Start the HParams session of this run: its options (a dict), and which scalars are its metrics."""
    values = {name: value for name, value in options.items() if isinstance(value, (bool, int, float, str))}
    with summaries_to(log_dir):
        hparams_api.hparams_config(
            hparams=[hparams_api.HParam(name) for name in values],
            metrics=[
                hparams_api.Metric("epoch_accuracy", group="validation", display_name="validation accuracy"),
                hparams_api.Metric("epoch_loss", group="validation", display_name="validation loss"),
                hparams_api.Metric("test_accuracy", group="test", display_name="test accuracy"),
                hparams_api.Metric("test_f1", group="test", display_name="test F1"),
                hparams_api.Metric("test_roc_auc", group="test", display_name="test ROC-AUC"),
            ],
        )
        hparams_api.hparams(values, trial_id=run_name)


def log_test_results(log_dir, labels, probabilities, metrics, class_names, step, images):
    """Test metrics as scalars, the run's PNG images, and one PR curve per class."""
    with summaries_to(os.path.join(log_dir, "test")):
        for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "loss"):
            tf.summary.scalar(f"test_{name}", metrics[name], step=step)
        for tag, path in images.items():
            with open(path, "rb") as file:
                tf.summary.image(tag, tf.io.decode_png(file.read(), channels=4)[tf.newaxis], step=step)
        for index, name in enumerate(class_names):
            summary = pr_curve_summary.pb(f"pr_curve_{name}", labels=np.asarray(labels) == index,
                                          predictions=np.asarray(probabilities)[:, index], num_thresholds=101,
                                          display_name=f"precision-recall, class {name}")
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
