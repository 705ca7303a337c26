"""How kerasbert computes with a KerasHub BERT backbone's weights: the
feed-forward activation its checkpoint was trained with, and the pooled output
with the last transformer layer computed at the [CLS] position only.

A classifier reads one vector of the last layer: the one at [CLS], through
the pooler. Every other position of that layer (its query, attention row,
attention output, feed-forward and layer norms) is computed and thrown away.
Keys and values still need every position, so the trimmed layer costs two of
its twelve hidden x hidden matrix products per token instead of twelve, plus
one attention row: for MiniLM-L6 at 229 tokens about 14% of the encoder's
multiply-adds, in training and in inference. The function is the same (the
logits agree to float rounding; `tests/test_backbone.py`), and the
dropout masks are drawn from the same distribution per position, so training
is unchanged in distribution.

Example:

>>> import keras_hub
>>> import tensorflow as tf
>>> backbone = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8,
...                                          intermediate_dim=16, max_sequence_length=16)
>>> inputs = {"token_ids": tf.constant([[2, 5, 7, 3, 0]]), "segment_ids": tf.zeros([1, 5], tf.int32),
...           "padding_mask": tf.constant([[1, 1, 1, 1, 0]])}
>>> full = backbone(inputs)["pooled_output"]
>>> bool(tf.reduce_all(tf.abs(pooled_output(backbone, inputs) - full) < 1e-5))
True
"""

import keras
from keras_hub.src.layers.modeling.transformer_layer_utils import merge_padding_and_attention_mask


def set_feedforward_activation(backbone, activation):
    """Make every transformer layer of a KerasHub BERT backbone compute `activation`
    (a Keras activation name) in its feed-forward block. The layers read it when
    called, so a built model changes too."""
    function = keras.activations.get(activation)
    for layer in backbone.transformer_layers:
        layer.activation = function
        layer._feedforward_intermediate_dense.activation = function


def pooled_output(backbone, inputs, training=None):
    """What a KerasHub `BertBackbone` returns as "pooled_output" for `inputs`
    (token_ids, segment_ids, padding_mask), with the last layer trimmed."""
    padding_mask = inputs["padding_mask"]
    tokens = backbone.token_embedding(inputs["token_ids"])
    x = backbone.embeddings_add((tokens, backbone.position_embedding(tokens),
                                 backbone.segment_embedding(inputs["segment_ids"])))
    x = backbone.embeddings_dropout(backbone.embeddings_layer_norm(x), training=training)
    for layer in backbone.transformer_layers[:-1]:
        x = layer(x, padding_mask=padding_mask, training=training)
    cls = position_output(backbone.transformer_layers[-1], x, padding_mask, backbone.cls_token_index, training)
    return backbone.pooled_dense(cls[:, 0])


def position_output(layer, x, padding_mask, position, training=None):
    """A post-norm KerasHub `TransformerEncoder`'s output at one `position` of `x`
    ([batch, length, hidden] -> [batch, 1, hidden]): that position's query
    attends over every position's key and value."""
    if layer.normalize_first:
        raise ValueError("a trimmed last layer needs a post-norm (BERT) encoder")
    here = x[:, position:position + 1]
    attention_mask = merge_padding_and_attention_mask(x, padding_mask, None)  # [batch, 1, keys], as the layer makes it
    attended = layer._self_attention_layer(query=here, value=x, key=x, attention_mask=attention_mask,
                                           training=training)
    here = layer._self_attention_layer_norm(here + layer._self_attention_dropout(attended, training=training))
    transformed = layer._feedforward_output_dense(layer._feedforward_intermediate_dense(here))
    return layer._feedforward_layer_norm(here + layer._feedforward_dropout(transformed, training=training))
