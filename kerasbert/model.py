"""The task: `TextClassifier`, KerasHub's BERT text classifier built from a preset
with its preprocessor attached, trained on raw texts with `fit`, saved and loaded
with plain Keras, optimizer state included.

Example (a tiny random backbone; `TextClassifier.from_preset("all_minilm_l6_v2_offline",
class_names=["neg", "pos"])` builds the real one):

>>> backbone = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
...                                          intermediate_dim=16, max_sequence_length=16)
>>> classifier = TextClassifier(backbone, class_names=["neg", "pos"])
>>> classifier.predict_probabilities({"token_ids": np.array([[2, 5, 3]]), "segment_ids": np.zeros((1, 3), int),
...                                   "padding_mask": np.ones((1, 3), int)}).shape
(1, 2)
"""

import os
import random

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras_hub.src.utils.python_utils import classproperty

from kerasbert import data
from kerasbert.backbone import pooled_output, set_feedforward_activation
from kerasbert.compiled_inference import CompiledInferenceSteps
from kerasbert.data import as_labeled_texts, is_texts, is_token_dataset, is_token_features
from kerasbert.errors import KerasbertError, first_line
from kerasbert.evaluation import labeled_rows
from kerasbert.export_formats import export_classifier
from kerasbert.files import written_atomically
from kerasbert.fused_layers import use_fused_layers
from kerasbert.hardware import choose_precision, detect_hardware
from kerasbert.optimizers import adamw_with_warmup, learn_training_length, warn_if_the_schedule_ended
from kerasbert.preprocessing import LengthWarmup, ReviewPreprocessor
from kerasbert.presets import DEFAULT_PRESET, hugging_face_activation, preset_listing, resolve_preset
from kerasbert.step_functions import ShapeRelaxedSteps
from kerasbert.texts import LabeledTexts
from kerasbert.weight_files import names_as_saved

SEED_STATE_PREFIX = "seed_generator_"


def softmax(logits):
    """Class probabilities (float32) from logits of any float dtype."""
    return tf.nn.softmax(tf.cast(logits, tf.float32))


@keras.saving.register_keras_serializable(package="kerasbert")
class TextClassifier(CompiledInferenceSteps, ShapeRelaxedSteps, keras_hub.models.BertTextClassifier):
    """KerasHub's BERT text classifier that knows its class names, computes with fused layers
    (`kerasbert.fused_layers`) and a trimmed last layer, and trains on raw texts the fast way:
    `fit(texts, labels)` shuffles anew each epoch, batches reviews of similar length and tokenizes
    in `tf.data` (`predict` and `evaluate` trace once, with training's XLA kernels: exports hold none).

    `compile()` defaults to AdamW with linear warm-up and decay whose length `fit` learns from its
    `epochs` and the data. Everything is part of the config, and `save` keeps the optimizer state and
    the dropout generators, so `keras.saving.load_model(path)` gives back a compiled classifier whose
    next `fit(..., initial_epoch=k)` continues an interrupted one exactly.

    Args:
        backbone: a `keras_hub.models.BertBackbone`.
        num_classes: the number of classes, when `class_names` is not given.
        preprocessor: a `ReviewPreprocessor`, or None to feed token ids.
        class_names: each class's name, in the order of the logits ("0", "1", ... by default).
        fused_layers: compute with `kerasbert.fused_layers` (same weights).
        feedforward_activation: the feed-forward activation the checkpoint was trained with, when not
            KerasHub BERT's tanh-approximated GELU ("gelu" for a Hugging Face BERT); None keeps it.
        trim_last_layer: compute the last transformer layer at [CLS] only, the position
            the head reads (`kerasbert.backbone`: same logits, a seventh less work).
        shuffle_seed: the seed of `fit`'s shuffling of raw texts (None: drawn from
            Python's `random`, which `keras.utils.set_random_seed` seeds, at the first fit).
    """

    def __init__(self, backbone, num_classes=None, preprocessor=None, class_names=None, fused_layers=True,
                 feedforward_activation=None, trim_last_layer=True, shuffle_seed=None, **kwargs):
        if class_names is None:
            if num_classes is None:
                raise ValueError("give class_names or num_classes")
            class_names = [str(index) for index in range(num_classes)]
        elif num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes {num_classes} does not match {len(class_names)} class names")
        super().__init__(backbone, len(class_names), preprocessor=preprocessor, **kwargs)
        self.class_names = tuple(str(name) for name in class_names)  # a tuple: Keras does not track it
        self.fused_layers = fused_layers
        if fused_layers:
            use_fused_layers(self)
        self.feedforward_activation = feedforward_activation
        if feedforward_activation:
            set_feedforward_activation(backbone, feedforward_activation)
        self.trim_last_layer = trim_last_layer
        self.shuffle_seed = shuffle_seed

    @classproperty
    def presets(cls):
        """Every preset `from_preset` takes by name: kerasbert's offline ones first, then KerasHub's BERT presets."""
        return preset_listing()

    @classmethod
    def from_preset(cls, preset=DEFAULT_PRESET, num_classes=None, class_names=None, sequence_length=256,
                    truncation="head+tail", dropout=0.1, backbone_dropout=None, precision="auto",
                    fused_layers=True, trim_last_layer=True, load_weights=True, **kwargs):
        """A classifier on a preset's backbone, with its `ReviewPreprocessor` attached, compiled.

        Args:
            preset: a name of `TextClassifier.presets` (kerasbert's offline presets are
                checked against their pinned sha256), a `hf://` or `kaggle://` handle, or
                a local KerasHub or Hugging Face BERT folder.
            num_classes, class_names: the classes (names give `classify` its labels).
            sequence_length: tokens per text, [CLS] and [SEP] included.
            truncation: which tokens of a longer text to keep: head, tail or head+tail.
            dropout: dropout before the classification layer.
            backbone_dropout: dropout inside the backbone (None: the preset's).
            precision: auto (what this machine computes natively), off (float32), bf16 or fp16.
            fused_layers, trim_last_layer: as in the constructor (same logits).
            load_weights: load the preset's weights (False: random ones).
        """
        path = resolve_preset(preset)
        # An explicit choice needs no look at the machine.
        dtype = choose_precision(precision, detect_hardware(warn=True) if precision == "auto" else None).policy
        backbone_options = {} if backbone_dropout is None else {"dropout": backbone_dropout}
        try:
            preprocessor = ReviewPreprocessor.from_preset(path, sequence_length=sequence_length,
                                                          truncation=truncation)
            backbone = keras_hub.models.BertBackbone.from_preset(path, dtype=dtype, load_weights=load_weights,
                                                                 **backbone_options)
        except (OSError, ValueError, KeyError) as error:
            raise KerasbertError(f"cannot load preset {preset}: {first_line(error)}") from None
        if sequence_length > backbone.max_sequence_length:
            raise KerasbertError(f"`sequence_length` {sequence_length} exceeds the model's "
                                 f"{backbone.max_sequence_length} positions")
        return cls(backbone, num_classes, preprocessor=preprocessor, class_names=class_names, dropout=dropout,
                   fused_layers=fused_layers, feedforward_activation=hugging_face_activation(path),
                   trim_last_layer=trim_last_layer, dtype=dtype, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        if not self.trim_last_layer or not isinstance(inputs, dict):  # Keras says what a bad input lacks
            return super().call(inputs, training=training, mask=mask, **kwargs)
        pooled = pooled_output(self.backbone, inputs, training=training)
        return self.output_dense(self.output_dropout(pooled, training=training))

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """KerasHub's defaults, but for the optimizer: "auto" is `adamw_with_warmup(5e-5)`,
        whose schedule learns the length of training from `fit`. The accuracy metric is
        named `accuracy` (so `val_accuracy` in `fit`'s logs)."""
        if optimizer == "auto":
            optimizer = adamw_with_warmup(5e-5)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer, loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """What `load_model` calls: compile as saved, and build the optimizer so its saved
        state (moments, step) loads into it."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, validation_data=None, shuffle=True, initial_epoch=0,
            steps_per_epoch=None, length_warmup=None, **kwargs):
        """Keras' `fit`. Raw texts (a list or array of strings with labels `y`, or
        `LabeledTexts`) are shuffled anew every epoch (by `shuffle_seed` and the epoch, so
        `initial_epoch` resumes the same order), batched by similar length and tokenized in
        `tf.data`; a `(texts, labels)` `validation_data` likewise, in length order. A
        `tf.data.Dataset` of token-id dicts is fed as it is; one of strings is tokenized by
        the preprocessor, as in KerasHub. The learning-rate schedule learns its length
        (`epochs` times the batches per epoch) the first time; a `fit` past its end warns.
        `length_warmup=(tokens, fraction)`: the first `fraction` of the steps on raw texts
        tokenized to `tokens` (`kerasbert.preprocessing.LengthWarmup`)."""
        fed_tokens = self.feeds_tokens(x)
        if self.preprocessor is not None and is_texts(x):
            texts = as_labeled_texts(x, y)
            steps = steps_per_epoch or -(-len(texts) // (batch_size or 32))
            x = data.training_dataset(texts, self.preprocessor, batch_size or 32, self.drawn_shuffle_seed(),
                                      first_epoch=initial_epoch, length_warmup=length_warmup and LengthWarmup.of_run(
                                          *length_warmup, epochs=epochs, steps_per_epoch=steps))
            y, batch_size, fed_tokens = None, None, True
            if isinstance(validation_data, LabeledTexts):
                validation_data = self.evaluation_batches(validation_data)
            elif validation_data is not None and not isinstance(validation_data, tf.data.Dataset):
                validation_data = self.evaluation_batches(*validation_data[:2])
        elif length_warmup:
            raise ValueError("length_warmup applies to raw texts (a dataset takes it in data.training_dataset)")
        if isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset)):
            shuffle = False  # a dataset orders itself; Keras would only warn that it ignores `shuffle`
            steps = steps_per_epoch or data.batch_count(x)
        else:
            steps = steps_per_epoch or -(-len(keras.tree.flatten(x)[0]) // (batch_size or 32))
        learn_training_length(self.optimizer, epochs * steps)
        if epochs > initial_epoch:
            warn_if_the_schedule_ended(self.optimizer)
        fit = keras.Model.fit if fed_tokens else super().fit  # KerasHub's fit would tokenize again
        return fit(self, x=x, y=y, batch_size=batch_size, epochs=epochs, validation_data=validation_data,
                   shuffle=shuffle, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch, **kwargs)

    def evaluation_batches(self, texts, labels=None, batch_size=64):
        """`(texts, labels)` as tokenized batches in order of length (the fast order to evaluate in)."""
        examples = as_labeled_texts(texts, labels).sorted_by_length()
        return data.evaluation_dataset(examples, self.preprocessor, batch_size)

    def predict(self, x=None, batch_size=None, **kwargs):
        """Keras' `predict` (logits). Raw texts are computed in batches of similar length
        and returned in their order; token-id features, or a dataset of them, are fed as
        they are; a dataset of strings is tokenized by the preprocessor, as in KerasHub."""
        if self.preprocessor is not None and is_texts(x):
            texts = as_labeled_texts(x)
            order = texts.length_order()
            batches = data.evaluation_dataset(texts.take(order), self.preprocessor, batch_size or 64)
            return keras.Model.predict(self, batches, **kwargs)[np.argsort(order)]  # back in the texts' order
        if self.feeds_tokens(x):
            return keras.Model.predict(self, x, batch_size=batch_size, **kwargs)
        return super().predict(x, batch_size=batch_size, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """Keras' `evaluate`; raw texts with labels `y` in batches of similar length."""
        if self.preprocessor is not None and is_texts(x):
            x, y, batch_size = self.evaluation_batches(x, y, batch_size or 64), None, None
        if self.feeds_tokens(x):
            return keras.Model.evaluate(self, x, y, batch_size=batch_size, **kwargs)
        return super().evaluate(x, y, batch_size=batch_size, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras' `export`, writing kerasbert's artifacts: `kerasbert.export_formats`."""
        return export_classifier(self, filepath, format, **kwargs)

    def feeds_tokens(self, x):
        """Whether `x` goes to the model as it is: token ids, or anything when there is no preprocessor."""
        return self.preprocessor is None or is_token_dataset(x) or is_token_features(x)

    def predict_probabilities(self, x, batch_size=64, verbose=0):
        """Class probabilities (float32, [count, classes]) of what `predict` takes."""
        return softmax(self.predict(x, batch_size=batch_size, verbose=verbose)).numpy()

    def classify(self, texts, batch_size=64):
        """One dict per text: its likeliest class name (`label`), its probability and every class's."""
        return labeled_rows(texts, self.predict_probabilities(texts, batch_size), self.class_names)

    def drawn_shuffle_seed(self):
        if self.shuffle_seed is None:
            self.shuffle_seed = random.randrange(2**31)
        return self.shuffle_seed

    def seed_generators(self):
        """Every dropout seed generator of the model, in layer order."""
        return [generator for layer in self._flatten_layers() for generator in layer._seed_generators]

    def save_own_variables(self, store):
        """The model's own variables and, unlike Keras, its dropout seed generators' states:
        training continued after `load_model` draws the masks an uninterrupted run would.
        A compiled model's optimizer is built first (Keras saves it next), so that its
        variables match those `compile_from_config` builds on loading."""
        if self.compiled and self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        super().save_own_variables(store)
        for index, generator in enumerate(self.seed_generators()):
            store[f"{SEED_STATE_PREFIX}{index}"] = generator.state

    def load_own_variables(self, store):
        for index, variable in enumerate(self._trainable_variables + self._non_trainable_variables):
            variable.assign(store[str(index)])
        saved_seeds = [key for key in store.keys() if key.startswith(SEED_STATE_PREFIX)]
        if len(saved_seeds) == len(self.seed_generators()):  # files written before the seeds were saved have none
            for index, generator in enumerate(self.seed_generators()):
                generator.state.assign(store[f"{SEED_STATE_PREFIX}{index}"])

    def get_config(self):
        return {**super().get_config(), "class_names": list(self.class_names), "fused_layers": self.fused_layers,
                "feedforward_activation": self.feedforward_activation, "trim_last_layer": self.trim_last_layer,
                "shuffle_seed": self.shuffle_seed}


def class_names_of(classifier):
    """A classifier's class names: a `TextClassifier`'s own, else "0", "1", ... (a plain KerasHub one)."""
    names = getattr(classifier, "class_names", None)
    return list(names) if names else [str(index) for index in range(classifier.get_config()["num_classes"])]


def save_classifier(classifier, path):
    """`classifier.save(path)` via a temporary file, so a crash never leaves half a model."""
    with written_atomically(path) as temporary:
        classifier.save(temporary)


def load_classifier(path):
    """Load a `.keras` classifier of any kerasbert version, or KerasHub's BertTextClassifier, fused (safe
    mode: no lambdas or pickles), with a one-line error for a missing or damaged file."""
    if not os.path.isfile(path):
        raise KerasbertError(f"model file {path} does not exist")
    try:
        with names_as_saved(path):
            classifier = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a corrupt zip or config
        raise KerasbertError(f"cannot load model {path}: {first_line(error)}") from None
    if not isinstance(classifier, keras_hub.models.TextClassifier):
        raise KerasbertError(f"{path} holds a {type(classifier).__name__}, not a text classifier "
                             "(a kerasbert model.keras, or a KerasHub TextClassifier)")
    if not isinstance(classifier, TextClassifier):
        use_fused_layers(classifier)
    return classifier
