"""Fine-tuning: optimizer, learning-rate schedule, callbacks, and the whole
train-evaluate-save job that `train.py` runs.

Example (two minutes on a 2-core CPU):

>>> metrics = train_and_evaluate(TrainConfig(quick=True, output_dir="runs/smoke",
...                                          data_dir="../shared/data/tensorflow_datasets", **TrainConfig.QUICK_PROFILE))
>>> sorted(metrics["test"])[:3]
['accuracy', 'confusion_matrix', 'examples']
"""

import dataclasses
import math
import os
import resource
import time

import keras
import tensorflow as tf

from kerasbert import data, evaluation, plots, rundir
from kerasbert.model import attach_preprocessor, build_classifier, save_classifier
from kerasbert.presets import resolve_preset

# Variables that get no weight decay: LayerNorm scales/offsets and biases.
NO_DECAY_PATTERN = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable(package="kerasbert")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`.

    >>> schedule = WarmupLinearDecay(peak=1e-4, warmup_steps=10, total_steps=110)
    >>> [round(float(schedule(step)), 7) for step in (0, 5, 10, 60, 110)]
    [0.0, 5e-05, 0.0001, 5e-05, 0.0]
    """

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * tf.clip_by_value(tf.minimum(warmup, decay), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def make_optimizer(config, total_steps):
    schedule = WarmupLinearDecay(config.learning_rate, int(config.warmup_ratio * total_steps), total_steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        global_clipnorm=config.clip_norm or None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_PATTERN)
    if config.mixed_precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_classifier(classifier, config, total_steps):
    classifier.compile(
        optimizer=make_optimizer(config, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.jit_compile,
    )


class TensorBoardWithLearningRate(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, plus the learning rate in the per-step scalars."""

    def on_train_batch_end(self, batch, logs=None):
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        super().on_train_batch_end(batch, {**(logs or {}), "learning_rate": learning_rate})


class Throughput(keras.callbacks.Callback):
    """Training sequences/s, not counting validation passes; added to the epoch logs."""

    def __init__(self, examples_per_epoch):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.train_seconds = 0.0
        self.epochs = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.paused = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = getattr(self, "paused", time.perf_counter()) - self.started
        self.train_seconds += seconds
        self.epochs += 1
        self.__dict__.pop("paused", None)
        if logs is not None:
            logs["sequences_per_second"] = self.examples_per_epoch / seconds

    @property
    def sequences_per_second(self):
        return self.epochs * self.examples_per_epoch / max(self.train_seconds, 1e-9)


def make_callbacks(config, run_dir, has_validation, throughput):
    monitor = "val_accuracy" if has_validation else "accuracy"
    callbacks = [
        throughput,
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            os.path.join(run_dir, rundir.BEST_WEIGHTS), monitor=monitor, mode="max",
            save_best_only=True, save_weights_only=True,
        ),
        TensorBoardWithLearningRate(os.path.join(run_dir, rundir.LOG_DIR), update_freq=config.log_every_steps),
    ]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max",
                                                       patience=config.early_stopping_patience))
    return callbacks


def phase(message):
    print(f"[kerasbert {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclasses.dataclass
class FineTuned:
    classifier: keras.Model
    preprocessor: keras.layers.Layer
    history: keras.callbacks.History
    throughput: Throughput
    strategy: tf.distribute.Strategy


def fine_tune(config, preset_path, splits, run_dir):
    """Build the classifier under the strategy, fit it, and restore its best-validation weights.

    `preset_path` is what `resolve_preset(config.preset)` returned.
    """
    keras.utils.set_random_seed(config.seed)
    strategy = tf.distribute.get_strategy()
    steps_per_epoch = math.ceil(len(splits.train) / config.batch_size)
    with strategy.scope():
        classifier, preprocessor = build_classifier(
            preset_path, len(splits.class_names), config.max_seq_length,
            config.truncation, config.dropout, config.mixed_precision,
        )
        compile_classifier(classifier, config, config.epochs * steps_per_epoch)

    rundir.create_run_directory(run_dir, config.overwrite)
    config.save(os.path.join(run_dir, rundir.CONFIG_FILE))
    phase(f"run directory {run_dir}; TensorBoard: tensorboard --logdir {os.path.join(run_dir, rundir.LOG_DIR)}")

    train_data = data.training_dataset(splits.train, preprocessor, config.batch_size, config.seed,
                                       config.length_bucketing)
    validation_data = None
    if len(splits.validation):
        validation_data = data.evaluation_dataset(splits.validation.sorted_by_length(), preprocessor,
                                                  config.eval_batch_size, config.length_bucketing)
    throughput = Throughput(len(splits.train))
    phase(f"fine-tuning for {config.epochs} epoch(s) of {steps_per_epoch} steps")
    history = classifier.fit(
        train_data, validation_data=validation_data, epochs=config.epochs, shuffle=False,
        callbacks=make_callbacks(config, run_dir, validation_data is not None, throughput),
    )
    best_weights = os.path.join(run_dir, rundir.BEST_WEIGHTS)
    if os.path.exists(best_weights):
        classifier.load_weights(best_weights)
    return FineTuned(classifier, preprocessor, history, throughput, strategy)


def train_and_evaluate(config):
    """Fine-tune, evaluate on the test split and save; returns what metrics.json holds.

    Every input is checked (preset, data, output directory) before the output
    directory is touched, so a refused run destroys nothing.
    """
    started = time.perf_counter()
    run_dir = config.output_dir or rundir.default_run_directory()
    rundir.check_run_directory(run_dir, config.overwrite)
    phase(f"resolving preset {config.preset}")
    preset_path = resolve_preset(config.preset)
    phase("reading data")
    splits = data.load_splits(config)
    phase(f"{len(splits.train)} training, {len(splits.validation)} validation, {len(splits.test)} test "
          f"examples; classes: {', '.join(splits.class_names)}")
    tuned = fine_tune(config, preset_path, splits, run_dir)
    classifier, preprocessor, history = tuned.classifier, tuned.preprocessor, tuned.history

    phase(f"evaluating on {len(splits.test)} test examples")
    test = splits.test.sorted_by_length()
    test_data = data.evaluation_dataset(test, preprocessor, config.eval_batch_size, config.length_bucketing)
    probabilities, eval_seconds = evaluation.predict_probabilities(classifier, test_data)
    test_metrics = evaluation.classification_metrics(test.labels, probabilities, splits.class_names)
    plots.save_confusion_matrix(test_metrics["confusion_matrix"], splits.class_names,
                                os.path.join(run_dir, rundir.CONFUSION_MATRIX_PNG))

    phase("saving model.keras (tokenizer included)")
    attach_preprocessor(classifier, preprocessor)
    save_classifier(classifier, os.path.join(run_dir, rundir.MODEL_FILE))

    metrics = {
        "test": test_metrics,
        "validation": {name[4:]: values[-1] for name, values in history.history.items() if name.startswith("val_")},
        "class_names": splits.class_names,
        "examples": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "epochs_run": len(history.epoch),
        "timing": {
            "train_seconds": tuned.throughput.train_seconds,
            "train_sequences_per_second": tuned.throughput.sequences_per_second,
            "eval_seconds": eval_seconds,
            "eval_sequences_per_second": len(test) / eval_seconds,
            "total_seconds": time.perf_counter() - started,
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "replicas": tuned.strategy.num_replicas_in_sync,
    }
    rundir.write_json(os.path.join(run_dir, rundir.METRICS_FILE), metrics)
    rundir.point_latest_at(run_dir)
    phase(f"test metrics ({len(test)} examples), written to {os.path.join(run_dir, rundir.METRICS_FILE)}:\n"
          + evaluation.format_metrics_table(test_metrics))
    timing = metrics["timing"]
    phase(f"train {timing['train_sequences_per_second']:.1f} seq/s, eval {timing['eval_sequences_per_second']:.1f} "
          f"seq/s, total {timing['total_seconds'] / 60:.1f} min, peak memory {metrics['peak_rss_mib']:.0f} MiB")
    return metrics
