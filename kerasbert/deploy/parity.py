"""Is an exported artifact the model it came from? The Keras model's float32
probabilities on real reviews (the export job uses a run's own test reviews),
compared with each artifact's (`ParityCheck.check`), against the bars of
`AGREEMENT_BARS`; the report goes to a `parity*.json` beside the artifact.
"""

import numpy as np

from kerasbert import files
from kerasbert.errors import KerasbertError
from kerasbert.inference import inference_copy
from kerasbert.model import softmax

# Parity bars: fraction of reviews whose predicted class agrees with Keras float32.
AGREEMENT_BARS = {"saved_model": 0.999, "saved_model-bf16": 0.99, "saved_model-fp16": 0.995, "float32": 0.999,
                  "float16": 0.995, "dynamic-int8": 0.99}
MAX_ACCURACY_DROP = 0.005  # on the reviews' labels, for every artifact


class ParityCheck:
    """The Keras model's float32 probabilities on some reviews, to compare artifacts with.

    The reference is the trained model computed in float32 (its variables
    are float32 whatever the training policy), since every artifact is a
    float32 conversion of it; quantized artifacts are judged against it too.
    """

    def __init__(self, classifier, texts, labels=None):
        self.texts, self.labels = texts, labels
        reference = inference_copy(classifier, dtype="float32")
        self.reference = softmax(reference.predict(np.asarray(texts, dtype=object), verbose=0)).numpy()

    def check(self, predict, artifact, report_path, where, batch_size=64, **extra):
        """Run `predict` (list of texts -> probabilities) on batches of texts of similar length (an
        artifact that pads a batch to its longest computes less), write the report, raise if a bar is missed."""
        order = np.argsort([len(text) for text in self.texts], kind="stable")
        candidate = np.empty_like(self.reference)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            candidate[rows] = predict([self.texts[row] for row in rows])
        report = parity_report(self.reference, candidate, self.labels, artifact)
        files.write_json(report_path, {**report, **extra})
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
    if drop > MAX_ACCURACY_DROP:
        raise KerasbertError(f"{where}: {report['artifact']} loses {drop:.2%} accuracy, over the "
                             f"{MAX_ACCURACY_DROP:.1%} bar")
