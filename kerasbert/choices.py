"""The names some options choose from, importable without TensorFlow: the command
line builds its `--help` and checks option values from them before any model is loaded.

>>> "head+tail" in TRUNCATIONS
True
"""

# `kerasbert.distribution.make_strategy`: how a run places its replicas.
STRATEGIES = ("auto", "default", "one-device", "mirrored", "multi-worker", "tpu")
# `kerasbert.preprocessing.ReviewPreprocessor`: which tokens of a long review are kept.
TRUNCATIONS = ("head", "tail", "head+tail")
# `kerasbert.deploy.tflite.export_tflite`: the weights' storage in a TFLite model.
TFLITE_FORMATS = ("float32", "float16", "dynamic-int8")
