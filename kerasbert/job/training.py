"""The resumable job every training command runs (`ResumableJob`: build, start or resume the run
directory, `fit` with backups and the standard callbacks) and the train-evaluate-save job of `train.py`.

Example (half a minute on a 2-core CPU: 64 reviews of 32 tokens, tested on 32):

>>> from kerasbert.job.config import TrainConfig
>>> metrics = train_and_evaluate(TrainConfig(output_dir="runs/smoke", data_dir="../shared/data/tensorflow_datasets",
...                                          max_train_examples=64, max_test_examples=32, max_seq_length=32))
[kerasbert ...] on ...
>>> sorted(metrics["test"])[:3]
['accuracy', 'by_length', 'confusion_matrix']
"""

import dataclasses
import math
import os
import resource
import shutil
import time

import keras
import tensorflow as tf

from kerasbert import data, distribution, evaluation, files, monitoring
from kerasbert.errors import KerasbertError
from kerasbert.hardware import choose_precision, detect_hardware
from kerasbert.inference import inference_copy
from kerasbert.job import faults, plots, report, resume, rundir
from kerasbert.model import TextClassifier, save_classifier
from kerasbert.optimizers import adamw_with_warmup
from kerasbert.presets import resolve_preset
from kerasbert.progress import ProgressLines, Throughput, TimeEstimate, keras_verbosity, minutes, phase


def monitored_metric(splits):
    return "val_accuracy" if len(splits.validation) else "accuracy"


@dataclasses.dataclass
class ResumableJob:
    """The skeleton every job of `kerasbert.job` that trains runs (fine-tuning, adaptation): its
    options, run directory, strategy (default: the one in scope), compute precision (default:
    what `config.mixed_precision` makes of this machine), SIGTERM notice, start time and workers.
    `build` makes the model under the strategy and restores a backup into it, `start` creates or
    resumes the run directory, `fit` runs `fit` resumably with the standard callbacks."""

    config: object
    run_dir: str
    strategy: object = None
    precision: object = None
    notice: object = None  # a `faults.TerminationNotice`: after SIGTERM, a backup and `Preempted`
    started: float = dataclasses.field(default_factory=time.perf_counter)
    workers: int = 1
    work: str = "fine-tuning"

    def __post_init__(self):
        self.run_dir = rundir.RunDirectory(self.run_dir)
        self.strategy = self.strategy or tf.distribute.get_strategy()
        self.precision = self.precision or choose_precision(self.config.mixed_precision,
                                                            detect_hardware(self.strategy))
        self.backup = resume.Backup(self.run_dir.backup_dir)

    def build(self, make_model):
        """`make_model()` under the strategy, seeded, and the state of the backup restored into it
        (None for a fresh run)."""
        keras.utils.set_random_seed(self.config.seed)
        with self.strategy.scope():
            model = make_model()
            return model, self.backup.restore(model) if self.backup.exists() and not self.config.overwrite else None

    def start(self, state, steps_per_epoch, replace_directory, on_fresh_start=None):
        """The `RunState` to go on from: the backup's, or a fresh one in a new run directory holding
        `config.json` (then `on_fresh_start()`)."""
        if state:
            phase(f"resuming from {self.backup.folder}: epoch {state.epoch + 1}, step {state.step_in_epoch} of "
                  f"{steps_per_epoch} (global step {state.global_step})")
        else:
            state = resume.RunState()
            self.run_dir.create(replace_directory)
            self.config.save(self.run_dir.config_file)
            if on_fresh_start:
                on_fresh_start()
        # The parent folder, not the run's logs/: TensorBoard's HParams tab only finds a run's metrics that way.
        phase(f"run directory {self.run_dir}; TensorBoard: tensorboard --logdir "
              f"{os.path.dirname(os.path.abspath(self.run_dir))}")
        return state

    def fit(self, model, state, batches, examples, validation_data=None, evaluated=0, callbacks=(),
            monitor="val_accuracy", patience=0, profile_batch=0):
        """`model.fit` until `config.epochs` on `batches(first_epoch, skip_batches)` of `examples`, on
        from `state` (a fresh `RunState`, or a backup's: an epoch a kill cut short is finished by a
        fit of its own), with backups, throughput, NaN check, TensorBoard, `callbacks`, a time estimate
        over the steps left and `evaluated` sequences, plain progress lines without a terminal. After
        SIGTERM it raises `Preempted`; when the loss became NaN, a one-line `KerasbertError`. Returns
        the `Throughput` and `TimeEstimate` callbacks."""
        config = self.config
        steps_per_epoch = math.ceil(examples / config.batch_size)
        throughput = Throughput(config.batch_size, examples, state.train_seconds, state.trained_sequences,
                                skipped_batches=state.step_in_epoch)
        training_backup = resume.TrainingBackup(self.backup, state, throughput, config.backup_every_steps, monitor,
                                                patience, self.notice,
                                                distribution.any_worker(self.strategy) if self.workers > 1 else bool)
        time_estimate = TimeEstimate(config.epochs * steps_per_epoch - state.global_step, config.batch_size,
                                     evaluated, self.started, policy=self.precision.policy, work=self.work)
        tensorboard = monitoring.TrainingTensorBoard(self.run_dir.log_dir, config.batch_size,
                                                     config.log_every_steps, profile_batch)
        # The backup last: it records the epoch's logs once every other callback has added to them.
        callbacks = [throughput, keras.callbacks.TerminateOnNaN(), tensorboard, *callbacks, time_estimate,
                     training_backup]
        if keras_verbosity() == 2:
            callbacks.insert(0, ProgressLines())
        phase(f"{self.work} for {config.epochs} epoch(s) of {steps_per_epoch} steps on "
              f"{self.strategy.num_replicas_in_sync} replica(s) ({type(self.strategy).__name__})")
        cut_short = [(state.epoch + 1, state.step_in_epoch)] if state.step_in_epoch else []
        for until, skip_batches in cut_short + [(config.epochs, 0)]:
            if state.epoch >= until or state.out_of_patience(patience):
                continue
            with faults.training(self.notice):
                model.fit(batches(state.epoch, skip_batches), validation_data=validation_data,
                          initial_epoch=state.epoch, epochs=until, callbacks=callbacks, verbose=keras_verbosity())
            if training_backup.preempted_at is not None or (self.notice and self.notice.received):
                raise faults.Preempted("stopped by SIGTERM (a preemption notice), with a backup of the last step")
            if training_backup.diverged:
                raise KerasbertError(f"training stopped in epoch {state.epoch + 1}: the loss became NaN or infinite "
                                     "(try a lower --learning-rate, or --mixed-precision off)")
        return throughput, time_estimate


@dataclasses.dataclass
class FineTuned:
    classifier: keras.Model
    history: dict  # metric name -> one value per epoch
    throughput: Throughput
    time_estimate: TimeEstimate
    strategy: tf.distribute.Strategy
    state: resume.RunState  # steps taken, best epoch, and how the run went


def fine_tune(job, splits):
    """Build the classifier under the job's strategy, fit it (one `fit` for all epochs) with
    backups, and restore its best-validation weights.

    If the run directory holds a backup, training resumes from it: same epoch and
    step, same optimizer state. After SIGTERM it writes a backup at the next step, on all
    workers alike, and raises `Preempted`.
    """
    config, run_dir = job.config, job.run_dir
    steps_per_epoch = math.ceil(len(splits.train) / config.batch_size)

    def classifier_compiled():
        classifier = TextClassifier.from_preset(
            config.preset, class_names=splits.class_names, sequence_length=config.max_seq_length,
            truncation=config.truncation, dropout=config.dropout, precision=job.precision.name,
            backbone_dropout=None if config.backbone_dropout < 0 else config.backbone_dropout,
            fused_layers=config.fused_layers, trim_last_layer=config.trim_last_layer, shuffle_seed=config.seed)
        # The whole run's length, fixed: a resumed run fits its epochs in parts. Keras wraps the
        # optimizer for loss scaling itself when the model computes in float16.
        classifier.compile(optimizer=adamw_with_warmup(config.learning_rate, config.epochs * steps_per_epoch,
                                                       config.warmup_ratio, config.weight_decay, config.clip_norm,
                                                       layer_decay=config.layer_decay),
                           jit_compile=config.jit_compile)
        return classifier

    classifier, state = job.build(classifier_compiled)
    preprocessor = classifier.preprocessor
    faults.check_room_to_train(classifier, run_dir)
    state = job.start(state, steps_per_epoch, config.overwrite or run_dir.left_before_first_backup(config),
                      lambda: monitoring.log_hyperparameters(run_dir.log_dir, config.to_dict(),
                                                             os.path.basename(run_dir)))
    validation_data, callbacks = None, [resume.BestWeights(run_dir.best_weights, monitored_metric(splits), state.best)]
    if len(splits.validation):
        validation_data = data.evaluation_dataset(splits.validation.sorted_by_length(), preprocessor,
                                                  config.eval_batch_size, config.length_bucketing)
        sample = splits.validation.sample(monitoring.MISCLASSIFIED_SAMPLE, config.seed).sorted_by_length()
        batches = data.evaluation_dataset(sample, preprocessor, config.eval_batch_size, config.length_bucketing)
        callbacks.append(monitoring.MisclassifiedReviews(os.path.join(run_dir.log_dir, "validation"), sample,
                                                         batches, splits.class_names))

    def training_batches(first_epoch, skip_batches):
        return data.training_dataset(splits.train, preprocessor, config.batch_size, config.seed,
                                     config.length_bucketing, first_epoch, skip_batches)

    evaluated = len(splits.validation) * (config.epochs - state.epoch) + len(splits.test)
    throughput, time_estimate = job.fit(classifier, state, training_batches, len(splits.train), validation_data,
                                        evaluated, callbacks, monitored_metric(splits),
                                        config.early_stopping_patience, config.profile_range())
    if state.epoch < config.epochs:
        phase(f"early stop: no improvement for {state.epochs_since_best} epoch(s)")
    if os.path.exists(run_dir.best_weights):
        classifier.load_weights(run_dir.best_weights)
    history = {name: [epoch[name] for epoch in state.history] for name in state.history[0]}
    return FineTuned(classifier, history, throughput, time_estimate, job.strategy, state)


def train_and_evaluate(config):
    """Fine-tune, evaluate on the test split and save; returns what metrics.json holds.

    Every input is checked (strategy, cluster, preset, data, output directory)
    before the output directory is touched, so a refused run destroys nothing.
    In a multi-worker cluster every worker trains, and the chief alone
    evaluates and keeps outputs; the other workers' directories are removed.
    """
    started = time.perf_counter()
    task = distribution.cluster_task()
    with faults.TerminationNotice() as notice:
        if task.workers > 1:
            phase(f"{task.name}: waiting up to {config.peer_timeout or 'forever'} s for the other workers of TF_CONFIG")
        strategy = distribution.make_strategy(config.strategy, config.logical_cpu_devices,
                                              peer_timeout=config.peer_timeout)
        notice.listen()  # a multi-worker strategy's runtime takes SIGTERM for itself: take it back
        return run_on(strategy, config, task, notice, started)


def run_on(strategy, config, task, notice, started):
    """`train_and_evaluate` once the strategy is made."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise KerasbertError(f"--batch-size {config.batch_size} does not divide over {replicas} replicas "
                             f"(use a multiple of {replicas})")
    hardware = detect_hardware(strategy)
    precision = choose_precision(config.mixed_precision, hardware)
    phase(f"on {hardware.describe()}")
    phase(f"compute precision {precision.name} ({precision.policy}): {precision.reason}")
    run_dir = rundir.choose_run_directory(config, task)
    if config.overwrite and os.path.isdir(run_dir.backup_dir):
        phase(f"--overwrite: discarding the backup in {run_dir} and starting over")
    phase(f"resolving preset {config.preset}")
    resolve_preset(config.preset)  # checked before the data is read
    phase("reading data")
    splits = data.load_splits(**config.data_options())
    phase(f"{len(splits.train)} training, {len(splits.validation)} validation, {len(splits.test)} test "
          f"examples; classes: {', '.join(splits.class_names)}")
    with run_dir.locked(), faults.ended_clearly(run_dir, task):
        tuned = fine_tune(ResumableJob(config, run_dir, strategy, precision, notice, started, task.workers), splits)
        if not task.is_chief:
            shutil.rmtree(run_dir, ignore_errors=True)
            phase(f"{task.name} done; the chief writes the outputs")
            return None
        return evaluate_and_save(config, run_dir, splits, tuned, task, hardware, precision, started)


def evaluate_and_save(config, run_dir, splits, tuned, task, hardware, precision, started):
    """The end of a run: test metrics, pictures, model.keras, metrics.json, report; then the backup goes."""
    classifier, preprocessor = tuned.classifier, tuned.classifier.preprocessor

    phase(f"evaluating on {len(splits.test)} test examples")
    test = splits.test.sorted_by_length()
    test_data = data.evaluation_dataset(test, preprocessor, config.eval_batch_size, config.length_bucketing)
    # Across workers, predict would need every worker; the chief predicts alone on a local copy.
    evaluated = inference_copy(classifier) if task.workers > 1 else classifier
    probabilities, eval_seconds = evaluation.predict_probabilities(evaluated, test_data)
    test_metrics = evaluation.classification_metrics(test.labels, probabilities, splits.class_names)
    test_metrics["by_length"] = evaluation.accuracy_by_length(test.texts, test.labels, probabilities)
    images = {"confusion_matrix": run_dir.file(rundir.CONFUSION_MATRIX_PNG),
              "precision_recall": run_dir.file(rundir.PRECISION_RECALL_PNG)}
    plots.save_confusion_matrix(test_metrics["confusion_matrix"], splits.class_names, images["confusion_matrix"])
    plots.save_precision_recall(test.labels, probabilities, splits.class_names, images["precision_recall"])
    monitoring.log_test_results(run_dir.log_dir, test.labels, probabilities, test_metrics,
                                splits.class_names, tuned.state.global_step, images)

    phase("saving model.keras (tokenizer and optimizer state included)")
    save_classifier(evaluated, run_dir.model_file)

    metrics = {
        "test": test_metrics,
        "validation": {name[4:]: values[-1] for name, values in tuned.history.items() if name.startswith("val_")},
        "class_names": splits.class_names,
        "examples": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "epochs_run": len(tuned.state.history),
        "optimizer_steps": tuned.state.global_step,
        "timing": {
            "train_seconds": tuned.throughput.train_seconds,
            "train_sequences_per_second": tuned.throughput.sequences_per_second,
            "eval_seconds": eval_seconds,
            "eval_sequences_per_second": len(test) / eval_seconds,
            "total_seconds": time.perf_counter() - started,
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "strategy": type(tuned.strategy).__name__,
        "replicas": tuned.strategy.num_replicas_in_sync,
        "workers": task.workers,
        "hardware": hardware.to_dict(),
        "precision": {"requested": config.mixed_precision, "resolved": precision.name, "policy": precision.policy,
                      "reason": precision.reason},
        "estimate": tuned.time_estimate.estimate,
    }
    files.write_json(run_dir.metrics_file, metrics)
    report.write_report(run_dir)
    resume.Backup(run_dir.backup_dir).delete()  # only now: the run is complete
    latest = run_dir.point_latest_here()
    phase(f"test metrics ({len(test)} examples), written to {run_dir.metrics_file}:\n"
          + evaluation.format_metrics_table(test_metrics))
    phase(f"report with pictures: {run_dir.report_file}"
          + (f"; {latest} links to this run" if latest else ""))
    timing = metrics["timing"]
    estimated = f" (estimated {minutes(metrics['estimate']['total_seconds'])})" if metrics["estimate"] else ""
    phase(f"train {timing['train_sequences_per_second']:.1f} seq/s, eval {timing['eval_sequences_per_second']:.1f} "
          f"seq/s, total {minutes(timing['total_seconds'])}{estimated}, peak memory {metrics['peak_rss_mib']:.0f} MiB")
    return metrics
