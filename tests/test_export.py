import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kerasbert.deploy import export, parity, tflite
from kerasbert.splits import load_splits
from kerasbert.deploy.predict import load_predictor
from kerasbert.job import cli
from kerasbert.job.training import train_and_evaluate
from tests.conftest import tiny_config

REVIEWS = ["A beautiful, moving film with wonderful acting.", "Dreadful. Two hours I will never get back.",
           "Crème brûlée for the eyes: Amélie's director at his best.", "meh"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("export"), epochs=2, learning_rate=2e-4)
    train_and_evaluate(config)
    return config.output_dir


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("saved_models"))
    code = cli.main(["export", "--run", run_dir, "--export-root", root, "--tflite", "float32,float16,dynamic-int8",
                     "--parity-examples", "24", "--serving-precision", "off"])
    assert code == 0
    return root


def keras_probabilities(run_dir, texts):
    predictor = load_predictor(os.path.join(run_dir, "model.keras"))
    return predictor.predict_probabilities(texts)


SERVER_SCRIPT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (TF Text ops of the tokenizer)
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = served(text=tf.constant(json.loads(sys.argv[2])))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("kerasbert", "keras_hub", "keras_nlp"))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "class_name": [n.decode() for n in out["class_name"].numpy()], "leaked": leaked}))
"""


def test_saved_model_serves_raw_text_in_a_process_without_keras(run_dir, exported):
    version = os.path.join(exported, "kerasbert", "1")
    result = subprocess.run([sys.executable, "-c", SERVER_SCRIPT, version, json.dumps(REVIEWS)],
                            capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["leaked"] == []
    with open(os.path.join(version, "saved_model.pb"), "rb") as file:
        assert b"_XlaMustCompile" not in file.read()  # in-process predict compiles XLA kernels; exports hold none
    expected = keras_probabilities(run_dir, REVIEWS)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-4)
    assert served["class_name"] == [["neg", "pos"][k] for k in expected.argmax(1)]


FIRST_REQUESTS_SCRIPT = """
import json, sys, time
import tensorflow as tf
import tensorflow_text  # noqa: F401
from kerasbert.deploy.serving import replay_warmup_requests
loaded = tf.saved_model.load(sys.argv[1])
replayed = replay_warmup_requests(sys.argv[1], loaded)
serve = loaded.signatures["serving_default"]
seconds = []
for text in json.loads(sys.argv[2]):
    # The process's CPU time, not the wall clock: the suite runs on two workers, and the other
    # worker's load would add waiting to whichever request it lands on. What warm-up saves
    # (tracing, graph optimisation: about 0.6 s here) is CPU time either way.
    started = time.process_time()
    serve(text=tf.constant([text]))
    seconds.append(time.process_time() - started)
print(json.dumps({"replayed": replayed, "seconds": seconds}))
"""


def test_first_request_after_a_warm_load_is_as_fast_as_the_tenth(exported, real_reviews):
    version = os.path.join(exported, "kerasbert", "1")
    reviews = [text for text, _ in real_reviews[:10]]
    result = subprocess.run([sys.executable, "-c", FIRST_REQUESTS_SCRIPT, version, json.dumps(reviews)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["replayed"] == (32 // 16) * 2, "batch 1 and 32 at every width up to the run's 32 tokens"
    first, rest = measured["seconds"][0], sorted(measured["seconds"][1:])
    assert first <= 2 * rest[len(rest) // 2], measured["seconds"]


def test_auto_serving_precision_is_bf16_on_a_bf16_cpu_unless_it_misses_parity(run_dir, tmp_path, monkeypatch):
    from kerasbert.hardware import Hardware

    monkeypatch.setattr(export, "detect_hardware", lambda: Hardware("AMD EPYC 9R14", ("avx2", "avx512_bf16"), 2))
    arguments = ["export", "--run", run_dir, "--tflite", "", "--parity-examples", "24"]
    assert cli.main(arguments + ["--export-root", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "kerasbert" / "1" / "parity.json").read_text())
    assert (report["artifact"], report["precision"]) == ("saved_model-bf16", "mixed_bfloat16")
    monkeypatch.setitem(parity.AGREEMENT_BARS, "saved_model-bf16", 1.01)  # a bar bf16 cannot meet
    assert cli.main(arguments + ["--export-root", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "kerasbert" / "1" / "parity.json").read_text())
    assert (report["artifact"], report["precision"]) == ("saved_model", "float32")
    assert os.listdir(tmp_path / "b" / "kerasbert") == ["1"], "the bf16 attempt left nothing behind"


def test_versions_and_parity_files(exported):
    model_root = os.path.join(exported, "kerasbert")
    assert sorted(os.listdir(model_root)) == ["1", "tflite"]
    saved = json.loads(open(os.path.join(model_root, "1", "parity.json")).read())
    assert saved["examples"] == 24 and saved["argmax_agreement"] >= 0.999
    assert saved["max_abs_probability_difference"] < 1e-3
    folder = os.path.join(model_root, "tflite", "1")
    for variant in ("float32", "float16", "dynamic-int8"):
        report = json.loads(open(os.path.join(folder, f"parity-{variant}.json")).read())
        assert report["argmax_agreement"] >= parity.AGREEMENT_BARS[variant]
    int8 = os.path.getsize(os.path.join(folder, "dynamic-int8.tflite"))
    assert int8 < os.path.getsize(os.path.join(folder, "float32.tflite")) / 3
    assert oct(os.stat(os.path.join(model_root, "1")).st_mode & 0o777) == "0o755"


def test_next_export_takes_the_next_version_and_an_existing_one_is_refused(run_dir, exported, capsys):
    model_root = os.path.join(exported, "kerasbert")
    before = sorted(os.listdir(os.path.join(model_root, "1")))
    assert cli.main(["export", "--run", run_dir, "--export-root", exported, "--version", "1",
                     "--tflite", "", "--parity-examples", "0"]) == 2
    assert "kerasbert/1 already exists (pass --overwrite" in capsys.readouterr().err
    assert sorted(os.listdir(os.path.join(model_root, "1"))) == before
    assert cli.main(["export", "--run", run_dir, "--export-root", exported, "--tflite", "",
                     "--parity-examples", "0"]) == 0
    assert sorted(os.listdir(model_root)) == ["1", "2", "tflite"], "no partial folder left behind"


def test_grpc_request_matches_the_exported_signature(exported):
    import tensorflow as tf
    from tensorflow.core.framework.types_pb2 import DataType
    from tensorflow_serving.apis import predict_pb2

    version = os.path.join(exported, "kerasbert", "1")
    shown = subprocess.run(["saved_model_cli", "show", "--dir", version, "--tag_set", "serve",
                            "--signature_def", "serving_default"], capture_output=True, text=True,
                           env={**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    assert shown.returncode == 0, shown.stderr[-1000:]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "kerasbert"
    request.model_spec.signature_name = "serving_default"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(REVIEWS))
    (name, tensor), = request.inputs.items()
    inputs_section = shown.stdout.split("output(s):")[0]
    assert f"inputs['{name}'] tensor_info:\n      dtype: {DataType.Name(tensor.dtype)}" in inputs_section
    assert inputs_section.count("tensor_info") == 1, "the request must fill every input of the signature"
    assert "outputs['probabilities']" in shown.stdout and "outputs['class_name']" in shown.stdout


@pytest.mark.parametrize("artifact", ["model.keras", "saved_model", "float32.tflite", "dynamic-int8.tflite",
                                      "float16-text.tflite", "dynamic-int8-text.tflite"])
def test_every_artifact_predicts_like_the_keras_model(run_dir, exported, artifact):
    paths = {"model.keras": os.path.join(run_dir, "model.keras"),
             "saved_model": os.path.join(exported, "kerasbert", "1")}
    path = paths.get(artifact, os.path.join(exported, "kerasbert", "tflite", "1", artifact))
    predictor = load_predictor(path)
    assert predictor.class_names == ["neg", "pos"]
    rows = predictor.predict(REVIEWS)
    expected = keras_probabilities(run_dir, REVIEWS)
    assert [row["label"] for row in rows] == [["neg", "pos"][k] for k in expected.argmax(1)]
    tolerance = 2e-2 if "int8" in artifact or "16" in artifact else 1e-3
    np.testing.assert_allclose([row["probability"] for row in rows], expected.max(1), atol=tolerance)


def test_token_tflite_takes_any_width_up_to_the_sequence_length(exported):
    model = tflite.TFLiteClassifier(os.path.join(exported, "kerasbert", "tflite", "1", "float32.tflite"))
    features = {name: value.numpy() for name, value in model.preprocessor(REVIEWS).items()}
    longest = int(features["padding_mask"].sum(1).max())
    assert longest < features["token_ids"].shape[1], "the reviews must leave padding to trim"
    full = model.run(features)
    trimmed = model.run({name: value[:, :longest] for name, value in features.items()})
    shortest = int(features["padding_mask"][3].sum())
    one = model.run({name: value[3:, :shortest] for name, value in features.items()})
    assert model.shape == (1, shortest)
    np.testing.assert_allclose(trimmed, full, atol=1e-5)
    np.testing.assert_allclose(one, full[3:], atol=1e-5)


def test_predict_cli_streams_files_to_jsonl(run_dir, exported, tmp_path, capsys):
    model = os.path.join(exported, "kerasbert", "tflite", "1", "dynamic-int8.tflite")
    inputs = {"reviews.txt": "\n".join(REVIEWS) + "\n",
              "reviews.csv": "text,id\n" + "\n".join(f'"{r}",{i}' for i, r in enumerate(REVIEWS)) + "\n",
              "reviews.jsonl": "\n".join(json.dumps({"text": r}) for r in REVIEWS) + "\n"}
    for name, content in inputs.items():
        (tmp_path / name).write_text(content)
        output = tmp_path / f"{name}.out.jsonl"
        assert cli.main(["predict", "--model", model, "--input", str(tmp_path / name), "--output", str(output),
                         "--batch-size", "3"]) == 0
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(rows) == 4 and {row["label"] for row in rows} <= {"neg", "pos"}
        assert [row["line"] for row in rows] == ([1, 2, 3, 4] if name.endswith(".txt") else
                                                 [2, 3, 4, 5] if name.endswith(".csv") else [1, 2, 3, 4])
        assert [row.get("id") for row in rows] == (["0", "1", "2", "3"] if name.endswith(".csv") else [None] * 4)
    shown = capsys.readouterr().out  # not a terminal: plain lines, no bar
    assert shown.count("4 of 4 texts predicted") == 3 and "\x1b[" not in shown and "\r" not in shown
    assert cli.main(["predict", "--model", model, "--input", str(tmp_path / "reviews.csv"), "--output",
                     str(tmp_path / "reviews.csv")]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert (tmp_path / "reviews.csv").read_text() == inputs["reviews.csv"]
    assert cli.main(["predict", "--model", model, "A joyful film."]) == 0
    label, probability, text = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert label in ("neg", "pos") and 0.5 <= float(probability) <= 1 and text == "A joyful film."


def test_predict_handles_a_huge_review_and_a_large_batch(exported):
    predictor = load_predictor(os.path.join(exported, "kerasbert", "1"))
    huge = "This film is long. " * 55000  # about 1 MB
    assert len(huge) > 1_000_000
    assert len(predictor.predict([huge])) == 1
    rows = predictor.predict([f"review number {i}" for i in range(10000)])
    assert len(rows) == 10000


def bad_artifact(folder, kind):
    """A path that is not a usable model: missing, corrupt, or of an unknown kind."""
    contents = {"corrupt.tflite": b"not a flatbuffer", "broken/saved_model.pb": b"\x00garbage",
                "model.onnx": b"", "folder/notes.txt": b"no model here"}
    if kind in contents:
        path = folder / kind
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(contents[kind])
        return path.parent if path.parent != folder else path
    return folder / kind


@pytest.mark.parametrize("kind, message", [
    ("missing.keras", "does not exist"),
    ("corrupt.tflite", "cannot load TFLite model"),
    ("folder/notes.txt", "without saved_model.pb"),
    ("broken/saved_model.pb", "cannot load SavedModel"),
    ("model.onnx", "unknown model type"),
])
def test_predict_on_missing_or_corrupt_artifacts(tmp_path, capsys, kind, message):
    path = bad_artifact(tmp_path, kind)
    assert cli.main(["predict", "--model", str(path), "some text"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_predict_on_empty_or_non_utf8_input(exported, tmp_path, capsys):
    model = os.path.join(exported, "kerasbert", "1")
    (tmp_path / "empty.txt").write_text("\n\n")
    assert cli.main(["predict", "--model", model, "--input", str(tmp_path / "empty.txt")]) == 2
    assert "holds no texts" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("good\nna\xefve\n".encode("latin-1"))
    assert cli.main(["predict", "--model", model, "--input", str(tmp_path / "latin1.txt"), "--output",
                     str(tmp_path / "out.jsonl")]) == 2
    assert "line 2 is not valid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_export_bad_input(run_dir, tmp_path, capsys):
    assert cli.main(["export", "--run", str(tmp_path)]) == 2
    assert "it is not a kerasbert run directory (no config.json)" in capsys.readouterr().err
    root = tmp_path / "exports"
    assert cli.main(["export", "--run", run_dir, "--tflite", "int4", "--export-root", str(root)]) == 2
    assert "unknown TFLite format 'int4'" in capsys.readouterr().err
    assert not root.exists()


def test_tflite_tokenizer_matches_the_kerashub_preprocessor_on_real_reviews(preset_path):
    from kerasbert.preprocessing import ReviewPreprocessor
    from tests.conftest import TFDS_DIR

    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=128, truncation="head+tail")
    reviews = load_splits(data_dir=str(TFDS_DIR), max_train_examples=10, max_test_examples=300).test.texts.tolist()
    accented = ["Amélie and Zoë were naïve; Björk's Selma in Dancer in the Dark is a tour de force.",
                "CRÈME BRÛLÉE, Señor Almodóvar: déjà vu."]
    assert tflite.tokenizer_mismatches(preprocessor, accented) == []
    mismatched = tflite.tokenizer_mismatches(preprocessor, reviews)
    assert len(mismatched) <= 3, [reviews[i][:200] for i in mismatched]
    assert all(any(ord(ch) > 127 for ch in reviews[i]) for i in mismatched)


def test_known_residue_no_break_space_still_differs(preset_path):
    """KerasHub 0.32 does not split on U+00A0 (Hugging Face and tf-text do); fails once upstream fixes it."""
    from kerasbert.preprocessing import ReviewPreprocessor

    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=32)
    assert tflite.tokenizer_mismatches(preprocessor, ["it seemed to\u00a0suffer from both"]) == [0]
    assert tflite.tokenizer_mismatches(preprocessor, ["it seemed to suffer from both"]) == []


def test_a_fitted_classifier_exports_without_a_run_directory(run_dir, tmp_path):
    from kerasbert.model import load_classifier

    classifier = load_classifier(os.path.join(run_dir, "model.keras"))
    path = export.saved_model(classifier, str(tmp_path / "imdb"), precision="off")
    assert path == str(tmp_path / "imdb" / "1")
    served = load_predictor(path)
    assert served.class_names == ["neg", "pos"]
    np.testing.assert_allclose(served.predict_probabilities(REVIEWS), keras_probabilities(run_dir, REVIEWS), atol=1e-4)
    assert export.saved_model(classifier, str(tmp_path / "imdb")) == str(tmp_path / "imdb" / "2")
    folder = export.tflite_models(classifier, str(tmp_path / "tflite"), ["float32"])
    assert sorted(os.listdir(folder))[:2] == ["float32-text.tflite", "float32.tflite"]
    assert load_predictor(os.path.join(folder, "float32-text.tflite")).class_names == ["neg", "pos"]
    with pytest.raises(ValueError, match="TFLite variants must be some of"):
        export.tflite_models(classifier, str(tmp_path / "tflite"), ["int4"])
    classifier.preprocessor = None
    with pytest.raises(ValueError, match="has no preprocessor"):
        export.saved_model(classifier, str(tmp_path / "imdb"))
