import json
import math
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest

from kerasbert import model
from kerasbert.errors import KerasbertError
from kerasbert.fused_layers import uses_fused_layers
from kerasbert.hardware import Gpu, Hardware
from kerasbert.model import TextClassifier, load_classifier, save_classifier
from kerasbert.optimizers import adamw_with_warmup
from tests.conftest import assert_same_predictions


def test_model_saves_and_reloads_with_identical_predictions(preset_path, tmp_path):
    classifier = TextClassifier.from_preset(preset_path, num_classes=3, sequence_length=32)
    preprocessor = classifier.preprocessor
    path = str(tmp_path / "model.keras")
    save_classifier(classifier, path)
    reloaded = load_classifier(path)
    texts = np.array(["An outstanding, moving film.", "Two hours I will never get back."])
    assert_same_predictions(classifier, reloaded, texts)
    assert reloaded.predict(texts, verbose=0).shape == (2, 3)
    assert reloaded.preprocessor.get_config() == preprocessor.get_config()
    assert reloaded.get_config()["num_classes"] == 3
    assert not list(tmp_path.glob("*partial*"))


def test_bf16_model_reloads_close(preset_path, tmp_path):
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=32, precision="bf16")
    save_classifier(classifier, str(tmp_path / "m.keras"))
    reloaded = load_classifier(str(tmp_path / "m.keras"))
    assert reloaded.dtype_policy.name == "mixed_bfloat16"
    assert_same_predictions(classifier, reloaded, np.array(["Great."]), atol=2e-2)


def test_sequence_longer_than_positions_is_refused(preset_path):
    with pytest.raises(KerasbertError, match="exceeds the model's 512 positions"):
        TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=1024)


def test_missing_or_corrupt_model_file(tmp_path):
    with pytest.raises(KerasbertError, match="does not exist"):
        load_classifier(str(tmp_path / "none.keras"))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(KerasbertError, match="cannot load model"):
        load_classifier(str(corrupt))


@pytest.mark.parametrize("machine, policy, loss_scaling", [
    (Hardware("AMD EPYC 7R13", ("avx2", "fma"), 2), "float32", False),
    (Hardware("AMD EPYC 9R14", ("avx2", "avx512_bf16"), 2), "mixed_bfloat16", False),
    (Hardware(gpus=(Gpu("Tesla T4", (7, 5)),)), "mixed_float16", True),
])
def test_auto_precision_builds_and_compiles_for_the_hardware(preset_path, monkeypatch, machine, policy, loss_scaling):
    monkeypatch.setattr(model, "detect_hardware", lambda warn: machine)
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=32)
    assert classifier.dtype_policy.name == policy
    assert classifier.backbone.dtype_policy.name == policy
    classifier.compile(optimizer=adamw_with_warmup(5e-5, total_steps=10))  # compile decides on loss scaling
    assert isinstance(classifier.optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaling


RELOAD_SCRIPT = """
import json, sys
import keras, keras_hub, kerasbert.model
from kerasbert.fused_layers import uses_fused_layers
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
print(json.dumps({"class": type(model).__name__, "class_names": list(model.class_names),
                  "fused": uses_fused_layers(model), "probabilities":
                  keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(json.loads(sys.argv[2]), verbose=0))).tolist()}))
"""


def test_plain_keras_save_and_load_keep_class_names_fusion_and_predictions(preset_path, tmp_path):
    classifier = TextClassifier.from_preset(preset_path, class_names=["bad", "good", "meh"], sequence_length=32,
                                            precision="off")
    path = str(tmp_path / "plain.keras")
    classifier.save(path)  # Keras' own save, no kerasbert helper
    texts = ["An outstanding, moving film.", "Two hours I will never get back.", "It was fine."]
    result = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, path, json.dumps(texts)],
                            capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    reloaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert reloaded["class"] == "TextClassifier" and reloaded["fused"]
    assert reloaded["class_names"] == ["bad", "good", "meh"]
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(classifier.predict(texts, verbose=0)))
    assert np.abs(np.array(reloaded["probabilities"]) - expected).max() <= 1e-6


def test_text_classifier_config_round_trips_on_a_tiny_backbone():
    backbone = keras_hub.models.BertBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=16)
    classifier = TextClassifier(backbone, class_names=["neg", "pos"], fused_layers=False)
    config = classifier.get_config()
    assert config["class_names"] == ["neg", "pos"] and config["fused_layers"] is False
    copy = TextClassifier.from_config(json.loads(json.dumps(keras.saving.serialize_keras_object(classifier)))["config"])
    assert copy.class_names == ("neg", "pos") and not uses_fused_layers(copy)
    assert TextClassifier(backbone, num_classes=3).class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match="does not match"):
        TextClassifier(backbone, num_classes=3, class_names=["a", "b"])


def hugging_face_bert(weights, token_ids, gelu):
    """The Hugging Face BERT definition in numpy: one unpadded text's last hidden states."""
    erf = np.vectorize(math.erf)

    def layer_norm(x, prefix):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
        return x * weights[prefix + ".weight"] + weights[prefix + ".bias"]

    def dense(x, prefix):
        return x @ weights[prefix + ".weight"].T + weights[prefix + ".bias"]

    activation = {"exact": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))),
                  "tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))}[gelu]
    x = (weights["embeddings.word_embeddings.weight"][token_ids]
         + weights["embeddings.position_embeddings.weight"][:len(token_ids)]
         + weights["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, "embeddings.LayerNorm")
    heads = 12
    for index in range(6):
        prefix = f"encoder.layer.{index}."
        q, k, v = (dense(x, prefix + f"attention.self.{name}").reshape(len(token_ids), heads, -1).transpose(1, 0, 2)
                   for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(len(token_ids), -1)
        x = layer_norm(x + dense(context, prefix + "attention.output.dense"), prefix + "attention.output.LayerNorm")
        inner = activation(dense(x, prefix + "intermediate.dense"))
        x = layer_norm(x + dense(inner, prefix + "output.dense"), prefix + "output.LayerNorm")
    return x


@pytest.mark.parametrize("fused_layers", [True, False])
def test_the_offline_minilm_computes_what_its_hugging_face_definition_computes(preset_path, fused_layers):
    from safetensors.numpy import load_file

    weights = {name: value.astype(np.float64) for name, value in
               load_file(f"{preset_path}/model.safetensors").items()}
    classifier = TextClassifier.from_preset(preset_path, num_classes=2, sequence_length=32, precision="off",
                                            fused_layers=fused_layers)
    preprocessor = classifier.preprocessor
    features = preprocessor(["A wonderful film, moving and funny; I would see it again."])
    length = int(features["padding_mask"].numpy().sum())
    ours = classifier.backbone(features)["sequence_output"].numpy()[0, :length]
    token_ids = features["token_ids"].numpy()[0, :length]
    assert classifier.feedforward_activation == "gelu"  # config.json: hidden_act "gelu", the erf form
    assert np.abs(ours - hugging_face_bert(weights, token_ids, "exact")).max() < 2e-4
    assert np.abs(ours - hugging_face_bert(weights, token_ids, "tanh")).max() > 1e-3  # KerasHub's own GELU
