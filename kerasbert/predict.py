"""Predict labels for raw text with any artifact kerasbert writes: a `.keras`
model, a SavedModel version directory, or a `.tflite` model.

Example:

>>> predictor = load_predictor("saved_models/kerasbert/1")            # doctest: +SKIP
>>> predictor.predict(["A joy from start to finish."])                # doctest: +SKIP
[{'text': 'A joy from start to finish.', 'label': 'pos', 'probability': 0.97}]
"""

import csv
import io
import json
import os

from kerasbert import rundir
from kerasbert.errors import KerasbertError


class Predictor:
    """Batched class probabilities for lists of strings."""

    class_names: list

    def predict_probabilities(self, texts):
        raise NotImplementedError

    def predict(self, texts):
        probabilities = self.predict_probabilities(list(texts))
        return [{"text": text, "label": self.class_names[int(row.argmax())], "probability": float(row.max()),
                 "probabilities": {name: float(p) for name, p in zip(self.class_names, row)}}
                for text, row in zip(texts, probabilities)]


class KerasPredictor(Predictor):
    def __init__(self, path):
        from kerasbert.model import load_classifier

        self.classifier = load_classifier(path)
        self.class_names = list(getattr(self.classifier, "class_names", None) or self.class_names_beside(path))

    def class_names_beside(self, path):
        """Class names of a model saved before they were part of it: from its run's metrics.json."""
        metrics = os.path.join(os.path.dirname(os.path.abspath(path)), rundir.METRICS_FILE)
        count = self.classifier.get_config()["num_classes"]
        return rundir.read_json(metrics)["class_names"] if os.path.isfile(metrics) else [str(k) for k in range(count)]

    def predict_probabilities(self, texts):
        from kerasbert.parity import keras_probabilities

        return keras_probabilities(self.classifier, texts)


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
            raise KerasbertError(f"cannot load SavedModel {path}: {str(error).strip().splitlines()[0]}") from None

    def predict_probabilities(self, texts):
        return self.serve(text=self.tf.constant(texts))["probabilities"].numpy()


class TFLitePredictor(Predictor):
    def __init__(self, path):
        from kerasbert.tflite import TFLiteClassifier

        try:
            self.model = TFLiteClassifier(path)
        except (ValueError, RuntimeError, OSError) as error:
            raise KerasbertError(f"cannot load TFLite model {path}: {str(error).strip().splitlines()[0]}") from None
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


def read_texts(path):
    """Texts of a .txt (one per line), .csv (`text` column) or .jsonl (`text` field) file."""
    from kerasbert.data import decode_text

    if not os.path.isfile(path):
        raise KerasbertError(f"input file {path} does not exist")
    with open(path, "rb") as file:
        content = decode_text(file.read(), path)
    if path.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(content, newline=""))
        if "text" not in (reader.fieldnames or ()):
            raise KerasbertError(f"{path}: no text column")
        texts = [row["text"] for row in reader]
    elif path.endswith(".jsonl"):
        texts = []
        for line, raw in enumerate(content.splitlines(), start=1):
            if raw.strip():
                try:
                    texts.append(json.loads(raw)["text"])
                except (ValueError, KeyError, TypeError):
                    raise KerasbertError(f"{path}: line {line} is not a JSON object with a text field") from None
    else:
        texts = [line for line in content.splitlines() if line.strip()]
    if not texts:
        raise KerasbertError(f"input file {path} holds no texts")
    return texts


def predict_file(predictor, texts, output, batch_size=64):
    """Write one JSON line per text to `output` (via a temporary file), with a progress bar."""
    import keras

    progress = keras.utils.Progbar(len(texts), unit_name="text")
    temporary = output + ".partial"
    with open(temporary, "w", encoding="utf-8") as file:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            for row in predictor.predict(batch):
                file.write(json.dumps({"label": row["label"], "probability": row["probability"],
                                       "probabilities": row["probabilities"]}) + "\n")
            progress.add(len(batch))
    os.replace(temporary, output)
