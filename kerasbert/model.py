"""The classifier: KerasHub's BERT backbone with a classification head
(dropout + dense) on the pooled [CLS] output, built with its preprocessor
(`kerasbert.preprocessing`), saved and loaded.

Example:

>>> from kerasbert.presets import resolve_preset
>>> classifier, preprocessor = build_classifier(
...     resolve_preset("all_minilm_l6_v2_offline"), num_classes=2, max_seq_length=64)
>>> classifier.predict(preprocessor(["A wonderful film."]), verbose=0).shape
(1, 2)
"""

import os
import warnings

import keras
import keras_hub
import tensorflow as tf

from kerasbert.backbone import pooled_output, set_feedforward_activation
from kerasbert.errors import KerasbertError, first_line
from kerasbert.fused_layers import use_fused_layers, uses_fused_layers
from kerasbert.hardware import choose_precision, detect_hardware
from kerasbert.files import written_atomically
from kerasbert.preprocessing import ReviewPreprocessor
from kerasbert.presets import hugging_face_activation

TOKEN_INPUTS = ("token_ids", "segment_ids", "padding_mask")


@keras.saving.register_keras_serializable(package="kerasbert")
class TextClassifier(keras_hub.models.BertTextClassifier):
    """KerasHub's BERT text classifier that knows its class names and computes
    with fused layers (`kerasbert.fused_layers`) and a trimmed last layer.

    All are part of its config, so `classifier.save(path)` and
    `keras.saving.load_model(path, safe_mode=True)` give back the same model,
    fused, with its class names and (when saved with one) its preprocessor.

    Args:
        backbone: a `keras_hub.models.BertBackbone`.
        class_names: the name of each class, in the order of the logits;
            default "0", "1", ... for `num_classes` classes.
        preprocessor: a `ReviewPreprocessor`, or None when the model is fed
            token ids (as in training, where `tf.data` tokenizes).
        fused_layers: compute with `kerasbert.fused_layers` (same weights).
        feedforward_activation: the activation of the backbone's feed-forward
            layers, when the checkpoint was trained with another one than
            KerasHub's BERT computes (tanh-approximated GELU); e.g. "gelu" for
            the exact GELU of a Hugging Face BERT. None keeps the backbone's.
        trim_last_layer: compute the last transformer layer at [CLS] only, the position
            the head reads (`kerasbert.backbone`: same logits, a seventh less work).

    Example:

    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
    ...                                          intermediate_dim=16, max_sequence_length=16)
    >>> classifier = TextClassifier(backbone, class_names=["neg", "pos"])
    >>> classifier.class_names, uses_fused_layers(classifier)
    (('neg', 'pos'), True)
    """

    def __init__(self, backbone, num_classes=None, preprocessor=None, class_names=None, fused_layers=True,
                 feedforward_activation=None, trim_last_layer=True, **kwargs):
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

    def call(self, inputs, training=None, mask=None, **kwargs):
        if not self.trim_last_layer or not isinstance(inputs, dict):  # Keras says what a bad input lacks
            return super().call(inputs, training=training, mask=mask, **kwargs)
        pooled = pooled_output(self.backbone, inputs, training=training)
        return self.output_dense(self.output_dropout(pooled, training=training))

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs):
        """KerasHub's defaults, with the accuracy metric named `accuracy` (so `val_accuracy` in `fit`'s logs)."""
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer, loss, metrics=metrics, **kwargs)

    def get_config(self):
        return {**super().get_config(), "class_names": list(self.class_names), "fused_layers": self.fused_layers,
                "feedforward_activation": self.feedforward_activation, "trim_last_layer": self.trim_last_layer}


def build_classifier(preset, num_classes, max_seq_length, truncation="head+tail", dropout=0.1,
                     mixed_precision="auto", backbone_dropout=-1.0, fused_layers=True, class_names=None,
                     trim_last_layer=True):
    """A `BertClassifier` fed ready tensors, and the preprocessor that makes them.

    The classifier's own `preprocessor` is None during training: the
    preprocessor runs in the `tf.data` pipeline instead. `attach_preprocessor`
    puts it back before the model is saved. `backbone_dropout` -1 keeps the
    preset's dropout inside the transformer layers. `fused_layers` swaps in
    the layer subclasses of `kerasbert.fused_layers` (same weights, same outputs);
    `trim_last_layer` computes the last transformer layer at [CLS] only (same logits).
    A Hugging Face checkpoint computes the feed-forward activation it was
    trained with (`hugging_face_activation`).
    `mixed_precision` "auto" picks what the hardware computes natively
    (`kerasbert.hardware.choose_precision`).
    """
    hardware = detect_hardware() if mixed_precision == "auto" else None  # an explicit choice needs no look
    dtype = choose_precision(mixed_precision, hardware).policy
    backbone_options = {} if backbone_dropout < 0 else {"dropout": backbone_dropout}
    try:
        preprocessor = ReviewPreprocessor.from_preset(
            preset, sequence_length=max_seq_length, truncation=truncation
        )
        backbone = keras_hub.models.BertBackbone.from_preset(preset, dtype=dtype, **backbone_options)
    except (OSError, ValueError, KeyError) as error:
        raise KerasbertError(f"cannot load preset {preset}: {first_line(error)}") from None
    if max_seq_length > backbone.max_sequence_length:
        raise KerasbertError(f"--max-seq-length {max_seq_length} exceeds the model's "
                             f"{backbone.max_sequence_length} positions")
    classifier = TextClassifier(backbone, num_classes, class_names=class_names, dropout=dropout,
                                fused_layers=fused_layers, feedforward_activation=hugging_face_activation(preset),
                                trim_last_layer=trim_last_layer, dtype=dtype)
    return classifier, preprocessor


def attach_preprocessor(classifier, preprocessor):
    """The same classifier, now taking raw strings in `predict` and saving its tokenizer."""
    classifier.preprocessor = preprocessor
    return classifier


def inference_copy(classifier, dtype=None, fused_layers=None):
    """An uncompiled copy sharing the preprocessor: no optimizer state, optionally another dtype.

    `dtype="float32"` turns a mixed-precision model into a float32 one (its
    variables are float32 already), as TFLite wants; `dtype="mixed_bfloat16"`
    makes any copy compute in bfloat16, and `dtype="bfloat16"` also stores its
    weights in bfloat16, as a server with native bf16 wants. The copy has fused
    layers if `fused_layers`, or (None) if the classifier has.
    """
    config = keras.saving.serialize_keras_object(classifier)
    config["config"]["preprocessor"] = None
    config.pop("compile_config", None)
    fused = uses_fused_layers(classifier) if fused_layers is None else fused_layers
    if "fused_layers" in config["config"]:  # a TextClassifier fuses itself
        config["config"]["fused_layers"] = fused
    if dtype:
        config = with_compute_dtype(config, dtype)
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(classifier.get_weights())
    copy.preprocessor = classifier.preprocessor
    if fused and not uses_fused_layers(copy):
        use_fused_layers(copy)
    return copy


def token_model(classifier, dtype="float32"):
    """A copy of the classifier computing in `dtype`, without its preprocessor: token-id tensors in, logits out."""
    model = inference_copy(classifier, dtype=dtype)
    model.preprocessor = None
    return model


def token_probabilities(model, token_ids, segment_ids, padding_mask):
    features = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
    return tf.nn.softmax(tf.cast(model(features, training=False), tf.float32))


def with_compute_dtype(config, dtype):
    """A serialized model config whose dtype policies compute in `dtype`: mixed-precision
    policies become `dtype`, and float32 ones too unless `dtype` is float32. (Layer
    normalization computes in float32 whatever its policy.)"""
    replaced = ("mixed_",) if dtype == "float32" else ("mixed_", "float32")
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and config["config"]["name"].startswith(replaced):
            return {**config, "config": {**config["config"], "name": dtype}}
        return {key: with_compute_dtype(value, dtype) for key, value in config.items()}
    if isinstance(config, list):
        return [with_compute_dtype(value, dtype) for value in config]
    return config


def save_classifier(classifier, path):
    """Save as `.keras` without optimizer state, via a temporary file so a crash never leaves half a model."""
    with written_atomically(path) as temporary:
        inference_copy(classifier).save(temporary)


def load_classifier(path):
    """Load a `.keras` classifier (safe mode: no lambdas or pickles), fused.

    Models saved before `TextClassifier` existed (KerasHub's BertTextClassifier)
    are fused after loading.
    """
    if not os.path.isfile(path):
        raise KerasbertError(f"model file {path} does not exist")
    try:
        with warnings.catch_warnings():  # every saved KerasHub task carries a compile config Keras cannot restore
            warnings.filterwarnings("ignore", message=r"`compile\(\)` was not called", category=UserWarning)
            classifier = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a corrupt zip or config
        raise KerasbertError(f"cannot load model {path}: {first_line(error)}") from None
    if not isinstance(classifier, keras_hub.models.TextClassifier):
        raise KerasbertError(f"{path} holds a {type(classifier).__name__}, not a text classifier "
                             "(a kerasbert model.keras, or a KerasHub TextClassifier)")
    if not isinstance(classifier, TextClassifier):
        use_fused_layers(classifier)
    return classifier
