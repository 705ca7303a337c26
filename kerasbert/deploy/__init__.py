"""Deployment: TF Serving SavedModels (`export`, `serving`), TFLite models (`tflite`), parity
checks against the Keras model (`parity`) and a predictor for every artifact (`predict`).

    import kerasbert.deploy
    kerasbert.deploy.saved_model(classifier, "saved_models/imdb")   # -> "saved_models/imdb/1"
"""

from kerasbert.deploy.export import saved_model, tflite_models  # noqa: F401
from kerasbert.deploy.predict import load_predictor  # noqa: F401

__all__ = ["load_predictor", "saved_model", "tflite_models"]
