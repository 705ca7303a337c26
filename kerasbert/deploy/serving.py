"""What TF Serving loads: the SavedModel's module and signatures, the warm-up
requests it replays before its first real request, and a batching
configuration for `--enable_batching`.

Signatures of the module:
- `serving_default`: `text` (tf.string, [batch]) -> `probabilities` (float32,
  [batch, classes]), `class_id` (int64) and `class_name` (string). The
  tokenizer is inside the graph (TF Text ops: load it with
  `import tensorflow_text`; stock TF Serving has them from 2.20 on). Each
  request is padded only to its longest text, rounded up to a multiple of 16
  tokens, so short reviews cost what they are; a larger request is computed
  in sub-batches of `SUB_BATCH` texts of similar length, each padded to its
  own longest.
- `predict_tokens`: `token_ids`, `segment_ids`, `padding_mask` (int32,
  [batch, length]) -> the same outputs, for clients that tokenize themselves.

Example:

>>> requests = warmup_texts(sequence_length=64)
>>> [(len(texts), len(texts[0].split())) for texts in requests[:2]], len(requests)
([(32, 14), (32, 30)], 8)
"""

import os

import tensorflow as tf

from kerasbert.data import PAD_TO_MULTIPLE_OF, TOKEN_INPUTS, trim_padding
from kerasbert.inference import token_model, token_probabilities

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
BATCHING_FILE = "batching_parameters.txt"
# Texts per sub-batch of a request: on IMDB test reviews at batch 64, sub-batches of 8 padded
# to their own longest served 1.15x more reviews/s than the whole batch padded to its longest.
SUB_BATCH = 8
WARMUP_BATCH_SIZES = (1, 32)
# Each word is one WordPiece token of an uncased English BERT vocabulary.
WARMUP_WORDS = ("the film was good and the story was not bad but the acting felt long and slow so i "
                "liked the music more than the plot").split()


class ServingModule(tf.Module):
    """Raw text or token ids in; probabilities, class id and class name out.

    `dtype` is the Keras dtype policy the served model computes in
    (`"float32"`, or `"mixed_bfloat16"` for servers with native bf16). A
    reduced precision also stores the weights in it: a server never updates
    them, and casting 22M float32 weights took 3 of a single review's 18 ms
    (bf16 on the Zen 5).
    """

    def __init__(self, classifier, class_names, dtype="float32"):
        super().__init__()
        self.preprocessor = classifier.preprocessor
        self.model = token_model(classifier, dtype.removeprefix("mixed_"))
        # A variable, so that it is saved and a loader can read the names.
        self.class_names = tf.Variable(class_names, trainable=False, name="class_names")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve_text(self, text):
        return self.outputs(self.probabilities_by_length(self.preprocessor.tokenize_and_pack(text)))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in TOKEN_INPUTS])
    def serve_tokens(self, token_ids, segment_ids, padding_mask):
        return self.outputs(token_probabilities(self.model, token_ids, segment_ids, padding_mask))

    def probabilities_by_length(self, features):
        """Probabilities of a packed batch, computed in sub-batches of texts of similar
        length, each trimmed to its own longest; rows come back in the request's order."""
        lengths = tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=1)
        order = tf.argsort(lengths, stable=True)
        classes = self.class_names.shape[0]
        computed = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False,
                                  element_shape=tf.TensorShape([None, classes]))
        for start in tf.range(0, tf.shape(order)[0], SUB_BATCH):
            rows = order[start:start + SUB_BATCH]
            sub_batch = trim_padding({name: tf.gather(value, rows) for name, value in features.items()})
            computed = computed.write(start // SUB_BATCH, token_probabilities(self.model, **sub_batch))
        return tf.gather(computed.concat(), tf.argsort(order))

    def outputs(self, probabilities):
        class_id = tf.argmax(probabilities, axis=1)
        return {"probabilities": probabilities, "class_id": class_id,
                "class_name": tf.gather(self.class_names, class_id)}

    def signatures(self):
        return {"serving_default": self.serve_text, "predict_tokens": self.serve_tokens}


def warmup_texts(sequence_length, batch_sizes=WARMUP_BATCH_SIZES):
    """One request (a list of texts) per batch size and padded width: every width
    `serve_text` can produce, so no first real request meets an unseen shape.
    Largest batches first: single-review requests, replayed last, leave the
    first real single review as fast as the tenth (without that order it took
    about 1.2 times as long on the 2-core Zen 5)."""
    requests = []
    for batch_size in sorted(batch_sizes, reverse=True):
        for width in range(PAD_TO_MULTIPLE_OF, sequence_length + 1, PAD_TO_MULTIPLE_OF):
            words = width - 2  # [CLS] and [SEP] fill the rest
            text = " ".join(WARMUP_WORDS[i % len(WARMUP_WORDS)] for i in range(words))
            requests.append([text] * batch_size)
    return requests


def write_warmup_requests(version_dir, model_name, sequence_length):
    """`assets.extra/tf_serving_warmup_requests`: PredictionLogs TF Serving replays on load."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(version_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for texts in warmup_texts(sequence_length):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"),
                inputs={"text": tf.make_tensor_proto(texts, dtype=tf.string)})
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def replay_warmup_requests(version_dir, loaded):
    """Run every warm-up request against the loaded SavedModel's signatures, as TF Serving
    does before it serves; returns how many ran."""
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for record in tf.data.TFRecordDataset(os.path.join(version_dir, WARMUP_FILE)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
        signature(**{name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()})
        count += 1
    return count


def batching_parameters(cores):
    """A `--batching_parameters_file` for TF Serving on a CPU with `cores` cores.

    One batch at a time: TensorFlow already spreads one batch over every core,
    so concurrent batches only compete for them. 32 reviews a batch: throughput
    no longer grows beyond that (`benchmarks/serving.md`). The timeout keeps a
    lone request's wait to a fraction of its own compute time (tens of ms).
    """
    return (f"# TF Serving --enable_batching --batching_parameters_file=<this file>; for a {cores}-core CPU.\n"
            "# See kerasbert/deploy/serving.py and benchmarks/serving.md for how these values were chosen.\n"
            "max_batch_size { value: 32 }\n"
            "batch_timeout_micros { value: 5000 }\n"
            "max_enqueued_batches { value: 64 }\n"
            "num_batch_threads { value: 1 }\n"
            "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nallowed_batch_sizes: 32\n"
            "pad_variable_length_inputs: true\n")
