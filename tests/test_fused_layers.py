import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.fused_layers import (
    FusedDense,
    FusedDropout,
    FusedEinsumDense,
    FusedLayerNormalization,
    FusedMultiHeadAttention,
    FusedTransformerEncoder,
    contracted_axes,
    use_fused_layers,
    uses_fused_layers,
)
from kerasbert import kernels
from kerasbert.compiled_inference import CompiledInferenceSteps, compiled_inference, compiles_kernels
from kerasbert.dropout_masks import keep_mask
from kerasbert.inference import inference_copy
from kerasbert.model import TextClassifier, load_classifier, save_classifier


@pytest.mark.parametrize("mixed_precision, tolerance", [("off", 1e-5), ("bf16", 0.1)])
def test_fused_backbone_computes_the_same_function_with_padding(preset_path, mixed_precision, tolerance, monkeypatch):
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=48, precision=mixed_precision,
                                            fused_layers=False)
    preprocessor = classifier.preprocessor
    features = preprocessor(["A wonderful, moving film with a great cast.", "Dull. " * 30, "No."])
    assert features["padding_mask"].numpy().min() == 0  # some rows are padded
    backbone = classifier.backbone
    stock = keras.ops.convert_to_numpy(backbone(features)["sequence_output"]).astype("float32")
    assert not uses_fused_layers(classifier)
    # Per layer itself, 4 projections, 2 FFN, attention, 3 dropouts, 2 LayerNorms; the embeddings' dropout
    # and LayerNorm, pooler, head and its dropout.
    assert use_fused_layers(classifier) == 6 * 13 + 5
    fused = keras.ops.convert_to_numpy(backbone(features)["sequence_output"]).astype("float32")
    real_tokens = features["padding_mask"].numpy() == 1
    np.testing.assert_allclose(fused[real_tokens], stock[real_tokens], atol=tolerance)
    graph = tf.function(backbone).get_concrete_function(features).graph
    op_types = collections.Counter(op.type for op in graph.get_operations())
    # Every projection is a 2-D MatMul: per layer query, key and value in one, the attention output and 2
    # feed-forward, then the pooler; BatchMatMuls only in attention; GELU through erf, not erfc.
    assert (op_types["MatMul"], op_types["BatchMatMulV2"], op_types["Einsum"]) == (6 * 4 + 1, 6 * 2, 0)
    assert (op_types["Erf"], op_types["Erfc"]) == (6, 0)
    kinds = {type(layer) for layer in backbone._flatten_layers(include_self=False)}
    assert {FusedDense, FusedEinsumDense, FusedMultiHeadAttention, FusedDropout, FusedLayerNormalization,
            FusedTransformerEncoder} <= kinds
    assert not kinds & {keras.layers.Dense, keras.layers.MultiHeadAttention, keras.layers.Dropout,
                        keras.layers.LayerNormalization}
    # Inference (what is exported) holds no XLA; training compiles each layer's GELU and the ends of
    # its two blocks (bias, residual, LayerNorm).
    assert xla_calls(graph) == 0
    training_graph = tf.function(lambda features: backbone(features, training=True)).get_concrete_function(
        features).graph
    assert xla_calls(training_graph) == 6 * 3
    # In-process inference (predict, evaluate) takes them too, for the same function, and computes attention
    # a slice of the batch at a time (here one review a slice).
    monkeypatch.setattr(kernels, "SLICE_BYTES", 1)
    with compiled_inference():
        compiled_graph = tf.function(backbone).get_concrete_function(features).graph
        compiled = keras.ops.convert_to_numpy(backbone(features)["sequence_output"]).astype("float32")
    # and one more per layer: query, key and value take their bias, the scale and the padding mask in the
    # transpose to heads-first, out of the remapper's reach (oneDNN's MatMul fused with a bias leaves AMX);
    # training and exported graphs keep the bias beside the MatMul.
    assert xla_calls(compiled_graph) == 6 * 4
    assert [count_ops(g, "BiasAdd") for g in (graph, training_graph, compiled_graph)] == [6 * 4 + 1, 6 + 1, 1]
    # Queries (with the scale), keys (with the mask) and values split by reviews: in-process inference only.
    assert [count_ops(g, "SplitV") for g in (graph, training_graph, compiled_graph)] == [0, 0, 6 * 3]
    np.testing.assert_allclose(compiled[real_tokens], stock[real_tokens], atol=tolerance)


def test_predict_and_evaluate_trace_for_the_xla_kernels_a_plain_call_does_not():
    seen = []

    class Recorder(keras.layers.Layer):
        def call(self, inputs, training=None):
            seen.append(compiles_kernels(training))
            return inputs

    class Model(CompiledInferenceSteps, keras.Sequential):
        pass

    model = Model([Recorder()])
    model.compile(loss="mse")
    model(np.ones((2, 3)))
    called = list(seen)
    model.predict(np.ones((2, 3)), verbose=0)
    predicted = seen[len(called):]
    model.evaluate(np.ones((2, 3)), np.ones((2, 3)), verbose=0)
    evaluated = seen[len(called) + len(predicted):]
    assert set(called) == {False} and True in predicted and True in evaluated
    assert not compiles_kernels(training=False)  # the context closed


def count_ops(graph, op_type):
    return sum(op.type == op_type for op in graph.get_operations())


def xla_calls(graph):
    """How many function calls in `graph` XLA must compile."""
    return sum(op.node_def.attr["_XlaMustCompile"].b for op in graph.get_operations()
               if "_XlaMustCompile" in op.node_def.attr)


def test_fused_model_trains_and_its_copies_and_reloads_stay_fused(preset_path, tmp_path):
    keras.utils.set_random_seed(0)
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=32)
    preprocessor = classifier.preprocessor
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-4),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=[])
    features = preprocessor(["great film"] * 4 + ["awful film"] * 4)
    labels = np.array([1] * 4 + [0] * 4)
    before = classifier.evaluate(features, labels, verbose=0)
    classifier.fit(features, labels, epochs=5, batch_size=8, verbose=0)
    assert classifier.evaluate(features, labels, verbose=0) < before
    assert uses_fused_layers(inference_copy(classifier, dtype="float32"))
    save_classifier(classifier, str(tmp_path / "m.keras"))
    assert uses_fused_layers(load_classifier(str(tmp_path / "m.keras")))
    assert not uses_fused_layers(inference_copy(classifier, fused_layers=False))


@pytest.mark.parametrize("equation, bias_shape, kernel_shape, expected", [
    ("abc,cde->abde", (12, 32), (384, 12, 32), 1),  # query, key, value projections
    ("abcd,cde->abe", (384,), (12, 32, 384), 2),  # attention output
    ("abc,cd->abd", (16,), (8, 16), 1),
    ("abc,cde->abde", (32,), (384, 12, 32), None),  # bias over part of the kernel's axes
    ("abc,dce->abde", (12, 32), (12, 384, 32), None),  # contracted axis not leading in the kernel
])
def test_only_plain_contractions_take_the_fused_path(equation, bias_shape, kernel_shape, expected):
    assert contracted_axes(equation, bias_shape, kernel_shape) == expected


@pytest.mark.parametrize("shape", [(4, 6, 250, 250), (3, 7, 333)])  # an even and an odd last axis
def test_keep_mask_keeps_one_minus_rate_of_the_elements_and_a_seed_fixes_it(shape):
    mask = keep_mask(tf.constant(shape), 0.1, tf.constant([3, 4]))
    assert mask.shape == shape and mask.dtype == tf.bool
    kept = float(tf.reduce_mean(tf.cast(mask, tf.float32)))
    assert abs(kept - 0.9) < 0.003  # over 7,000+ elements: more than 5 standard deviations
    assert bool(tf.reduce_all(mask == keep_mask(tf.constant(shape), 0.1, tf.constant([3, 4]))))
    other = keep_mask(tf.constant(shape), 0.1, tf.constant([3, 5]))
    assert float(tf.reduce_mean(tf.cast(mask == other, tf.float32))) < 0.85  # independent masks agree on 0.82


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_dropout_drops_rate_of_the_inputs_scales_the_rest_and_passes_through_at_inference(dtype):
    layer = FusedDropout(0.25, seed=7, dtype=dtype)
    inputs = tf.ones([64, 1000], dtype)
    first, second = (layer(inputs, training=True).numpy().astype("float32") for _ in range(2))
    assert set(np.unique(first)) == {0.0, np.float32(tf.cast(1 / 0.75, dtype).numpy())}
    assert abs((first == 0).mean() - 0.25) < 0.01
    assert (first != second).any()  # each call draws a new mask
    assert np.array_equal(layer(inputs, training=False).numpy(), inputs.numpy())
    noise_shaped = FusedDropout(0.25, noise_shape=(64, 1), seed=7)(tf.ones([64, 1000]), training=True).numpy()
    assert (noise_shaped.min(axis=1) == noise_shaped.max(axis=1)).all()  # Keras' own path for a noise shape


def test_attention_dropout_keeps_the_expected_output():
    # Dropout on the attention probabilities with its scale folded into the values: averaged over
    # many draws, the output converges to the output without dropout (a missing scale gives 0.7x).
    keras.utils.set_random_seed(0)
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.3, seed=1)
    query = tf.random.normal([2, 5, 8])
    expected = attention(query, query, training=False).numpy()
    inputs = keras.Input([5, 8])
    assert use_fused_layers(keras.Model(inputs, attention(inputs, inputs))) == 6  # 4 projections, dropout, itself
    assert isinstance(attention, FusedMultiHeadAttention) and isinstance(attention._dropout_layer, FusedDropout)
    mean = np.mean([attention(query, query, training=True).numpy() for _ in range(400)], axis=0)
    assert np.abs(mean - expected).max() < 0.1 * np.abs(expected).max()
    assert not np.allclose(attention(query, query, training=True).numpy(), expected, atol=1e-3)


def test_fused_backbone_has_the_same_gradients(preset_path):
    # In training (no dropout, to compare): the one query-key-value MatMul, the compiled GELU with its bias,
    # attention's and LayerNorm's written-out gradients differentiate like the stock layers.
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=32, precision="off",
                                            fused_layers=False, backbone_dropout=0.0)
    features = classifier.preprocessor(["A wonderful, moving film.", "Dull. " * 10])
    backbone = classifier.backbone

    def gradients():
        with tf.GradientTape() as tape:
            output = backbone(features, training=True)["sequence_output"]
            loss = tf.reduce_sum(output * tf.random.stateless_normal(output.shape, (1, 2)))
        return [None if gradient is None else tf.convert_to_tensor(gradient).numpy()
                for gradient in tape.gradient(loss, backbone.trainable_weights)]  # None: the pooler

    stock = gradients()
    use_fused_layers(classifier)
    fused = gradients()
    assert [gradient is None for gradient in fused] == [gradient is None for gradient in stock]
    compared = [(expected, actual) for expected, actual in zip(stock, fused) if expected is not None]
    assert len(compared) > 50
    for expected, actual in compared:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(expected).max()))
