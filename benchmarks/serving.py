"""Serving speed and accuracy of kerasbert's artifacts against ONNX Runtime, on the same
fine-tuned checkpoint and the same real IMDB test reviews, in one interleaved run.

    pip install -r benchmarks/requirements-serving.txt    # torch, transformers, onnx, onnxruntime
    python benchmarks/serving.py --run runs/latest --data-dir ../shared/data/tensorflow_datasets

Artifacts: the SavedModel as `kerasbert export` writes it (float32, and bf16 where the CPU
has it), the SavedModel as it was before requests were padded to their longest text
("pads to 256"), the TFLite models, and ONNX Runtime on the same weights (exported from
Hugging Face's `BertForSequenceClassification` with the fine-tuned weights copied in,
optimized with ORT's transformer optimizer; fp32 and `quantize_dynamic` int8).

Every measurement runs in a fresh process. The SavedModel's process imports only
tensorflow, tensorflow_text and the TF Serving protos, loads the version and replays its
warm-up requests, as TF Serving does. Throughput: batches of 32 and 64 in test order
(strings-in TFLite: one review per call, its natural batch); latency: one review per call.
Rounds alternate the artifacts; results are medians over rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SAVED_MODEL_WORKER = """
import json, sys, time
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401
from tensorflow_serving.apis import prediction_log_pb2
job = json.load(open(sys.argv[1]))
tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
tf.config.threading.set_inter_op_parallelism_threads(job["threads"])
started = time.perf_counter()
loaded = tf.saved_model.load(job["path"])
serve = loaded.signatures["serving_default"]
warmup = job["path"] + "/assets.extra/tf_serving_warmup_requests"
if tf.io.gfile.exists(warmup):
    for record in tf.data.TFRecordDataset(warmup).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        serve(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
else:
    serve(text=tf.constant(job["texts"][:2]))
load_seconds = time.perf_counter() - started
predict = lambda texts: serve(text=tf.constant(texts))["probabilities"].numpy()
"""

TFLITE_WORKER = """
import json, sys, time
import numpy as np
from kerasbert.deploy.tflite import TFLiteClassifier
job = json.load(open(sys.argv[1]))
started = time.perf_counter()
model = TFLiteClassifier(job["path"], threads=job["threads"])
model.predict_probabilities(job["texts"][:2])
load_seconds = time.perf_counter() - started
predict = model.predict_probabilities
"""

ONNX_WORKER = """
import json, sys, time
import numpy as np
import onnxruntime
from tokenizers import Tokenizer
job = json.load(open(sys.argv[1]))
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = job["threads"]
options.inter_op_num_threads = 1
options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
started = time.perf_counter()
session = onnxruntime.InferenceSession(job["path"], options, providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(job["tokenizer"])
tokenizer.enable_truncation(job["length"])
tokenizer.enable_padding()  # to the longest review of the batch, as Optimum's pipelines do
def predict(texts):
    encoded = tokenizer.encode_batch(texts)
    feed = {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], np.int64)}
    logits = session.run(["logits"], feed)[0]
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)
predict(job["texts"][:2])
load_seconds = time.perf_counter() - started
"""

MEASURE = """
texts, labels = job["texts"], np.array(job["labels"])
result = {"load_seconds": load_seconds}
if job["mode"] == "accuracy":
    batch = job["batch_sizes"][-1]
    probabilities = np.concatenate([predict(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    result["accuracy"] = float(np.mean(probabilities.argmax(1) == labels))
else:
    first = []
    for _ in range(10):  # the first requests after loading (and warming up), all the same review
        t = time.perf_counter(); predict(texts[:1]); first.append(time.perf_counter() - t)
    result["first_request_ms"], result["tenth_request_ms"] = first[0] * 1e3, first[9] * 1e3
    latencies = []
    for text in texts[10:10 + job["latency_reviews"]]:
        t = time.perf_counter(); predict([text]); latencies.append(time.perf_counter() - t)
    result["p50_ms"] = float(np.percentile(latencies, 50)) * 1e3
    result["p99_ms"] = float(np.percentile(latencies, 99)) * 1e3
    for batch in job["batch_sizes"]:
        t = time.perf_counter()
        for i in range(0, len(texts), batch):
            predict(texts[i:i + batch])
        result[f"batch_{batch}"] = len(texts) / (time.perf_counter() - t)
print(json.dumps(result))
"""

WORKERS = {"saved_model": SAVED_MODEL_WORKER, "tflite": TFLITE_WORKER, "onnx": ONNX_WORKER}


def run_worker(kind, job):
    with tempfile.NamedTemporaryFile("w", suffix=".json") as job_file:  # reviews exceed an argument's size limit
        json.dump(job, job_file)
        job_file.flush()
        completed = subprocess.run([sys.executable, "-c", WORKERS[kind] + MEASURE, job_file.name],
                                   capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode or not lines:
        raise SystemExit(f"{kind} worker on {job['path']} failed:\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1])


def hugging_face_state_dict(classifier):
    """The classifier's weights under `BertForSequenceClassification`'s names (float32 numpy)."""
    from kerasbert.inference import inference_copy

    plain = inference_copy(classifier, dtype="float32", fused_layers=False)
    backbone = plain.backbone
    value = lambda variable: np.asarray(variable.numpy(), dtype=np.float32)  # noqa: E731
    hidden = backbone.hidden_dim
    dense = lambda kernel: value(kernel).reshape(hidden, -1).T if kernel.shape[0] == hidden else \
        value(kernel).reshape(-1, hidden).T  # noqa: E731
    state = {
        "bert.embeddings.word_embeddings.weight": value(backbone.get_layer("token_embedding").embeddings),
        "bert.embeddings.position_embeddings.weight":
            value(backbone.get_layer("position_embedding").position_embeddings),
        "bert.embeddings.token_type_embeddings.weight": value(backbone.get_layer("segment_embedding").embeddings),
        "bert.embeddings.LayerNorm.weight": value(backbone.get_layer("embeddings_layer_norm").gamma),
        "bert.embeddings.LayerNorm.bias": value(backbone.get_layer("embeddings_layer_norm").beta),
        "bert.pooler.dense.weight": value(backbone.get_layer("pooled_dense").kernel).T,
        "bert.pooler.dense.bias": value(backbone.get_layer("pooled_dense").bias),
        "classifier.weight": value(plain.output_dense.kernel).T,
        "classifier.bias": value(plain.output_dense.bias),
    }
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        attention, prefix = block._self_attention_layer, f"bert.encoder.layer.{i}."
        for name, layer in (("attention.self.query", attention.query_dense), ("attention.self.key", attention.key_dense),
                            ("attention.self.value", attention.value_dense),
                            ("attention.output.dense", attention.output_dense),
                            ("intermediate.dense", block._feedforward_intermediate_dense),
                            ("output.dense", block._feedforward_output_dense)):
            state[f"{prefix}{name}.weight"] = dense(layer.kernel)
            state[f"{prefix}{name}.bias"] = value(layer.bias).reshape(-1)
        for name, norm in (("attention.output.LayerNorm", block._self_attention_layer_norm),
                           ("output.LayerNorm", block._feedforward_layer_norm)):
            state[f"{prefix}{name}.weight"], state[f"{prefix}{name}.bias"] = value(norm.gamma), value(norm.beta)
    return state


CHECK_TEXTS = ["A beautiful, moving film with wonderful acting.", "Dreadful. Two hours I will never get back.",
               "Not bad at all, though the ending drags.", "I expected more from this director."]


def export_onnx(classifier, preset, folder):
    """ONNX fp32 (ORT-optimized for BERT) and dynamic-int8 models of the same weights; checks the
    PyTorch copy predicts what the Keras classifier predicts."""
    import torch
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    # Eager attention: the graph ONNX Runtime's BERT optimizer recognizes and fuses (as Optimum exports it).
    config = BertConfig.from_pretrained(preset, num_labels=len(classifier.class_names), attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    missing, unexpected = model.load_state_dict(
        {name: torch.from_numpy(array.copy()) for name, array in hugging_face_state_dict(classifier).items()},
        strict=False)
    assert not unexpected and all("position_ids" in name for name in missing), (missing, unexpected)
    tokenizer = AutoTokenizer.from_pretrained(preset)
    encoded = tokenizer(CHECK_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch_probabilities = torch.softmax(model(**encoded).logits, -1).numpy()
    keras_probabilities = keras_float32_probabilities(classifier, CHECK_TEXTS)
    difference = float(np.abs(torch_probabilities - keras_probabilities).max())
    print(f"the PyTorch copy and the Keras classifier differ by at most {difference:.1e} in probability")
    if difference > 1e-3:
        raise SystemExit("the weights were not copied into the PyTorch model faithfully")
    raw = os.path.join(folder, "model-raw.onnx")
    inputs = tuple(encoded[name] for name in ("input_ids", "attention_mask", "token_type_ids"))
    axes = {name: {0: "batch", 1: "sequence"} for name in ("input_ids", "attention_mask", "token_type_ids")}
    torch.onnx.export(model, inputs, raw, input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    fp32 = os.path.join(folder, "model-fp32.onnx")
    optimize_model(raw, model_type="bert", num_heads=config.num_attention_heads,
                   hidden_size=config.hidden_size).save_model_to_file(fp32)
    int8 = os.path.join(folder, "model-int8.onnx")
    # The optimized graph's fused BERT ops defeat ONNX shape inference: tell the quantizer their type.
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": TensorProto.FLOAT})
    return {"ONNX Runtime fp32": fp32, "ONNX Runtime dynamic int8": int8}


def keras_float32_probabilities(classifier, texts):
    from kerasbert.inference import inference_copy

    logits = np.asarray(inference_copy(classifier, dtype="float32").predict(texts, verbose=0), np.float64)
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def export_artifacts(classifier, preset, folder, tflite_variants):
    """Every artifact to measure: {name: (worker kind, path)}."""
    import tensorflow as tf

    from kerasbert.deploy import export
    from kerasbert.hardware import choose_precision, detect_hardware
    from kerasbert.deploy.serving import ServingModule

    class PaddedToFullLength(ServingModule):
        """The SavedModel before this benchmark existed: every request padded to the full length."""

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve_text(self, text):
            return self.serve_tokens(**self.preprocessor.tokenize_and_pack(text))

    artifacts = {}
    before = os.path.join(folder, "saved_model_before", "1")
    module = PaddedToFullLength(classifier, list(classifier.class_names))
    tf.saved_model.save(module, before, signatures=module.signatures())
    artifacts["SavedModel float32, pads to 256 (before)"] = ("saved_model", before)
    precisions = ["off"] + (["bf16"] if choose_precision("auto", detect_hardware()).name == "bf16" else [])
    for precision in precisions:
        path = export.saved_model(classifier, os.path.join(folder, f"saved_model_{precision}"), precision=precision)
        artifacts[f"SavedModel {'float32' if precision == 'off' else precision}"] = ("saved_model", path)
    if tflite_variants:
        tflite = export.tflite(classifier, os.path.join(folder, "tflite"), tflite_variants)
        for variant in tflite_variants:
            artifacts[f"TFLite {variant}, strings in"] = ("tflite", os.path.join(tflite, f"{variant}-text.tflite"))
    for name, path in export_onnx(classifier, preset, folder).items():
        artifacts[name] = ("onnx", path)
    return artifacts


def test_reviews(data_dir, count, seed=0):
    from kerasbert.data import read_tfds

    _, test, _ = read_tfds("imdb_reviews", data_dir)
    sample = test.sample(count, seed) if count else test
    return sample.texts.astype(str).tolist(), sample.labels.tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="A finished kerasbert run (its model.keras is served).")
    parser.add_argument("--data-dir", required=True, help="tfds data dir holding imdb_reviews.")
    parser.add_argument("--reviews", type=int, default=640, help="Random test reviews for speed, in test order.")
    parser.add_argument("--latency-reviews", type=int, default=100)
    parser.add_argument("--accuracy-examples", type=int, default=25000, help="Test reviews for accuracy (0: skip).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tflite", default="dynamic-int8", help="Comma-separated TFLite variants ('' for none).")
    parser.add_argument("--work-dir", default="", help="Where the artifacts go (default: a temporary folder).")
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "serving.md"))
    args = parser.parse_args()
    for name in ("reviews", "latency_reviews", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.accuracy_examples < 0 or not os.path.isdir(args.data_dir):
        parser.error("--accuracy-examples must not be negative and --data-dir must exist")

    from kerasbert.model import load_classifier
    from kerasbert.presets import resolve_preset
    from kerasbert.files import read_json
    from machine import results_heading

    classifier = load_classifier(os.path.join(args.run, "model.keras"))
    preset = resolve_preset(read_json(os.path.join(args.run, "config.json"))["preset"])
    texts, labels = test_reviews(args.data_dir, args.reviews)
    folder = args.work_dir or tempfile.mkdtemp(prefix="kerasbert-serving-")
    tflite_variants = [name.strip() for name in args.tflite.split(",") if name.strip()]
    artifacts = export_artifacts(classifier, preset, folder, tflite_variants)
    length = classifier.preprocessor.sequence_length
    tokenizer = os.path.join(preset, "tokenizer.json")
    threads = sorted({1, os.cpu_count()})
    base = {"length": length, "tokenizer": tokenizer, "latency_reviews": args.latency_reviews}

    speed = {}
    for round_number in range(args.rounds):
        for name, (kind, path) in artifacts.items():
            for count in threads:
                job = {**base, "path": path, "threads": count, "texts": texts, "labels": labels, "mode": "speed",
                       "batch_sizes": [1] if kind == "tflite" else [32, 64]}
                result = run_worker(kind, job)
                speed.setdefault((name, count), []).append(result)
                print(json.dumps({"round": round_number + 1, "artifact": name, "threads": count, **result}), flush=True)
    accuracy = {}
    if args.accuracy_examples:
        all_texts, all_labels = test_reviews(args.data_dir, args.accuracy_examples)
        for name, (kind, path) in artifacts.items():
            if "(before)" in name:
                continue  # the same weights and graph as SavedModel float32, only padded further
            job = {**base, "path": path, "threads": os.cpu_count(), "texts": all_texts, "labels": all_labels,
                   "mode": "accuracy", "batch_sizes": [1] if kind == "tflite" else [64]}
            accuracy[name] = run_worker(kind, job)["accuracy"]
            print(json.dumps({"artifact": name, "accuracy": accuracy[name]}), flush=True)
    write_results(args, results_heading(), artifacts, speed, accuracy, threads)


def write_results(args, heading, artifacts, speed, accuracy, threads):
    from machine import append_results

    median = lambda runs, key: statistics.median(run[key] for run in runs if key in run)  # noqa: E731
    lines = [heading, f"{args.reviews} random IMDB test reviews (seed 0) in test order, at most 256 tokens; "
             f"latency over {args.latency_reviews} single reviews; medians of {args.rounds} interleaved rounds; "
             f"accuracy on {args.accuracy_examples or 'no'} test reviews. Run: `{args.run}`.\n",
             "| artifact | threads | reviews/s, batch 32 | reviews/s, batch 64 | one review per call | "
             "p50 ms | p99 ms | 1st request ms | 10th request ms | accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in artifacts:
        for count in threads:
            runs = speed[(name, count)]
            cell = lambda key: f"{median(runs, key):.1f}" if any(key in run for run in runs) else "-"  # noqa: E731
            acc = f"{accuracy[name]:.4f}" if name in accuracy else "-"
            lines.append(f"| {name} | {count} | {cell('batch_32')} | {cell('batch_64')} | {cell('batch_1')} | "
                         f"{cell('p50_ms')} | {cell('p99_ms')} | {cell('first_request_ms')} | "
                         f"{cell('tenth_request_ms')} | {acc} |")
    append_results(args.results, lines)


if __name__ == "__main__":
    main()
