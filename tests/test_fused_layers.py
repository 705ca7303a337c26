import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.fused_layers import (FusedDense, FusedEinsumDense, FusedMultiHeadAttention, contracted_axes,
                                    use_fused_layers, uses_fused_layers)
from kerasbert.model import build_classifier, inference_copy, load_classifier, save_classifier


@pytest.mark.parametrize("mixed_precision, tolerance", [("off", 1e-5), ("bf16", 0.1)])
def test_fused_backbone_computes_the_same_function_with_padding(preset_path, mixed_precision, tolerance):
    classifier, preprocessor = build_classifier(preset_path, 2, 48, mixed_precision=mixed_precision,
                                                fused_layers=False)
    features = preprocessor(["A wonderful, moving film with a great cast.", "Dull. " * 30, "No."])
    assert features["padding_mask"].numpy().min() == 0  # some rows are padded
    backbone = classifier.backbone
    stock = keras.ops.convert_to_numpy(backbone(features)["sequence_output"]).astype("float32")
    assert not uses_fused_layers(classifier)
    assert use_fused_layers(classifier) == 6 * 7 + 2  # per layer 4 projections, 2 FFN, attention; pooler, head
    fused = keras.ops.convert_to_numpy(backbone(features)["sequence_output"]).astype("float32")
    real_tokens = features["padding_mask"].numpy() == 1
    np.testing.assert_allclose(fused[real_tokens], stock[real_tokens], atol=tolerance)
    graph = tf.function(backbone).get_concrete_function(features).graph
    op_types = collections.Counter(op.type for op in graph.get_operations())
    # Every projection is a 2-D MatMul: 4 + 2 per layer and the pooler; BatchMatMuls only in attention.
    assert (op_types["MatMul"], op_types["BatchMatMulV2"], op_types["Einsum"]) == (6 * 6 + 1, 6 * 2, 0)
    kinds = {type(layer) for layer in backbone._flatten_layers(include_self=False)}
    assert {FusedDense, FusedEinsumDense, FusedMultiHeadAttention} <= kinds
    assert keras.layers.Dense not in kinds and keras.layers.MultiHeadAttention not in kinds


def test_fused_model_trains_and_its_copies_and_reloads_stay_fused(preset_path, tmp_path):
    keras.utils.set_random_seed(0)
    classifier, preprocessor = build_classifier(preset_path, 2, 32)
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
