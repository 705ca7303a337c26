import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.backbone import pooled_output
from kerasbert.model import TextClassifier, load_classifier, save_classifier

BATCH, LENGTH, HIDDEN, INTERMEDIATE, LAYERS, HEADS = 3, 10, 8, 16, 2, 2


def tiny_classifier(**options):
    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=40, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
                                             intermediate_dim=INTERMEDIATE, max_sequence_length=16)
    return TextClassifier(backbone, class_names=["neg", "pos"], **options)


def padded_features():
    lengths = np.array([LENGTH, 6, 2])
    padding_mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype("int32")
    token_ids = np.random.default_rng(0).integers(4, 40, (BATCH, LENGTH)).astype("int32") * padding_mask
    return {"token_ids": tf.constant(token_ids), "segment_ids": tf.zeros([BATCH, LENGTH], tf.int32),
            "padding_mask": tf.constant(padding_mask)}


@pytest.mark.parametrize("fused_layers", [True, False])
def test_the_trimmed_backbone_computes_the_backbones_pooled_output(fused_layers):
    classifier = tiny_classifier(fused_layers=fused_layers)
    features = padded_features()
    full = classifier.backbone(features)["pooled_output"]
    np.testing.assert_allclose(pooled_output(classifier.backbone, features), full, atol=1e-5)
    # Padded keys stay masked: changing the tokens under the padding changes nothing.
    features["token_ids"] = tf.where(features["padding_mask"] == 1, features["token_ids"], 7)
    np.testing.assert_allclose(pooled_output(classifier.backbone, features), full, atol=1e-5)
    untrimmed = tiny_classifier(fused_layers=fused_layers, trim_last_layer=False)
    np.testing.assert_allclose(classifier(features), untrimmed(features), atol=1e-5)
    # Anything but the dict of inputs gets Keras' own message, as the untrimmed model does.
    with pytest.raises(ValueError, match="structure of `inputs`"):
        classifier([features[name] for name in ("padding_mask", "segment_ids", "token_ids")])


def multiply_adds(model, features):
    """Multiply-adds of every MatMul and BatchMatMul in the traced inference graph (static shapes)."""
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(features).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("MatMul", "BatchMatMulV2"):
            a, b = (np.array(tensor.shape.as_list()) for tensor in op.inputs)
            adjoint_a = op.get_attr("adj_x" if op.type == "BatchMatMulV2" else "transpose_a")
            adjoint_b = op.get_attr("adj_y" if op.type == "BatchMatMulV2" else "transpose_b")
            rows, inner = (a[-1], a[-2]) if adjoint_a else (a[-2], a[-1])
            columns = b[-2] if adjoint_b else b[-1]
            total += int(np.prod(a[:-2], dtype=np.int64)) * rows * inner * columns
    return total


def test_trimming_skips_all_of_the_last_layer_but_its_keys_and_values():
    features = padded_features()
    saved = multiply_adds(tiny_classifier(trim_last_layer=False), features) - \
        multiply_adds(tiny_classifier(), features)
    tokens, others = BATCH * LENGTH, BATCH * (LENGTH - 1)
    # Untrimmed, the last layer computes its query, attention output and feed-forward at every position and
    # a LENGTH x LENGTH attention; trimmed, at [CLS] only, and one attention row. Each head's scores take one
    # feature more than its size: the keys' padding mask (`kerasbert.kernels.attention_scores`).
    projections = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * INTERMEDIATE
    assert saved == others * projections + (tokens * LENGTH - BATCH * LENGTH) * (2 * HIDDEN + HEADS)


def test_every_weight_of_a_trimmed_classifier_learns():
    classifier = tiny_classifier()
    classifier.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [np.array(weight) for weight in classifier.trainable_weights]
    classifier.fit(padded_features(), np.array([0, 1, 1]), epochs=1, batch_size=BATCH, verbose=0)
    unchanged = [weight.path for weight, old in zip(classifier.trainable_weights, before)
                 if np.array_equal(np.array(weight), old)]
    assert unchanged == []


def test_trim_last_layer_is_saved_and_older_configs_load_trimmed(tmp_path):
    classifier = tiny_classifier(trim_last_layer=False)
    path = str(tmp_path / "untrimmed.keras")
    save_classifier(classifier, path)
    assert load_classifier(path).trim_last_layer is False
    config = classifier.get_config()
    del config["trim_last_layer"]
    assert TextClassifier.from_config(config).trim_last_layer is True


@pytest.mark.parametrize("mixed_precision, tolerance", [("off", 1e-5), ("bf16", 0.05)])
def test_the_offline_minilm_gives_the_same_logits_trimmed(preset_path, mixed_precision, tolerance):
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=48, precision=mixed_precision)
    preprocessor = classifier.preprocessor
    features = preprocessor(["A wonderful, moving film with a great cast.", "Dull. " * 30, "No."])
    trimmed = keras.ops.convert_to_numpy(classifier(features)).astype("float32")
    classifier.trim_last_layer = False
    np.testing.assert_allclose(trimmed, keras.ops.convert_to_numpy(classifier(features)).astype("float32"),
                               atol=tolerance)
