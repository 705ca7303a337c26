"""TFLite models of a classifier: on token ids, or on one raw string with
the tokenizer inside (tf-text's FastBertTokenizer, a TFLite custom op), their
tokenizer settings, and a runner for them.

Layout of `<root>/<version>/`: `<variant>.tflite` and `<variant>-text.tflite`
for each variant (float32, float16, dynamic-int8), `vocab.txt`,
`tokenizer.json` (sequence length, truncation, casing, class names) and
`parity-*.json`.
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from kerasbert import files
from kerasbert.data import TOKEN_INPUTS, trim_padding
from kerasbert.disk import writing
from kerasbert.files import publish_directory, staging_directory
from kerasbert.inference import token_model, token_probabilities

TFLITE_SETTINGS = "tokenizer.json"
TFLITE_VOCABULARY = "vocab.txt"


def tflite_model(classifier, quantization, with_tokenizer=False):
    """TFLite bytes of the classifier, on token ids or (`with_tokenizer`) on one raw string.

    Token-id model: `token_ids`, `segment_ids`, `padding_mask` (int32,
    [batch, width], any width up to sequence_length: resize the inputs to a
    batch's longest) -> `probabilities`. Strings-in model: `text` (string, [1])
    -> `probabilities`, tokenized inside by tf-text's `FastBertTokenizer` (a
    TFLite custom op; see `TextTokenizer`), computed at the review's own length.

    Converted from a SavedModel written by `keras.export.ExportArchive`:
    converting a plain `tf.Module` save can silently lose the weights, which
    the parity check would catch.
    """
    import keras

    model = token_model(classifier)
    preprocessor = classifier.preprocessor

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
            tf.TensorSpec([None, None], tf.int32, name=name) for name in TOKEN_INPUTS])
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
    packing with slicing ops only: [1, the review's own length], no padding
    (a short review costs what it is, not sequence_length tokens).
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
        token_ids = tf.concat([[self.cls], kept, [self.sep]], axis=0)[None, :]
        return token_ids, tf.zeros_like(token_ids), tf.ones_like(token_ids)


class TFLiteClassifier:
    """Runs a kerasbert TFLite model on raw strings.

    A strings-in model (`*-text.tflite`) tokenizes inside, one review per
    call. A token-id model is fed by kerasbert's tokenizer in Python, built
    from `tokenizer.json` and `vocab.txt` beside the model. Both read the
    class names from `tokenizer.json`.
    """

    def __init__(self, path, threads=None, settings=None):
        import tensorflow_text
        from ai_edge_litert.interpreter import InterpreterWithCustomOps

        from kerasbert.preprocessing import preprocessor_from_vocabulary

        folder = os.path.dirname(os.path.abspath(path))
        settings = files.read_json(settings or settings_path(path))
        self.class_names = settings["class_names"]
        # An explicit thread count: the interpreter's default is one thread for most kernels.
        self.interpreter = InterpreterWithCustomOps(
            model_path=path, num_threads=threads or os.cpu_count(),
            custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
        runner = self.interpreter.get_signature_runner("serve")
        self.inputs = {name: detail["index"] for name, detail in runner.get_input_details().items()}
        self.output = runner.get_output_details()["probabilities"]["index"]
        self.takes_text = "text" in self.inputs
        self.shape = None
        if not self.takes_text:
            self.preprocessor = preprocessor_from_vocabulary(
                os.path.join(folder, TFLITE_VOCABULARY), settings["sequence_length"], settings["truncation"],
                settings["lowercase"], settings["strip_accents"])

    def run(self, inputs):
        # Resizing re-plans the whole graph (and its XNNPACK delegate): do it
        # only when the inputs' shape changes, not on every call as
        # SignatureRunner does.
        shape = next(iter(inputs.values())).shape
        if shape != self.shape:
            for name, value in inputs.items():
                self.interpreter.resize_tensor_input(self.inputs[name], value.shape)
            self.interpreter.allocate_tensors()
            self.shape = shape
        for name, value in inputs.items():
            self.interpreter.set_tensor(self.inputs[name], value)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)

    def predict_probabilities(self, texts):
        if self.takes_text:
            return np.concatenate([self.run({"text": np.array([text], dtype=object)}) for text in texts])
        return self.run({name: value.numpy() for name, value in trim_padding(self.preprocessor(list(texts))).items()})


def settings_path(model_path):
    """The tokenizer settings and class names of a TFLite model: `<model>.json` beside a model
    written alone (`TextClassifier.export(..., format="litert")`), else the version's `tokenizer.json`."""
    alone = os.path.splitext(model_path)[0] + ".json"
    return alone if os.path.isfile(alone) else os.path.join(os.path.dirname(os.path.abspath(model_path)),
                                                             TFLITE_SETTINGS)


def tokenizer_settings(classifier, class_names):
    preprocessor = classifier.preprocessor
    tokenizer = preprocessor.tokenizer
    return {"sequence_length": preprocessor.sequence_length, "truncation": preprocessor.truncation,
            "lowercase": tokenizer.lowercase, "strip_accents": tokenizer.strip_accents, "class_names": class_names}


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
        tokenizer = classifier.preprocessor.tokenizer
        with open(os.path.join(staged, TFLITE_VOCABULARY), "w") as vocabulary:
            vocabulary.write("\n".join(tokenizer.get_vocabulary()) + "\n")
        files.write_json(os.path.join(staged, TFLITE_SETTINGS), tokenizer_settings(classifier, class_names))
        for quantization in formats:
            for text_input in (False, True) if with_tokenizer else (False,):
                path = os.path.join(staged, tflite_file_name(quantization, text_input))
                converted = tflite_model(classifier, quantization, text_input)
                with writing(final), open(path, "wb") as file:
                    file.write(converted)
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
            packed = tflite_side(tf.constant([text]))[0].numpy()[0]
            if not (np.array_equal(packed, expected[offset][:len(packed)]) and not expected[offset][len(packed):].any()):
                mismatches.append(start + offset)
    return mismatches
