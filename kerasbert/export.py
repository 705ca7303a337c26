"""Ship a trained run: a SavedModel for TF Serving and TFLite models, each
checked against the Keras model before it is published.

SavedModel layout (what TF Serving polls):

    saved_models/<model-name>/<version>/   saved_model.pb, variables/, parity.json

Signatures:
- `serving_default`: `text` (tf.string, [batch]) -> `probabilities` (float32,
  [batch, classes]), `class_id` (int64) and `class_name` (string). The
  tokenizer is inside the graph (TF Text ops: load it with
  `import tensorflow_text`; stock TF Serving has them from 2.20 on).
- `predict_tokens`: `token_ids`, `segment_ids`, `padding_mask` (int32,
  [batch, length]) -> the same outputs, for clients that tokenize themselves.

A version directory is written under a temporary name and renamed into place
once its parity check passed, so a server never sees half a version.

Example:

>>> saved_model, tflite = export_run(ExportConfig(run="runs/smoke"))   # doctest: +SKIP
>>> tf.saved_model.load(saved_model).signatures["serving_default"](text=tf.constant(["Loved it."]))  # doctest: +SKIP
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from kerasbert import data, rundir
from kerasbert.config import TFLITE_FORMATS, TrainConfig
from kerasbert.data import pipeline_options
from kerasbert.errors import KerasbertError
from kerasbert.model import inference_copy, load_classifier
from kerasbert.progress import phase

TOKEN_INPUTS = ("token_ids", "segment_ids", "padding_mask")
# Parity bars: fraction of reviews whose predicted class agrees with Keras float32.
AGREEMENT_BARS = {"saved_model": 0.999, "float32": 0.999, "float16": 0.995, "dynamic-int8": 0.99}
MAX_ACCURACY_DROP = 0.005  # dynamic-int8


def token_model(classifier):
    """A float32 copy of the classifier without its preprocessor: token-id tensors in, logits out."""
    model = inference_copy(classifier, dtype="float32")
    model.preprocessor = None
    return model


def token_probabilities(model, token_ids, segment_ids, padding_mask):
    features = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
    return tf.nn.softmax(tf.cast(model(features, training=False), tf.float32))


class ServingModule(tf.Module):
    """Raw text or token ids in; probabilities, class id and class name out."""

    def __init__(self, classifier, class_names):
        super().__init__()
        self.preprocessor = classifier.preprocessor
        self.model = token_model(classifier)
        # A variable, so that it is saved and a loader can read the names.
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(self, text):
        return self.serve_tokens(**self.preprocessor.tokenize_and_pack(text))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in TOKEN_INPUTS])
    def serve_tokens(self, token_ids, segment_ids, padding_mask):
        probabilities = token_probabilities(self.model, token_ids, segment_ids, padding_mask)
        class_id = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": tf.gather(self.class_names, class_id)}


def load_run(run_dir):
    """The classifier and class names of a finished run directory."""
    if not os.path.isdir(run_dir):
        raise KerasbertError(f"run directory {run_dir} does not exist")
    model_path = os.path.join(run_dir, rundir.MODEL_FILE)
    metrics_path = os.path.join(run_dir, rundir.METRICS_FILE)
    if not os.path.isfile(model_path) or not os.path.isfile(metrics_path):
        raise KerasbertError(f"{run_dir} holds no finished run (no {rundir.MODEL_FILE} or {rundir.METRICS_FILE})")
    return load_classifier(model_path), rundir.read_json(metrics_path)["class_names"]


def next_version(model_root):
    versions = [int(name) for name in os.listdir(model_root) if name.isdigit()] if os.path.isdir(model_root) else []
    return max(versions, default=0) + 1


def publish_directory(staged, final, overwrite):
    """Rename a fully written directory into place; an old one is removed only after."""
    rundir.make_readable(staged)
    if os.path.exists(final):
        if not overwrite:
            raise KerasbertError(f"{final} already exists (pass --overwrite to replace it)")
        retired = tempfile.mkdtemp(prefix=".retired-", dir=os.path.dirname(final))
        os.replace(final, os.path.join(retired, "old"))
        os.replace(staged, final)
        shutil.rmtree(retired)
    else:
        os.replace(staged, final)


def export_run(config):
    """Everything `export.py` does: SavedModel, then TFLite variants, each parity-checked."""
    phase(f"loading {config.run}")
    classifier, class_names = load_run(config.run)
    model_root = os.path.join(config.export_root, config.model_name)
    version = config.version or next_version(model_root)
    parity = None
    if config.parity_examples:
        phase(f"running the Keras model (float32) on {config.parity_examples} test reviews for the parity checks")
        parity = ParityCheck(classifier, *parity_examples(config.run, config.parity_examples))
    paths = [export_saved_model(classifier, class_names, model_root, version, config.overwrite, parity)]
    phase(f"SavedModel for TF Serving: {paths[0]}")
    if config.tflite_formats():
        paths.append(export_tflite(classifier, class_names, config.tflite_formats(),
                                   os.path.join(model_root, "tflite"), version, config.overwrite, parity))
        phase(f"TFLite ({', '.join(config.tflite_formats())}): {paths[1]}")
    return paths


def staging_directory(root, version, overwrite):
    """A fresh temporary folder beside `<root>/<version>`, which must not exist unless `overwrite`."""
    final = os.path.join(root, str(version))
    if os.path.exists(final) and not overwrite:
        raise KerasbertError(f"{final} already exists (pass --overwrite to replace it)")
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".partial-{version}-", dir=root), final


def export_saved_model(classifier, class_names, model_root, version, overwrite=False, parity=None):
    """Write `<model_root>/<version>/` and return its path.

    With a `ParityCheck`, the SavedModel is run on its reviews and
    `parity.json` is written inside the version; missing a bar raises and
    publishes nothing.
    """
    staged, final = staging_directory(model_root, version, overwrite)
    try:
        module = ServingModule(classifier, class_names)
        tf.saved_model.save(module, staged, signatures={
            "serving_default": module.serve_text, "predict_tokens": module.serve_tokens})
        if parity is not None:
            served = tf.saved_model.load(staged).signatures["serving_default"]
            parity.check(lambda texts: served(text=tf.constant(texts))["probabilities"].numpy(),
                         "saved_model", os.path.join(staged, "parity.json"), final)
        publish_directory(staged, final, overwrite)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final


def keras_probabilities(classifier, texts):
    reviews = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object).astype(str)).batch(64)
    logits = classifier.predict(reviews.with_options(pipeline_options()), verbose=0)
    return tf.nn.softmax(np.asarray(logits, dtype=np.float32)).numpy()


class ParityCheck:
    """The Keras model's float32 probabilities on some reviews, to compare artifacts with.

    The reference is the trained model computed in float32 (its variables
    are float32 whatever the training policy), since every artifact is a
    float32 conversion of it; quantized artifacts are judged against it too.
    """

    def __init__(self, classifier, texts, labels=None):
        self.texts, self.labels = texts, labels
        self.reference = keras_probabilities(inference_copy(classifier, dtype="float32"), texts)

    def check(self, predict, artifact, report_path, where, batch_size=64, **extra):
        """Run `predict` (list of texts -> probabilities), write the report, raise if a bar is missed."""
        candidate = np.concatenate([predict(list(self.texts[i:i + batch_size]))
                                    for i in range(0, len(self.texts), batch_size)])
        report = parity_report(self.reference, candidate, self.labels, artifact)
        rundir.write_json(report_path, {**report, **extra})
        check_parity(report, where)
        return report


def parity_report(reference, candidate, labels, artifact):
    agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    report = {"artifact": artifact, "examples": int(len(reference)),
              "max_abs_probability_difference": float(np.max(np.abs(reference - candidate))),
              "argmax_agreement": agreement, "agreement_bar": AGREEMENT_BARS[artifact]}
    if labels is not None:
        report["keras_accuracy"] = float(np.mean(reference.argmax(1) == labels))
        report["artifact_accuracy"] = float(np.mean(candidate.argmax(1) == labels))
    return report


def check_parity(report, where):
    if report["argmax_agreement"] < report["agreement_bar"]:
        raise KerasbertError(f"{where}: {report['artifact']} agrees with the Keras model on "
                             f"{report['argmax_agreement']:.2%} of reviews, below the {report['agreement_bar']:.1%} bar")
    drop = report.get("keras_accuracy", 0) - report.get("artifact_accuracy", 0)
    if report["artifact"] == "dynamic-int8" and drop > MAX_ACCURACY_DROP:
        raise KerasbertError(f"{where}: dynamic-int8 loses {drop:.2%} accuracy, over the {MAX_ACCURACY_DROP:.1%} bar")


def parity_examples(run_dir, count, seed=0):
    """`count` seeded test reviews (texts, labels) of the run's own test data."""
    config = TrainConfig.from_dict(rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE)))
    test = data.load_splits(config).test.sample(count, seed)
    return test.texts.astype(str), test.labels


# --- TFLite ------------------------------------------------------------------


def tflite_model(classifier, quantization, with_tokenizer=False):
    """TFLite bytes of the classifier, on token ids or (`with_tokenizer`) on one raw string.

    Token-id model: `token_ids`, `segment_ids`, `padding_mask` (int32,
    [batch, sequence_length]) -> `probabilities`. Strings-in model: `text`
    (string, [1]) -> `probabilities`, tokenized inside by tf-text's
    `FastBertTokenizer` (a TFLite custom op; see `text_tokenizer`).

    Converted from a SavedModel written by `keras.export.ExportArchive`:
    converting a plain `tf.Module` save can silently lose the weights, which
    the parity check would catch.
    """
    import keras

    model = token_model(classifier)
    preprocessor = classifier.preprocessor
    length = preprocessor.sequence_length

    def probabilities(token_ids, segment_ids, padding_mask):
        return {"probabilities": token_probabilities(model, token_ids, segment_ids, padding_mask)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    if with_tokenizer:
        tokenizer = TextTokenizer(preprocessor)
        archive.track(tokenizer)

        def serve(text):
            return probabilities(*tokenizer(text))

        archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([1], tf.string, name="text")])
    else:
        archive.add_endpoint("serve", probabilities, input_signature=[
            tf.TensorSpec([None, length], tf.int32, name=name) for name in TOKEN_INPUTS])
    with tempfile.TemporaryDirectory() as saved:
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serve"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = with_tokenizer
        if quantization in ("float16", "dynamic-int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


class TextTokenizer(tf.Module):
    """One string -> packed int32 token ids, segment ids and padding mask, with TFLite-friendly ops.

    tf-text's `FastBertTokenizer` (lowercase, NFD, accents stripped, as the
    Hugging Face uncased tokenizer) on the preprocessor's vocabulary, then the
    preprocessor's truncation (head / tail / head+tail) and [CLS] ... [SEP]
    [PAD]... packing with slicing and padding ops only.
    """

    def __init__(self, preprocessor):
        super().__init__()
        import tensorflow_text

        tokenizer = preprocessor.tokenizer
        self.fast = tensorflow_text.FastBertTokenizer(
            vocab=tokenizer.get_vocabulary(), suffix_indicator="##", unknown_token="[UNK]",
            lower_case_nfd_strip_accents=tokenizer.lowercase, token_out_type=tf.int32,
            support_detokenization=False)
        self.length = preprocessor.sequence_length
        self.head = preprocessor.head_tokens()
        self.cls, self.sep = tokenizer.start_token_id, tokenizer.end_token_id

    def __call__(self, text):
        ids = tf.reshape(self.fast.tokenize(text).flat_values, [-1])
        budget = self.length - 2
        count = tf.size(ids)
        tail_start = tf.maximum(count - (budget - self.head), tf.minimum(count, self.head))
        kept = tf.concat([ids[:self.head], ids[tail_start:]], axis=0)[:budget]
        kept = tf.concat([[self.cls], kept, [self.sep]], axis=0)
        used = tf.size(kept)
        token_ids = tf.pad(kept, [[0, self.length - used]])[None, :]
        padding_mask = tf.pad(tf.ones([used], tf.int32), [[0, self.length - used]])[None, :]
        return token_ids, tf.zeros_like(token_ids), padding_mask


class TFLiteClassifier:
    """Runs a kerasbert TFLite model on raw strings.

    A strings-in model (`*-text.tflite`) tokenizes inside, one review per
    call. A token-id model is fed by kerasbert's tokenizer in Python, built
    from `tokenizer.json` and `vocab.txt` beside the model. Both read the
    class names from `tokenizer.json`.
    """

    def __init__(self, path, threads=None):
        import tensorflow_text
        from ai_edge_litert.interpreter import InterpreterWithCustomOps

        from kerasbert.model import preprocessor_from_vocabulary

        folder = os.path.dirname(os.path.abspath(path))
        settings = rundir.read_json(os.path.join(folder, TFLITE_SETTINGS))
        self.class_names = settings["class_names"]
        self.interpreter = InterpreterWithCustomOps(
            model_path=path, num_threads=threads,
            custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
        runner = self.interpreter.get_signature_runner("serve")
        self.inputs = {name: detail["index"] for name, detail in runner.get_input_details().items()}
        self.output = runner.get_output_details()["probabilities"]["index"]
        self.takes_text = "text" in self.inputs
        self.batch_size = None
        if not self.takes_text:
            self.preprocessor = preprocessor_from_vocabulary(
                os.path.join(folder, TFLITE_VOCABULARY), settings["sequence_length"], settings["truncation"],
                settings["lowercase"], settings["strip_accents"])

    def run(self, inputs):
        # Resizing re-plans the whole graph (and its XNNPACK delegate): do it
        # only when the batch size changes, not on every call as
        # SignatureRunner does.
        batch_size = len(next(iter(inputs.values())))
        if batch_size != self.batch_size:
            for name, value in inputs.items():
                self.interpreter.resize_tensor_input(self.inputs[name], value.shape)
            self.interpreter.allocate_tensors()
            self.batch_size = batch_size
        for name, value in inputs.items():
            self.interpreter.set_tensor(self.inputs[name], value)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)

    def predict_probabilities(self, texts):
        if self.takes_text:
            return np.concatenate([self.run({"text": np.array([text], dtype=object)}) for text in texts])
        return self.run({name: value.numpy() for name, value in self.preprocessor(list(texts)).items()})


TFLITE_SETTINGS = "tokenizer.json"
TFLITE_VOCABULARY = "vocab.txt"


def tflite_file_name(quantization, with_tokenizer):
    return f"{quantization}{'-text' if with_tokenizer else ''}.tflite"


def export_tflite(classifier, class_names, formats, tflite_root, version, overwrite=False, parity=None,
                  with_tokenizer=True):
    """Write `<tflite_root>/<version>/<format>[-text].tflite` for each format, with the tokenizer settings.

    `<format>.tflite` takes token ids; with `with_tokenizer`,
    `<format>-text.tflite` takes one raw string.
    """
    staged, final = staging_directory(tflite_root, version, overwrite)
    try:
        preprocessor = classifier.preprocessor
        tokenizer = preprocessor.tokenizer
        with open(os.path.join(staged, TFLITE_VOCABULARY), "w") as vocabulary:
            vocabulary.write("\n".join(tokenizer.get_vocabulary()) + "\n")
        rundir.write_json(os.path.join(staged, TFLITE_SETTINGS), {
            "sequence_length": preprocessor.sequence_length, "truncation": preprocessor.truncation,
            "lowercase": tokenizer.lowercase, "strip_accents": tokenizer.strip_accents,
            "class_names": class_names})
        for quantization in formats:
            for text_input in (False, True) if with_tokenizer else (False,):
                path = os.path.join(staged, tflite_file_name(quantization, text_input))
                with open(path, "wb") as file:
                    file.write(tflite_model(classifier, quantization, text_input))
                if parity is not None:
                    name = os.path.basename(path)[:-len(".tflite")]
                    parity.check(TFLiteClassifier(path).predict_probabilities, quantization,
                                 os.path.join(staged, f"parity-{name}.json"), path, tokenizer_inside=text_input)
        publish_directory(staged, final, overwrite)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final


def tokenizer_mismatches(preprocessor, texts):
    """Indices of texts whose packed token ids differ between the KerasHub preprocessor
    (training, SavedModel) and `TextTokenizer` (strings-in TFLite)."""
    keras_side = tf.function(preprocessor.tokenize_and_pack)
    tflite_side = tf.function(TextTokenizer(preprocessor).__call__,
                              input_signature=[tf.TensorSpec([1], tf.string)])
    mismatches = []
    for start in range(0, len(texts), 256):
        batch = list(texts[start:start + 256])
        expected = keras_side(tf.constant(batch))["token_ids"].numpy()
        for offset, text in enumerate(batch):
            if not np.array_equal(tflite_side(tf.constant([text]))[0].numpy()[0], expected[offset]):
                mismatches.append(start + offset)
    return mismatches
