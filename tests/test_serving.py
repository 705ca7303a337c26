"""What TF Serving loads, on a tiny random classifier: requests padded only to their longest
text, warm-up requests for every padded width, the batching file, the served precision."""

import os
import re

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from kerasbert.deploy import export, serving
from kerasbert.errors import KerasbertError
from kerasbert.model import TextClassifier
from kerasbert.preprocessing import preprocessor_from_vocabulary
from tests.conftest import ROOT

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["the film was good", "the story was not bad but the acting felt long and slow",
         " ".join(serving.WARMUP_WORDS * 4)]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    vocabulary = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocabulary.write_text("\n".join(SPECIAL + sorted(set(serving.WARMUP_WORDS))) + "\n")
    preprocessor = preprocessor_from_vocabulary(str(vocabulary), sequence_length=48, truncation="head+tail")
    backbone = keras_hub.models.BertBackbone(vocabulary_size=preprocessor.tokenizer.vocabulary_size(), num_layers=1,
                                             num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=48)
    return TextClassifier(backbone, class_names=["neg", "pos"], preprocessor=preprocessor)


def mixed_lengths(count):
    """`count` texts of 1 to 40 words, in no order of length."""
    lengths = np.random.default_rng(0).integers(1, 41, count)
    return [" ".join(serving.WARMUP_WORDS[(i + j) % len(serving.WARMUP_WORDS)] for j in range(n))
            for i, n in enumerate(lengths)]


def test_warmup_texts_cover_every_padded_width_at_each_batch_size(tiny_classifier):
    requests = serving.warmup_texts(48)
    assert sorted({len(texts) for texts in requests}) == list(serving.WARMUP_BATCH_SIZES)
    widths = []
    assert len(requests[0]) == max(serving.WARMUP_BATCH_SIZES) and len(requests[-1]) == 1, "single reviews last"
    for texts in requests[len(requests) // 2:]:
        packed = tiny_classifier.preprocessor.tokenize_and_pack(tf.constant(texts))
        widths.append(int(tf.reduce_sum(packed["padding_mask"])))
        assert not np.any(packed["token_ids"].numpy() == 1), "every warm-up word is in the vocabulary"
    assert widths == [16, 32, 48]


def test_saved_model_pads_each_request_to_its_longest_text_only(tiny_classifier, tmp_path):
    version = export.saved_model(tiny_classifier, str(tmp_path / "imdb"), precision="off")
    loaded = tf.saved_model.load(version)
    for texts in (TEXTS, mixed_lengths(2 * serving.SUB_BATCH + 3)):  # one sub-batch; several, the last short
        served = loaded.signatures["serving_default"](text=tf.constant(texts))
        full = tiny_classifier.preprocessor.tokenize_and_pack(tf.constant(texts))
        padded = loaded.signatures["predict_tokens"](**full)
        np.testing.assert_allclose(served["probabilities"].numpy(), padded["probabilities"].numpy(), atol=1e-5)
        assert served["class_name"].numpy().tolist() == padded["class_name"].numpy().tolist()
    empty = loaded.signatures["serving_default"](text=tf.constant([], tf.string))["probabilities"]
    assert empty.shape == (0, 2)
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    assert any("StridedSlice" in node.op for function in graph.library.function for node in function.node_def)


def test_saved_model_carries_warmup_requests_and_a_batching_file(tiny_classifier, tmp_path):
    version = export.saved_model(tiny_classifier, str(tmp_path / "imdb"), precision="off")
    records = list(tf.data.TFRecordDataset(os.path.join(version, serving.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == len(serving.warmup_texts(48))
    request = prediction_log_pb2.PredictionLog.FromString(records[0]).predict_log.request
    assert request.model_spec.name == "imdb" and request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs["text"]).shape == (32,)
    assert serving.replay_warmup_requests(version, tf.saved_model.load(version)) == len(records)
    batching = open(os.path.join(version, serving.BATCHING_FILE)).read()
    assert "max_batch_size { value: " in batching and "num_batch_threads { value: " in batching
    named = [path for path in re.findall(r"\b[\w/]+\.(?:py|md)\b", batching)]  # what a reader is sent to
    assert named and all(os.path.isfile(os.path.join(ROOT, path)) for path in named), named


def test_served_precision_is_the_one_asked_for(tiny_classifier, tmp_path):
    paths = [export.saved_model(tiny_classifier, str(tmp_path / name), precision=precision)
             for name, precision in (("a", "off"), ("b", "bf16"))]
    float32, bf16 = map(tf.saved_model.load, paths)

    def matmul_types(loaded):
        graph = loaded.signatures["serving_default"].graph.as_graph_def()
        nodes = [node for function in graph.library.function for node in function.node_def]
        return {tf.dtypes.as_dtype(node.attr["T"].type).name for node in nodes if node.op in ("MatMul", "BatchMatMulV2",
                                                                                             "Einsum")}

    def float_variables(path):
        stored = tf.train.load_checkpoint(os.path.join(path, "variables", "variables")).get_variable_to_dtype_map()
        return {dtype.name for name, dtype in stored.items() if dtype.is_floating and "/optimizer/" not in name}

    assert matmul_types(float32) == {"float32"} and float_variables(paths[0]) == {"float32"}
    assert "bfloat16" in matmul_types(bf16)
    assert float_variables(paths[1]) == {"bfloat16"}  # stored as computed: no per-request cast of the weights
    outputs = [model.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"].numpy()
               for model in (float32, bf16)]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=2e-2)


@pytest.mark.parametrize("format, says", [("onnx", "no parity-checked tf2onnx conversion"), ("jax", "must be 'tf_saved_model'")])
def test_keras_export_says_in_one_line_why_a_format_is_not_written(tiny_classifier, tmp_path, format, says):
    with pytest.raises(ValueError, match=says) as raised:
        tiny_classifier.export(str(tmp_path / "out"), format=format)
    assert "\n" not in str(raised.value) and not (tmp_path / "out").exists()


def test_keras_export_refuses_a_path_that_exists(tiny_classifier, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(KerasbertError, match="exists already"):
        tiny_classifier.export(str(tmp_path / "taken"))
    assert list((tmp_path / "taken").iterdir()) == []
