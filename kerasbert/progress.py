"""Progress a run shows while it works: phase lines, training throughput, and
an estimate of how long the whole run takes on this machine.

Example:

>>> estimate = TimeEstimate(remaining_steps=100, batch_size=16, evaluated_sequences=4800)
>>> estimate.from_step_seconds(0.5)["train_seconds"]
50.0
"""

import sys
import time

import keras

# Evaluation runs about this many times more sequences per second than
# training: a forward pass is about a third of a training step's arithmetic
# (the backward pass is twice the forward), and bf16 speeds the forward pass up
# more than a training step, which also keeps float32 variables and gradients.
# Measured at length 256 (benchmarks/default_run.md): float32 2.7-3.4x on a Zen 3
# (before the fused layers), 3.5x on a Zen 5 capped to AVX2, 4.4x uncapped; bf16
# 4.5x on a Zen 4, 6.0x on a Zen 5. Each value is about the lowest seen.
EVALUATION_SPEEDUP = {"float32": 3.0, "mixed_bfloat16": 4.5}


def phase(message):
    print(f"[kerasbert {time.strftime('%H:%M:%S')}] {message}", flush=True)


def keras_verbosity():
    """Keras' progress bar on a terminal; one line per epoch where output goes to a file or pipe,
    which the bar would fill with its escape sequences (`ProgressLines` says the rest there)."""
    return "auto" if sys.stdout.isatty() else 2


class CountProgress:
    """Progress through `total` items (say, texts predicted): Keras' bar on a terminal; where
    output goes to a file or pipe, a plain phase line every `every_seconds` and one at the end.

    >>> progress = CountProgress(3, "texts predicted", every_seconds=3600)
    >>> progress.add(3)  # doctest: +ELLIPSIS
    [kerasbert ...] 3 of 3 texts predicted in 0.0 s
    """

    def __init__(self, total, what, every_seconds=60):
        self.total, self.what, self.every_seconds, self.done = total, what, every_seconds, 0
        self.started = self.shown = time.perf_counter()
        self.bar = keras.utils.Progbar(total, unit_name="text") if sys.stdout.isatty() else None

    def add(self, count):
        self.done += count
        if self.bar:
            self.bar.add(count)
            return
        now = time.perf_counter()
        if self.done >= self.total or now - self.shown >= self.every_seconds:
            phase(f"{self.done} of {self.total} {self.what} in {now - self.started:.1f} s")
            self.shown = now


class ProgressLines(keras.callbacks.Callback):
    """Where there is no terminal, a plain phase line every `every_seconds` of training: step,
    running loss and accuracy, and the time left in the epoch.

    >>> ProgressLines(every_seconds=60).describe(100, 400, {"loss": 0.5, "accuracy": 0.75}, 30.0)
    'step 100/400: loss 0.5000, accuracy 0.7500; epoch done in about 1.5 min'
    """

    def __init__(self, every_seconds=60):
        super().__init__()
        self.every_seconds = every_seconds

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.last >= self.every_seconds:
            self.last = now
            phase(self.describe(batch + 1, self.params.get("steps"), logs or {}, now - self.started))

    @staticmethod
    def describe(steps, total, logs, seconds):
        metrics = ", ".join(f"{name} {float(value):.4f}" for name, value in logs.items() if name in ("loss", "accuracy"))
        line = f"step {steps}/{total or '?'}: {metrics}"
        if total:
            line += f"; epoch done in about {minutes(seconds / steps * (total - steps))}"
        return line


class Throughput(keras.callbacks.Callback):
    """Training sequences/s, not counting validation passes; added to the epoch logs.

    A resumed run starts from the totals its backup recorded, and from the
    batches of its first epoch that were already trained (`skipped_batches`).
    """

    def __init__(self, batch_size, sequences_per_epoch, seconds=0.0, sequences=0, skipped_batches=0):
        super().__init__()
        self.batch_size, self.sequences_per_epoch = batch_size, sequences_per_epoch
        self.train_seconds, self.trained_sequences = seconds, sequences
        self.skipped_batches = skipped_batches
        self.epoch_sequences, self.steps, self.started, self.paused = 0, 0, None, None
        self.first_step_ended = None  # time.perf_counter() at the end of this process's first step

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.paused, self.steps = time.perf_counter(), None, 0
        skipped = min(self.skipped_batches * self.batch_size, self.sequences_per_epoch)
        self.epoch_sequences, self.skipped_batches = self.sequences_per_epoch - skipped, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.first_step_ended = self.first_step_ended or time.perf_counter()

    def on_test_begin(self, logs=None):
        self.paused = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self.paused or time.perf_counter()) - self.started
        sequences = min(self.steps * self.batch_size, self.epoch_sequences)
        self.train_seconds += seconds
        self.trained_sequences += sequences
        self.started = None
        if logs is not None:
            logs["sequences_per_second"] = sequences / seconds

    def totals_so_far(self):
        """(seconds, sequences) trained so far, the current epoch's part included."""
        if self.started is None:
            return self.train_seconds, self.trained_sequences
        return (self.train_seconds + time.perf_counter() - self.started,
                self.trained_sequences + min(self.steps * self.batch_size, self.epoch_sequences))

    @property
    def sequences_per_second(self):
        return self.trained_sequences / max(self.train_seconds, 1e-9)


class TimeEstimate(keras.callbacks.Callback):
    """Once the first training steps are timed, say how long the run will take here.

    Times `measured_steps` steps after `warmup_steps` (the first steps trace
    the graph), prints a phase line with the fine-tuning, evaluation and total
    time, and keeps it in `estimate` (metrics.json records it beside the real
    times). `evaluated_sequences` counts every validation pass and the test
    set; `run_started` is the `time.perf_counter()` at which the run began;
    `policy` is the Keras dtype policy the model computes in. With a length
    warm-up, the first `short_steps` steps are short ones: a full-length step is
    estimated at `full_step_cost` of them, then timed again once they are over.
    """

    def __init__(self, remaining_steps, batch_size, evaluated_sequences, run_started=None,
                 warmup_steps=3, measured_steps=10, policy="float32", work="fine-tuning", short_steps=0,
                 full_step_cost=1.0):
        super().__init__()
        self.remaining_steps, self.batch_size, self.evaluated_sequences = remaining_steps, batch_size, evaluated_sequences
        self.evaluation_speedup = EVALUATION_SPEEDUP.get(policy, EVALUATION_SPEEDUP["float32"])
        self.run_started = time.perf_counter() if run_started is None else run_started
        # A short run is estimated from the steps it has (none, if only warm-up steps).
        self.warmup_steps, self.measured_steps = warmup_steps, max(1, min(measured_steps, remaining_steps - warmup_steps))
        self.steps, self.started, self.estimate, self.work = 0, None, None, work
        self.short_steps, self.full_step_cost = min(short_steps, remaining_steps), full_step_cost
        # Where the timing windows start: the run's first steps, and the first full-length ones.
        self.window_starts = [warmup_steps]
        if self.short_steps >= warmup_steps + self.measured_steps:
            self.window_starts.append(self.short_steps + warmup_steps)

    def on_train_batch_begin(self, batch, logs=None):
        if self.steps in self.window_starts:
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.started is not None and self.steps - self.measured_steps in self.window_starts:
            step_seconds = (time.perf_counter() - self.started) / self.measured_steps
            self.estimate, self.started = self.from_step_seconds(step_seconds, self.remaining_steps - self.steps), None
            if sys.stdout.isatty():
                print()  # off the progress bar's line
            again = ", again at full length" if self.steps - self.measured_steps > self.warmup_steps else ""
            phase(describe_estimate(self.estimate, self.work).replace("machine:", f"machine{again}:", 1))

    def from_step_seconds(self, step_seconds, steps_left=None):
        """The estimate, in seconds, if the `steps_left` (default: all) steps take `step_seconds`
        each (short ones, while the length warm-up lasts: full-length ones `full_step_cost` times that)."""
        steps_left = self.remaining_steps if steps_left is None else steps_left
        short_left = max(0, min(steps_left, self.short_steps - (self.remaining_steps - steps_left)))
        full_step_seconds = step_seconds * (self.full_step_cost if short_left else 1.0)
        train = short_left * step_seconds + (steps_left - short_left) * full_step_seconds
        evaluation = self.evaluated_sequences * full_step_seconds / self.batch_size / self.evaluation_speedup
        elapsed = time.perf_counter() - self.run_started
        return {"step_seconds": step_seconds, "remaining_steps": steps_left, "short_steps": short_left,
                "full_step_seconds": full_step_seconds, "train_seconds": train, "evaluation_seconds": evaluation,
                "elapsed_seconds": elapsed, "total_seconds": elapsed + train + evaluation}


def describe_estimate(estimate, work="fine-tuning"):
    finish = time.strftime("%H:%M", time.localtime(time.time() + estimate["train_seconds"]
                                                    + estimate["evaluation_seconds"]))
    return (f"estimated time on this machine: {work} {minutes(estimate['train_seconds'])} more "
            f"({estimate['remaining_steps']} steps at {steps_at(estimate)}), evaluation "
            f"{minutes(estimate['evaluation_seconds'])}; whole run about {minutes(estimate['total_seconds'])}, "
            f"done about {finish}")


def steps_at(estimate):
    if not estimate.get("short_steps"):
        return f"{estimate['step_seconds']:.2f} s"
    return (f"{estimate['step_seconds']:.2f} s while {estimate['short_steps']} are short, then about "
            f"{estimate['full_step_seconds']:.2f} s")


def minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
