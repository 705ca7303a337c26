"""The KerasHub-shaped task: `TextClassifier.from_preset` with its preprocessor attached,
`fit` on raw texts (shuffled per epoch, length-bucketed, tokenized in tf.data) with a schedule
that learns its length, `classify`, the preset registry, and save -> `load_model` -> `fit`
going on exactly where it stopped, in a fresh process, with no warning."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import kerasbert
from kerasbert.optimizers import WarmupLinearDecay
from tests.conftest import ROOT

WORDS = ["good", "great", "fun", "bad", "awful", "dull", "film", "plot", "cast", "music"]

# One script, three modes: a whole two-epoch fit; the same fit saved after epoch 1 and stopped;
# and, in a fresh process, load_model then fit epoch 2. It prints the per-step losses of its fit.
SCRIPT = r"""
import kerasbert
kerasbert.load_library()  # first: it quiets TensorFlow's start-up lines
import json, sys, warnings
import numpy as np
import keras, keras_hub
from kerasbert.preprocessing import preprocessor_from_vocabulary

mode, folder = sys.argv[1], sys.argv[2]
words = json.loads(sys.argv[3])
texts = [" ".join(np.random.default_rng(i).choice(words, 3 + i % 9)) for i in range(80)]
labels = [int(any(word in text.split() for word in ("good", "great", "fun"))) for text in texts]
losses = []
record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))


class SaveAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.save(folder + "/after-epoch-1.keras")
        self.model.stop_training = True


if mode == "more":  # one more epoch of the classifier "whole" trained for its planned two
    classifier = keras.saving.load_model(folder + "/whole.keras")
    before = [weight.copy() for weight in classifier.get_weights()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier.fit(texts, labels, batch_size=8, epochs=3, initial_epoch=2, verbose=0)
    changed = any(not np.array_equal(old, new) for old, new in zip(before, classifier.get_weights()))
    print(json.dumps({"warnings": [str(warning.message) for warning in caught], "changed": changed}))
    sys.exit()
elif mode == "resume":
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = keras.saving.load_model(folder + "/after-epoch-1.keras")
    for warning in caught:
        print("warning on load:", warning.message, file=sys.stderr)
    classifier.fit(texts, labels, batch_size=8, epochs=2, initial_epoch=1, callbacks=[record], verbose=0)
else:
    keras.utils.set_random_seed(3)
    with open(folder + "/vocab.txt", "w") as file:
        file.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    preprocessor = preprocessor_from_vocabulary(folder + "/vocab.txt", 16, "head")
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(words) + 5, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
    classifier = kerasbert.TextClassifier(backbone, preprocessor=preprocessor, class_names=["neg", "pos"])
    callbacks = [record] + ([SaveAfterFirstEpoch()] if mode == "first" else [])
    classifier.fit(texts, labels, batch_size=8, epochs=2, callbacks=callbacks, verbose=0)
    if mode == "whole":
        classifier.save(folder + "/whole.keras")
    if mode == "export":  # Keras' way, then served as TF Serving and LiteRT users run the files
        import tensorflow as tf, tensorflow_text
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
        saved = classifier.export(folder + "/saved", format="tf_saved_model")
        served = tf.saved_model.load(saved).signatures["serving_default"](text=tf.constant(["good fun", "awful dull"]))
        lite = classifier.export(folder + "/phone/model.tflite", format="litert")
        interpreter = InterpreterWithCustomOps(model_path=lite,
                                               custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS)
        on_device = interpreter.get_signature_runner("serve")(text=np.array(["good fun"], dtype=object))
        print(json.dumps({"served": [name.decode() for name in served["class_name"].numpy()],
                          "served_probabilities": served["probabilities"].numpy().tolist(),
                          "litert": on_device["probabilities"].tolist(),
                          "keras": classifier.predict_probabilities(["good fun", "awful dull"]).tolist()}))
        sys.exit()
print(json.dumps({"losses": losses, "total_steps": classifier.optimizer._learning_rate.total_steps,
                  "iterations": int(classifier.optimizer.iterations)}))
"""


def run(mode, folder):
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(folder), json.dumps(WORDS)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_save_load_model_and_fit_on_continue_an_interrupted_fit_exactly(tmp_path):
    whole, _ = run("whole", tmp_path)
    first, _ = run("first", tmp_path)
    resumed, stderr = run("resume", tmp_path)
    assert len(whole["losses"]) == 20 and whole["total_steps"] == 20  # 80 texts in batches of 8, two epochs
    assert first["losses"] == whole["losses"][:10]
    np.testing.assert_allclose(resumed["losses"], whole["losses"][10:], atol=1e-5)
    assert resumed["iterations"] == 20 and resumed["total_steps"] == 20
    assert "warning on load" not in stderr and "Skipping variable loading" not in stderr and "Warning" not in stderr
    # Checked to fail: without the optimizer state, or with fresh dropout generators, epoch 2 differs.
    assert not np.allclose(whole["losses"][10:], whole["losses"][:10], atol=1e-5)


def test_a_fit_past_the_end_of_the_schedule_warns_once_that_the_rate_is_zero(tmp_path):
    run("whole", tmp_path)
    more, _ = run("more", tmp_path)
    [warning] = [message for message in more["warnings"] if "learning rate 0" in message]
    assert "ended at step 20" in warning and "\n" not in warning
    assert not more["changed"]  # what the warning says: no weight moved


def test_keras_export_writes_what_tf_serving_and_litert_run_on_strings(tmp_path):
    exported, _ = run("export", tmp_path)
    keras_side = np.array(exported["keras"])
    assert exported["served"] == [["neg", "pos"][k] for k in keras_side.argmax(1)]
    np.testing.assert_allclose(exported["served_probabilities"], keras_side, atol=2e-2)
    np.testing.assert_allclose(exported["litert"][0], keras_side[0], atol=1e-3)
    assert (tmp_path / "saved" / "parity.json").is_file() and (tmp_path / "phone" / "model-parity.json").is_file()
    assert json.loads((tmp_path / "phone" / "model.json").read_text())["class_names"] == ["neg", "pos"]
    assert sorted(path.name for path in (tmp_path / "phone").iterdir()) == ["model-parity.json", "model.json",
                                                                          "model.tflite"]


def test_the_schedule_learns_its_length_once_and_keeps_it():
    schedule = WarmupLinearDecay(1e-4)
    with pytest.raises(ValueError, match="length of training"):
        schedule(0)
    optimizer = kerasbert.adamw_with_warmup(1e-4)
    kerasbert.optimizers.learn_training_length(optimizer, 50)
    kerasbert.optimizers.learn_training_length(optimizer, 70)  # a later fit keeps the first length
    assert optimizer._learning_rate.total_steps == 50
    assert float(optimizer._learning_rate(5)) == pytest.approx(1e-4)
    explicit = kerasbert.adamw_with_warmup(1e-4, total_steps=30)
    kerasbert.optimizers.learn_training_length(explicit, 70)
    assert explicit._learning_rate.total_steps == 30


def test_presets_are_a_registry_with_pinned_checksums():
    presets = kerasbert.TextClassifier.presets
    assert list(presets)[0] == "all_minilm_l6_v2_offline"
    assert "bert_base_en_uncased" in presets  # KerasHub's own BERT presets follow
    entry = kerasbert.presets.PRESETS["all_minilm_l6_v2_offline"]
    assert entry["sha256"]["model.safetensors"].startswith("53aa5117") and entry["metadata"]["params"] > 2e7


def test_from_preset_fit_on_raw_texts_and_classify(tfds_dir):
    train, test, class_names = kerasbert.read_tfds("imdb_reviews", tfds_dir)
    train, test = train.sample(48, seed=1), test.sample(16, seed=1)
    keras.utils.set_random_seed(0)
    classifier = kerasbert.TextClassifier.from_preset("all_minilm_l6_v2_offline", class_names=class_names,
                                                      sequence_length=64, precision="off")
    assert classifier.preprocessor.sequence_length == 64 and classifier.compiled
    assert sum(int(np.prod(weight.shape)) for weight in classifier.backbone.weights) == \
        kerasbert.presets.PRESETS["all_minilm_l6_v2_offline"]["metadata"]["params"]
    history = classifier.fit(train.texts.tolist(), train.labels, batch_size=16, epochs=2,
                             validation_data=(test.texts, test.labels))
    assert len(history.history["loss"]) == 2 and "val_accuracy" in history.history
    assert classifier.optimizer._learning_rate.total_steps == 6  # 48 texts in batches of 16, two epochs
    rows = classifier.classify(list(test.texts[:3]))
    assert [set(row) for row in rows] == [{"text", "label", "probability", "probabilities"}] * 3
    assert all(row["label"] in class_names and abs(sum(row["probabilities"].values()) - 1) < 1e-5 for row in rows)
    # Texts come back in their own order although they are computed sorted by length.
    probabilities = classifier.predict_probabilities(list(test.texts))
    one_by_one = np.concatenate([classifier.predict_probabilities([text]) for text in test.texts[:4]])
    np.testing.assert_allclose(probabilities[:4], one_by_one, atol=1e-5)
    assert classifier.evaluate(test.texts, test.labels, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        np.mean(probabilities.argmax(1) == test.labels))


def test_a_plain_fit_on_a_dataset_prints_no_keras_warning(recwarn):
    import keras_hub
    import tensorflow as tf

    backbone = keras_hub.models.BertBackbone(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=8)
    classifier = kerasbert.TextClassifier(backbone, class_names=["a", "b"])
    features = {"token_ids": np.ones((8, 8), "int32"), "segment_ids": np.zeros((8, 8), "int32"),
                "padding_mask": np.ones((8, 8), "int32")}
    dataset = tf.data.Dataset.from_tensor_slices((features, np.arange(8) % 2)).batch(4)
    classifier.fit(dataset, epochs=1, verbose=0)
    assert [str(warning.message) for warning in recwarn if "shuffle" in str(warning.message)] == []
    assert classifier.optimizer._learning_rate.total_steps == 2
    with pytest.raises(ValueError, match="length_warmup applies to raw texts"):
        classifier.fit(dataset, epochs=1, verbose=0, length_warmup=(4, 0.5))


def test_texts_of_every_length_compute_without_a_retracing_warning(tmp_path):
    import logging

    import keras_hub

    from kerasbert.preprocessing import preprocessor_from_vocabulary

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    preprocessor = preprocessor_from_vocabulary(str(tmp_path / "vocab.txt"), 512, "head")
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(WORDS) + 5, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=512)
    classifier = kerasbert.TextClassifier(backbone, preprocessor=preprocessor, class_names=["neg", "pos"])
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, int(count))) for count in np.linspace(1, 600, 300)]  # 1 to 600 words

    class Retracing(logging.Handler):
        seen = []

        def emit(self, record):
            if "retracing" in record.getMessage():
                self.seen.append(record.getMessage())

    handler = Retracing()
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        # The first half of the steps on texts of at most 32 tokens (a length warm-up), the rest at 512.
        classifier.fit(texts[:64], [index % 2 for index in range(64)], batch_size=8, epochs=1, verbose=0,
                       length_warmup=(32, 0.5))
        probabilities = classifier.predict_probabilities(texts)
        classifier.classify(["good fun", "awful", "dull plot " * 200])
        classifier.evaluate(texts, [index % 2 for index in range(300)], verbose=0)
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert probabilities.shape == (300, 2) and Retracing.seen == []
