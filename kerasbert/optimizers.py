"""The optimizer fine-tuning uses, as plain Keras objects: AdamW whose learning
rate warms up linearly and then decays linearly to zero, with global-norm
clipping, no weight decay on LayerNorm and biases, and the gradient norm kept
for TensorBoard.

Example:

>>> optimizer = adamw_with_warmup(5e-5, total_steps=1000)
>>> round(float(optimizer.learning_rate), 8)  # step 0 of the warm-up
0.0
"""

import keras
import tensorflow as tf

# Variables that get no weight decay: LayerNorm scales/offsets and biases.
NO_DECAY_PATTERN = ["bias", "gamma", "beta"]


def adamw_with_warmup(learning_rate, total_steps, warmup_ratio=0.1, weight_decay=0.01, clip_norm=1.0,
                      loss_scaling=False):
    """`GradientNormAdamW` on a `WarmupLinearDecay` schedule over `total_steps` optimizer steps
    (`clip_norm` 0: no clipping); wrapped for loss scaling (float16 training) if `loss_scaling`."""
    schedule = WarmupLinearDecay(learning_rate, int(warmup_ratio * total_steps), total_steps)
    optimizer = GradientNormAdamW(learning_rate=schedule, weight_decay=weight_decay,
                                  global_clipnorm=clip_norm or None)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_PATTERN)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


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


@keras.saving.register_keras_serializable(package="kerasbert")
class GradientNormAdamW(keras.optimizers.AdamW):
    """AdamW that keeps the global norm of the last gradients it applied (before clipping).

    Under a loss-scaling wrapper it sees the unscaled gradients; under a
    multi-replica strategy, the first replica's gradients (Keras clips per replica too).
    """

    def build(self, variables):
        super().build(variables)
        self.gradient_norm = self.add_variable((), dtype="float32", aggregation="only_first_replica",
                                               name="gradient_norm")

    def apply(self, grads, trainable_variables=None):
        squares = [keras.ops.sum(keras.ops.square(keras.ops.cast(g, "float32"))) for g in grads if g is not None]
        result = super().apply(grads, trainable_variables)  # builds the optimizer on first use
        if squares:
            self.gradient_norm.assign(keras.ops.sqrt(keras.ops.sum(keras.ops.stack(squares))))
        return result
