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
import shutil
import time

import keras
import tensorflow as tf

from kerasbert import data, distribution, monitoring, preprocessing, streaming
from kerasbert.errors import KerasbertError
from kerasbert.hardware import choose_precision, detect_hardware
from kerasbert.job import faults, resume, rundir
from kerasbert.job.results import evaluate_and_save
from kerasbert.model import TextClassifier
from kerasbert.optimizers import adamw_with_warmup
from kerasbert.presets import resolve_preset
from kerasbert.progress import ProgressLines, Throughput, TimeEstimate, keras_verbosity, phase
from kerasbert.splits import load_splits, load_streamed_splits, should_stream
from kerasbert.weight_files import load_weights


def monitored_metric(splits):
    return "val_accuracy" if splits.sizes()["validation"] else "accuracy"


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
    discarded_backup: bool = False  # this worker's backup is of a step some other worker does not hold

    def __post_init__(self):
        self.run_dir = rundir.RunDirectory(self.run_dir)
        self.strategy = self.strategy or tf.distribute.get_strategy()
        self.precision = self.precision or choose_precision(self.config.mixed_precision,
                                                            detect_hardware(self.strategy))
        self.backup = resume.Backup(self.run_dir.backup_dir)

    def build(self, make_model):
        """`make_model()` under the strategy, seeded, and the state of the backup restored into it
        (None for a fresh run). Several workers restore the newest step all of them hold."""
        keras.utils.set_random_seed(self.config.seed)
        held = self.backup.held_steps() if self.backup.exists() and not self.config.overwrite else []
        if self.workers > 1:
            every = distribution.values_of_every_replica(self.strategy)((held + [-1, -1])[:2])
            common = set(every[0]).intersection(*map(set, every[1:])) - {-1}
            self.discarded_backup = bool(held) and not common
            held = [int(max(common))] if common else []
        with self.strategy.scope():
            model = make_model()
            return model, self.backup.restore(model, held[0]) if held else None

    def start(self, state, steps_per_epoch, replace_directory, on_fresh_start=None):
        """The `RunState` to go on from: the backup's, or a fresh one in a new run directory holding
        `config.json` (then `on_fresh_start()`)."""
        if state:
            phase(f"resuming from {self.backup.folder}: epoch {state.epoch + 1}, step {state.step_in_epoch} of "
                  f"{steps_per_epoch} (global step {state.global_step})")
        else:
            state = resume.RunState()
            self.run_dir.create(replace_directory or self.discarded_backup)
            self.config.save(self.run_dir.config_file)
            if on_fresh_start:
                on_fresh_start()
        # The parent folder, not the run's logs/: TensorBoard's HParams tab only finds a run's metrics that way.
        phase(f"run directory {self.run_dir}; TensorBoard: tensorboard --logdir "
              f"{os.path.dirname(os.path.abspath(self.run_dir))}")
        return state

    def fit(self, model, state, batches, examples, validation_data=None, evaluated=0, callbacks=(),
            monitor="val_accuracy", patience=0, profile_batch=0, steps_per_epoch=None, length_warmup=None):
        """`model.fit` until `config.epochs` on `batches(first_epoch, skip_batches)` of `examples`, on
        from `state` (a fresh `RunState`, or a backup's: an epoch a kill cut short is finished by a
        fit of its own), with backups, throughput, NaN check, TensorBoard, `callbacks`, a time estimate
        over the steps left and `evaluated` sequences, plain progress lines without a terminal. After
        SIGTERM it raises `Preempted`; when the loss became NaN, a one-line `KerasbertError`. Returns
        the `Throughput` and `TimeEstimate` callbacks. An epoch is `steps_per_epoch` batches (default:
        `examples` / the batch size); the estimate knows the steps a `length_warmup` shortens."""
        config = self.config
        steps_per_epoch = steps_per_epoch or math.ceil(examples / config.batch_size)
        throughput = Throughput(config.batch_size, examples, state.train_seconds, state.trained_sequences,
                                skipped_batches=state.step_in_epoch)
        training_backup = resume.TrainingBackup(self.backup, state, throughput, config.backup_every_steps, monitor,
                                                patience, self.notice,
                                                distribution.any_worker(self.strategy) if self.workers > 1 else bool)
        short_steps, full_cost = (0, 1.0) if length_warmup is None else (
            length_warmup.steps - state.global_step, config.max_seq_length / length_warmup.length)
        time_estimate = TimeEstimate(config.epochs * steps_per_epoch - state.global_step, config.batch_size,
                                     evaluated, self.started, policy=self.precision.policy, work=self.work,
                                     short_steps=short_steps, full_step_cost=full_cost)
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
    steps_per_epoch: int


def fine_tune(job, splits):
    """Build the classifier under the job's strategy, fit it (one `fit` for all epochs) with
    backups, and restore its best-validation weights.

    If the run directory holds a backup, training resumes from it: same epoch and
    step, same optimizer state. After SIGTERM it writes a backup at the next step, on all
    workers alike, and raises `Preempted`.
    """
    config, run_dir = job.config, job.run_dir
    steps_per_epoch, sizes = splits.batches_per_epoch(config.batch_size), splits.sizes()
    steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch or steps_per_epoch)

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
    callbacks = [resume.BestWeights(run_dir.best_weights, monitored_metric(splits), state.best)]
    validation_data = splits.validation_batches(preprocessor, config.eval_batch_size, config.length_bucketing)
    if validation_data is not None:
        sample = splits.validation_sample(monitoring.MISCLASSIFIED_SAMPLE, config.seed)
        batches = data.evaluation_dataset(sample, preprocessor, config.eval_batch_size, config.length_bucketing)
        callbacks.append(monitoring.MisclassifiedReviews(os.path.join(run_dir.log_dir, "validation"), sample,
                                                         batches, splits.class_names))

    short_length = config.max_seq_length // 2 if config.length_warmup == -1 else config.length_warmup
    length_warmup = preprocessing.LengthWarmup.of_run(
        short_length, config.length_warmup_fraction, config.epochs, steps_per_epoch) if short_length else None

    def training_batches(first_epoch, skip_batches):
        return splits.training_batches(preprocessor, config.batch_size, config.seed, config.length_bucketing,
                                       first_epoch, skip_batches, steps_per_epoch, length_warmup)

    evaluated = sizes["validation"] * (config.epochs - state.epoch) + sizes["test"]
    trained = min(sizes["train"], steps_per_epoch * config.batch_size)
    throughput, time_estimate = job.fit(classifier, state, training_batches, trained, validation_data,
                                        evaluated, callbacks, monitored_metric(splits),
                                        config.early_stopping_patience, config.profile_range(), steps_per_epoch,
                                        length_warmup)
    if state.epoch < config.epochs:
        phase(f"early stop: no improvement for {state.epochs_since_best} epoch(s)")
    if os.path.exists(run_dir.best_weights):
        load_weights(classifier, run_dir.best_weights)
    history = {name: [epoch[name] for epoch in state.history] for name in state.history[0]}
    return FineTuned(classifier, history, throughput, time_estimate, job.strategy, state, steps_per_epoch)


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


def announce_machine(strategy, mixed_precision):
    """This machine's `Hardware` and the precision `mixed_precision` makes of it, both printed."""
    hardware = detect_hardware(strategy)
    precision = choose_precision(mixed_precision, hardware)
    phase(f"on {hardware.describe()}")
    if hardware.onednn_advice():
        phase(hardware.onednn_advice())
    phase(f"compute precision {precision.name} ({precision.policy}): {precision.reason}")
    return hardware, precision


def run_on(strategy, config, task, notice, started):
    """`train_and_evaluate` once the strategy is made."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise KerasbertError(f"--batch-size {config.batch_size} does not divide over {replicas} replicas "
                             f"(use a multiple of {replicas})")
    hardware, precision = announce_machine(strategy, config.mixed_precision)
    run_dir = rundir.choose_run_directory(config, task)
    if config.overwrite and os.path.isdir(run_dir.backup_dir):
        phase(f"--overwrite: discarding the backup in {run_dir} and starting over")
    phase(f"resolving preset {config.preset}")
    resolve_preset(config.preset)  # checked before the data is read
    splits = read_splits(config, strategy, task)
    sizes = splits.sizes()
    phase(f"{sizes['train']} training, {sizes['validation']} validation, {sizes['test']} test "
          f"examples; classes: {', '.join(splits.class_names)}")
    with run_dir.locked(), faults.ended_clearly(run_dir, task):
        tuned = fine_tune(ResumableJob(config, run_dir, strategy, precision, notice, started, task.workers), splits)
        if not task.is_chief:
            shutil.rmtree(run_dir, ignore_errors=True)
            phase(f"{task.name} done; the chief writes the outputs")
            return None
        return evaluate_and_save(config, run_dir, splits, tuned, task, hardware, precision, started)


def read_splits(config, strategy, task):
    """The run's splits: in memory, or streamed from their files (`splits.should_stream`; each worker its share)."""
    if should_stream(config.streaming, config.train_file):
        phase(f"streaming the data: counting the rows of {config.train_file or config.dataset} in one pass")
        shard = streaming.Shard(task.rank, task.workers, strategy) if task.workers > 1 else None
        return load_streamed_splits(**config.streamed_data_options(), shard=shard)
    phase("reading data")
    return load_splits(**config.data_options())
