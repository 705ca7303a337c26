"""The optimizer fine-tuning uses, as plain Keras objects: AdamW whose learning
rate warms up linearly and then decays linearly to zero, with global-norm
clipping, no weight decay on LayerNorm and biases, optionally a learning rate
that shrinks layer by layer towards the embeddings, the gradient norm kept for
TensorBoard, and each variable's weight decay and Adam step as one XLA kernel.

The schedule's length is the length of training: give `total_steps`, or leave
it out and `TextClassifier.fit` sets it from its `epochs` and the data the first
time it runs (the schedule keeps it, also through `save` and `load_model`).

Example:

>>> optimizer = adamw_with_warmup(5e-5)
>>> learn_training_length(optimizer, 1000)
>>> round(float(optimizer.learning_rate), 8)  # step 0 of the warm-up
0.0
"""

import re
import warnings

import keras
import tensorflow as tf

# Variables that get no weight decay: LayerNorm scales/offsets and biases.
NO_DECAY_PATTERN = ["bias", "gamma", "beta"]
# Where a KerasHub BERT variable sits: embeddings at the bottom, then its transformer layers.
TRANSFORMER_LAYER = re.compile(r"(?:^|/)transformer_layer_(\d+)/")
EMBEDDING = re.compile(r"(?:^|/)(?:token_embedding|position_embedding|segment_embedding|embeddings_layer_norm)/")


def adamw_with_warmup(learning_rate=5e-5, total_steps=None, warmup_ratio=0.1, weight_decay=0.01, clip_norm=1.0,
                      loss_scaling=False, layer_decay=1.0):
    """`GradientNormAdamW` on a `WarmupLinearDecay` schedule over `total_steps` optimizer steps
    (None: learned by `TextClassifier.fit`; `clip_norm` 0: no clipping; `layer_decay` below 1:
    layer-wise learning rates); wrapped for loss scaling (float16 training) if `loss_scaling`."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, warmup_ratio)
    optimizer = GradientNormAdamW(learning_rate=schedule, weight_decay=weight_decay,
                                  global_clipnorm=clip_norm or None, layer_decay=layer_decay)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def learn_training_length(optimizer, total_steps):
    """Give a `WarmupLinearDecay` that does not know its length yet `total_steps` (None: unknown)."""
    _, schedule = warmup_schedule_of(optimizer)
    if schedule is not None and schedule.total_steps is None:
        if not total_steps:
            raise ValueError("the learning-rate schedule needs the length of training: the data does not say how "
                             "many batches it holds, so pass steps_per_epoch (or adamw_with_warmup(total_steps=...))")
        schedule.total_steps = int(total_steps)


def warmup_schedule_of(optimizer):
    """(the optimizer inside a loss-scaling wrapper, its `WarmupLinearDecay` or None)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(optimizer, "_learning_rate", None)
    return optimizer, schedule if isinstance(schedule, WarmupLinearDecay) else None


def warn_if_the_schedule_ended(optimizer):
    """Warn in one line if `optimizer` has reached the end of its `WarmupLinearDecay`, where
    every further step learns at rate 0 (e.g. a reloaded classifier trained for the epochs it
    planned, fit on); `TextClassifier.fit` asks before it trains."""
    optimizer, schedule = warmup_schedule_of(optimizer)
    if schedule is None or schedule.total_steps is None:
        return
    step = int(keras.ops.convert_to_numpy(optimizer.iterations))
    if step >= schedule.total_steps:
        warnings.warn(f"the learning-rate schedule ended at step {schedule.total_steps} and the optimizer is at step "
                      f"{step}: this fit trains at learning rate 0. For more training, compile again first, e.g. "
                      f"compile(optimizer=kerasbert.adamw_with_warmup({schedule.peak:g}, total_steps=<its steps>))",
                      stacklevel=3)


@keras.saving.register_keras_serializable(package="kerasbert")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over the first `warmup_ratio` of `total_steps`, then
    linear decay to 0 at `total_steps` (None until `learn_training_length` sets it).

    >>> schedule = WarmupLinearDecay(peak=1e-4, total_steps=100, warmup_ratio=0.1)
    >>> [round(float(schedule(step)), 7) for step in (0, 5, 10, 55, 100)]
    [0.0, 5e-05, 0.0001, 5e-05, 0.0]
    """

    def __init__(self, peak, total_steps=None, warmup_ratio=0.1):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_ratio = warmup_ratio

    @property
    def warmup_steps(self):
        return int(self.warmup_ratio * self.total_steps)

    def __call__(self, step):
        if self.total_steps is None:
            raise ValueError("WarmupLinearDecay does not know the length of training yet: train with "
                             "TextClassifier.fit, or give total_steps")
        step = tf.cast(step, tf.float32)
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * tf.clip_by_value(tf.minimum(warmup, decay), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_ratio": self.warmup_ratio}


class AdamKernels:
    """Keras' AdamW on one float variable (`variable -= decay * variable`, then Adam's step
    with the bias corrections folded into the rate, as TensorFlow's `ResourceApplyAdam`) as
    one XLA kernel updating the three variables in place: for MiniLM's token embedding 12.5
    against 22 ms for TensorFlow's fused Adam op after a decay op (2-core Xeon with AMX,
    2026-12-06). A sparse gradient (an embedding's rows) is summed into the table inside it.

    One set per optimizer: a kernel traced inside a training step refuses to run once the
    variables it first ran on are deleted, so it must not outlive its model.
    """

    def __init__(self):
        self.dense = tf.function(adam_in_place, jit_compile=True)
        self.sparse = tf.function(sparse_adam_in_place, jit_compile=True)

    def update(self, variable, momentum, velocity, gradient, *settings):
        if isinstance(gradient, tf.IndexedSlices):
            return self.sparse(variable, momentum, velocity, gradient.values, gradient.indices, *settings)
        return self.dense(variable, momentum, velocity, gradient, *settings)


def sparse_adam_in_place(variable, momentum, velocity, values, indices, *settings):
    gradient = tf.math.unsorted_segment_sum(tf.cast(values, variable.dtype), indices, tf.shape(variable)[0])
    adam_in_place(variable, momentum, velocity, gradient, *settings)


@tf.function(jit_compile=True)
def sum_of_squares(*tensors):
    """The sum of the squares of every element of `tensors`, in float32, as one XLA kernel: one read of
    each gradient, where TensorFlow's ops write each one's squares and read them back."""
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(tensor, tf.float32))) for tensor in tensors])


def on_values(gradient, function):
    """`function(gradient)`; for a sparse gradient (an embedding's rows), of its rows only, kept sparse:
    Keras' ops would sum it into a dense table first, a pass over the whole token embedding."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(function(gradient.values), gradient.indices, gradient.dense_shape)
    return function(gradient)


def adam_in_place(variable, momentum, velocity, gradient, learning_rate, decay, beta_1, beta_2, epsilon, step,
                  gradient_scale):
    gradient = tf.cast(gradient, variable.dtype) * gradient_scale
    momentum.assign_add((gradient - momentum) * (1 - beta_1))
    velocity.assign_add((tf.square(gradient) - velocity) * (1 - beta_2))
    rate = learning_rate * tf.sqrt(1 - beta_2**step) / (1 - beta_1**step)
    variable.assign(variable - variable * decay - rate * momentum / (tf.sqrt(velocity) + epsilon))


@keras.saving.register_keras_serializable(package="kerasbert")
class GradientNormAdamW(keras.optimizers.AdamW):
    """AdamW that keeps the global norm of the last gradients it applied (before clipping).

    Under a loss-scaling wrapper it sees the unscaled gradients; under a
    multi-replica strategy, the first replica's gradients (Keras clips per replica too).
    Each variable's update, Keras' decoupled weight decay and then Adam's step, is
    one pass over it (`AdamKernels`) that also clips its gradient (on one replica), and
    an embedding's sparse gradient stays sparse into that pass (Keras' clipping makes
    it a dense table).

    `layer_decay` below 1 gives each layer of a BERT its own learning rate (Sun et al.
    2019, "How to Fine-Tune BERT for Text Classification?"): the variables above the
    backbone's last transformer layer (pooler, classifier) take the schedule's rate,
    transformer layer i of n takes it times `layer_decay ** (n - i)` and the embeddings
    `layer_decay ** (n + 1)`, so that the layers holding the most general features move
    least. Layers are read from KerasHub's variable paths (`transformer_layer_<i>/`,
    `token_embedding/`, ...); it scales Adam's step, not the weight decay.

    >>> optimizer = GradientNormAdamW(layer_decay=0.5)
    >>> optimizer.layer_scales(["token_embedding/embeddings", "transformer_layer_0/query/kernel",
    ...                         "transformer_layer_1/query/kernel", "logits/kernel"])
    [0.125, 0.25, 0.5, 1.0]
    """

    def __init__(self, *args, layer_decay=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_decay = layer_decay
        self._step_norm = None  # the global norm of the gradients `apply` is applying
        self._clip_scale = None  # the clipping's factor on them, applied in the Adam kernels
        self.exclude_from_weight_decay(var_names=NO_DECAY_PATTERN)

    def build(self, variables):
        super().build(variables)
        self.gradient_norm = self.add_variable((), dtype="float32", aggregation="only_first_replica",
                                               name="gradient_norm")
        self._layer_scales = self.layer_scales([variable.path for variable in variables])
        self._adam_kernels = AdamKernels()

    def layer_scales(self, paths):
        """The factor on the learning rate of each variable path (all 1.0 without layer decay)."""
        layers = [TRANSFORMER_LAYER.search(path) for path in paths]
        top = max([int(layer.group(1)) + 1 for layer in layers if layer], default=0)
        depths = [int(layer.group(1)) + 1 if layer else 0 if EMBEDDING.search(path) else top + 1
                  for path, layer in zip(paths, layers)]
        return [float(self.layer_decay ** (top + 1 - depth)) for depth in depths]

    def _apply_weight_decay(self, variables):
        if self.amsgrad:  # else `update_step` decays each variable in its Adam kernel
            super()._apply_weight_decay(variables)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        layer_rate = learning_rate * self._layer_scales[index]
        if self.amsgrad:
            return super().update_step(gradient, variable, layer_rate)
        dtype = variable.dtype
        # Keras decays by the schedule's rate (not the layer's) before Adam's update.
        decay = self.weight_decay * learning_rate if self.weight_decay and self._use_weight_decay(variable) else 0.0
        scale = 1.0 if self._clip_scale is None else self._clip_scale
        self._adam_kernels.update(
            variable, self._momentums[index].value, self._velocities[index].value, gradient,
            *(tf.cast(setting, dtype) for setting in (layer_rate, decay, self.beta_1, self.beta_2, self.epsilon,
                                                       self.iterations + 1, scale)))

    def get_config(self):
        return {**super().get_config(), "layer_decay": self.layer_decay}

    def apply(self, grads, trainable_variables=None):
        present = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
        norm = tf.sqrt(sum_of_squares(*present)) if present else None
        self._step_norm = norm
        try:
            result = super().apply(grads, trainable_variables)  # builds the optimizer on first use
        finally:
            self._step_norm = self._clip_scale = None  # tensors of this trace: no later call may use them
        if present:
            self.gradient_norm.assign(norm)
        return result

    def _clip_gradients(self, grads):
        """Keras' clipping by the global norm, with the norm `apply` measured (Keras' own would take
        a second pass over every gradient), applied inside each variable's Adam kernel on a single
        replica. With the norm as one kernel, an AdamW step for MiniLM's variables takes 58.8 against
        71.4 ms (2-core Xeon with AMX, 2026-12-06, `benchmarks/optimizer_step.md`)."""
        if (self.gradient_accumulation_steps or self.loss_scale_factor or self.clipnorm or not self.global_clipnorm
                or self._step_norm is None):  # Keras clips other gradients than `apply` measured, or not by the norm
            return super()._clip_gradients(grads)
        norm = self._step_norm
        # As Keras': 1 for a norm below the limit, NaN for a norm that is not finite.
        scale = self.global_clipnorm * keras.ops.minimum(1.0 / norm, 1.0 / self.global_clipnorm) + (norm - norm)
        if not self.amsgrad and self._distribution_strategy.num_replicas_in_sync == 1:
            self._clip_scale = scale  # with replicas, each clips its own gradients before they are summed: not here
            return grads
        return [g if g is None else on_values(g, lambda values: values * keras.ops.cast(scale, values.dtype)) for g in grads]
