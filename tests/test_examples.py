"""The README's "Your own script": the examples run end to end, and `fit(epochs=N)` on
kerasbert's training dataset sees a new batch order each epoch, the same ones on a rerun."""

import os
import subprocess
import sys

import keras
import keras_hub
import tensorflow as tf

import kerasbert
import kerasbert.deploy
from kerasbert.job.report import read_scalars
from tests.conftest import ROOT, TFDS_DIR


def run_example(name, output, reviews=64):
    environment = {**os.environ, "TFDS_DATA_DIR": str(TFDS_DIR)}
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), str(reviews), str(output)],
                          capture_output=True, text=True, env=environment, cwd=ROOT)


def test_fit_imdb_example_trains_two_epochs_saves_reloads_and_exports(tmp_path):
    result = run_example("fit_imdb.py", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "('neg', 'pos')" in result.stdout
    assert os.path.isfile(tmp_path / "saved_model" / "1" / "saved_model.pb")
    train = read_scalars(str(tmp_path / "logs" / "train"))
    assert list(train["epoch_loss"][0]) == [0, 1]
    assert list(read_scalars(str(tmp_path / "logs" / "validation"))["epoch_accuracy"][0]) == [0, 1]


def test_mirrored_example_trains_on_two_replicas(tmp_path):
    result = run_example("fit_imdb_mirrored.py", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas; ('neg', 'pos')" in result.stdout


def test_examples_stay_short_and_use_public_names_only():
    import ast

    for name in ("fit_imdb.py", "fit_imdb_mirrored.py"):
        source = (ROOT / "examples" / name).read_text()
        tree = ast.parse(source)
        code_lines = [line for number, line in enumerate(source.splitlines(), 1)
                      if number > tree.body[0].end_lineno and line.strip() and not line.strip().startswith("#")]
        assert len(code_lines) <= 25, name
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kerasbert"}
        public = set(kerasbert.__all__) | {"deploy"}
        assert used and used <= public, used - public
        deployed = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "deploy"}
        assert deployed <= set(kerasbert.deploy.__all__), deployed
        imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
        assert all(line in ("import kerasbert", "import kerasbert.deploy") for line in imports if "kerasbert" in line)
        # kerasbert first: it may turn on TensorFlow's oneDNN kernels, read once as TensorFlow loads.
        frameworks = [line.split()[1].split(".")[0] for line in imports if line.split()[1].startswith(("kera", "tensorflow"))]
        assert frameworks[0] == "kerasbert", frameworks
    code_lines = [line for line in (ROOT / "examples" / "fit_imdb.py").read_text().split('"""', 2)[2].splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    assert len(code_lines) <= 12, code_lines
    forbidden = ("resolve_preset", "total_steps", ".preprocessor =", "softmax")
    assert not [word for word in forbidden if word in (ROOT / "examples" / "fit_imdb.py").read_text()]


def orders_seen_by_fit(texts, preprocessor, seed, epochs=2):
    """The label batches `fit` trained on, epoch by epoch, read as the pipeline hands them over."""
    seen, per_epoch = [], []

    def record(features, labels):
        recorded = tf.py_function(lambda batch: seen.append(batch.numpy().tolist()) or 0, [labels], tf.int32)
        with tf.control_dependencies([recorded]):
            return features, tf.identity(labels)

    class EpochMarks(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            del seen[:]

        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append(list(seen))

    backbone = keras_hub.models.BertBackbone(vocabulary_size=preprocessor.tokenizer.vocabulary_size(), num_layers=1,
                                             num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=64)
    classifier = kerasbert.TextClassifier(backbone, class_names=["neg", "pos"])
    classifier.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = kerasbert.training_dataset(texts, preprocessor, batch_size=8, seed=seed).map(record)
    classifier.fit(dataset, epochs=epochs, verbose=0, callbacks=[EpochMarks()])
    return per_epoch


def test_one_fit_sees_a_new_order_each_epoch_and_the_same_orders_when_rerun(preset_path):
    train, _, _ = kerasbert.read_tfds("imdb_reviews", str(TFDS_DIR))
    texts = train.sample(40, seed=3)
    preprocessor = kerasbert.ReviewPreprocessor.from_preset(preset_path, sequence_length=64)
    first = orders_seen_by_fit(texts, preprocessor, seed=42)
    assert len(first) == 2 and len(first[0]) == len(first[1]) == 5
    assert first[0] != first[1], "epoch 2 trained on the same batch order as epoch 1"
    assert sorted(sum(first[0], [])) == sorted(sum(first[1], []))
    assert orders_seen_by_fit(texts, preprocessor, seed=42) == first, "same seed, different orders"
    assert orders_seen_by_fit(texts, preprocessor, seed=7) != first
