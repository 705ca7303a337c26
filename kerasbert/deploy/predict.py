"""Predict labels for raw text with any artifact kerasbert writes: a `.keras`
model, a SavedModel version directory, or a `.tflite` model.

`load_predictor("saved_models/kerasbert/1").predict(["A joy from start to finish."])`
gives one dict per text: the text, its most likely label and that label's
probability.
"""

import itertools
import json
import os

from kerasbert import files
from kerasbert.errors import KerasbertError, first_line


class Predictor:
    """Batched class probabilities for lists of strings."""

    class_names: list

    def predict_probabilities(self, texts):
        raise NotImplementedError

    def predict(self, texts):
        from kerasbert.evaluation import labeled_rows

        return labeled_rows(texts, self.predict_probabilities(list(texts)), self.class_names)


class KerasPredictor(Predictor):
    def __init__(self, path):
        from kerasbert.model import class_names_of, load_classifier

        self.classifier = load_classifier(path)
        if self.classifier.preprocessor is None:
            raise KerasbertError(f"{path} holds a classifier without its tokenizer (save a classifier that has "
                                 "its preprocessor, as TextClassifier.from_preset builds it)")
        self.class_names = class_names_of(self.classifier)

    def predict_probabilities(self, texts):
        from kerasbert.model import softmax

        return softmax(self.classifier.predict(texts, verbose=0)).numpy()


class SavedModelPredictor(Predictor):
    def __init__(self, path):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops the graph uses)

        self.tf = tf
        try:
            loaded = tf.saved_model.load(path)
            self.serve = loaded.signatures["serving_default"]
            self.class_names = [name.decode() for name in loaded.class_names.numpy()]
        except Exception as error:  # corrupt protobufs and missing variables raise many types
            raise KerasbertError(f"cannot load SavedModel {path}: {first_line(error)}") from None

    def predict_probabilities(self, texts):
        return self.serve(text=self.tf.constant(texts))["probabilities"].numpy()


class TFLitePredictor(Predictor):
    def __init__(self, path):
        from kerasbert.deploy.tflite import TFLiteClassifier

        try:
            self.model = TFLiteClassifier(path)
        except (ValueError, RuntimeError, OSError) as error:
            raise KerasbertError(f"cannot load TFLite model {path}: {first_line(error)}") from None
        self.class_names = self.model.class_names

    def predict_probabilities(self, texts):
        return self.model.predict_probabilities(texts)


def load_predictor(path):
    if not os.path.exists(path):
        raise KerasbertError(f"model {path} does not exist")
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise KerasbertError(f"{path} is a folder without saved_model.pb (give a SavedModel version folder)")
        return SavedModelPredictor(path)
    if path.endswith(".keras"):
        return KerasPredictor(path)
    if path.endswith(".tflite"):
        return TFLitePredictor(path)
    raise KerasbertError(f"{path}: unknown model type (expected .keras, .tflite or a SavedModel folder)")


class InputTexts:
    """(line number, id or None, text) of every row of a .txt (one text a line: only "\n" ends
    one, so a form feed is part of its text), .csv/.tsv (`text` column, optional `id`) or .jsonl
    (`text` field, optional `id`) file, plain or gzip. Blank texts are kept (as rows without a
    prediction), so the output has one row per input row. Each pass reads the file from disk,
    so memory stays flat however long it is; the first, on construction, checks and counts every row."""

    def __init__(self, path):
        from kerasbert.texts import TABLE_SUFFIXES

        suffix = os.path.splitext(path.removesuffix(".gz"))[1].lower()
        if suffix != ".txt" and suffix not in TABLE_SUFFIXES:
            raise KerasbertError(f"{path}: unknown file type (expected .txt, .csv, .tsv or .jsonl, gzipped or not)")
        self.path, self.suffix = path, suffix
        self.rows = self.texts = 0
        for number, _, text in self:
            if not isinstance(text, str):
                raise KerasbertError(f"{path}: line {number} has a text that is not a string")
            self.rows, self.texts = self.rows + 1, self.texts + bool(text.strip())
        if not self.texts:
            raise KerasbertError(f"input file {path} holds no texts")

    def __len__(self):
        return self.rows

    def __iter__(self):
        from kerasbert.texts import TABLE_SUFFIXES, lines_of, table_rows

        with lines_of(self.path) as lines:
            if self.suffix == ".txt":
                rows = ((number, {"text": line.removesuffix("\n").removesuffix("\r")})
                        for number, line in enumerate(lines, start=1))
            else:
                rows = table_rows(lines, self.path, TABLE_SUFFIXES[self.suffix], ("text",))
            for number, row in rows:
                yield number, row.get("id"), row["text"]


def predictions(predictor, records, batch_size=64):
    """(line, id, row of `Predictor.predict`) for each of `records` ((line, id, text) triples, e.g.
    `InputTexts`), `batch_size` texts a model call; a blank text gets null label and probabilities."""
    rows = iter(records)
    while batch := list(itertools.islice(rows, batch_size)):
        texts = [text for _, _, text in batch if text.strip()]
        predicted = iter(predictor.predict(texts) if texts else [])
        for line, identifier, text in batch:
            yield line, identifier, next(predicted) if text.strip() else {
                "text": text, **dict.fromkeys(("label", "probability", "probabilities"))}


def predict_file(predictor, records, output, batch_size=64):
    """Write one JSON line per record of `InputTexts` to `output` as they are predicted, each
    with its input line number (and id), via a temporary file renamed into place when complete;
    with a progress bar (plain lines without a terminal)."""
    from kerasbert.progress import CountProgress

    progress = CountProgress(len(records), "texts predicted")
    with files.written_atomically(output) as temporary, open(temporary, "w", encoding="utf-8") as file:
        for count, (line, identifier, row) in enumerate(predictions(predictor, records, batch_size), start=1):
            tied = {"line": line, **({"id": identifier} if identifier is not None else {})}
            file.write(json.dumps({**tied, "label": row["label"], "probability": row["probability"],
                                   "probabilities": row["probabilities"]}) + "\n")
            if count % batch_size == 0 or count == len(records):
                progress.add(count - progress.done)
