"""Copies of a trained classifier for inference: without optimizer state, computing in
another precision, or taking token ids instead of texts (what SavedModels and TFLite
models are made of).

Example:

>>> import keras_hub
>>> from kerasbert.model import TextClassifier
>>> backbone = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
...                                          intermediate_dim=16, max_sequence_length=16)
>>> inference_copy(TextClassifier(backbone, num_classes=2), dtype="mixed_bfloat16").dtype_policy.name
'mixed_bfloat16'
"""

import keras

from kerasbert.fused_layers import use_fused_layers, uses_fused_layers
from kerasbert.model import softmax


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
    config["config"]["compile"] = False  # KerasHub tasks compile themselves by default
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
    return softmax(model(features, training=False))


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
