import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert import files
from kerasbert.job import cli, rundir
from kerasbert.splits import load_splits
from kerasbert.job.config import TrainConfig
from kerasbert.job.report import read_scalars
from kerasbert.job.training import ResumableJob, fine_tune, train_and_evaluate
from kerasbert.model import load_classifier
from kerasbert.optimizers import GradientNormAdamW, WarmupLinearDecay
from tests.conftest import ROOT, TFDS_DIR, TensorBoardServer, tiny_config


def test_warmup_then_linear_decay():
    schedule = WarmupLinearDecay(peak=2e-4, total_steps=12, warmup_ratio=1 / 3)
    values = [float(schedule(step)) for step in range(13)]
    assert values[0] == 0 and values[4] == pytest.approx(2e-4) and values[12] == 0
    assert values[:5] == sorted(values[:5]) and values[4:] == sorted(values[4:], reverse=True)
    assert WarmupLinearDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()


def test_loss_falls_on_a_tiny_set_it_can_overfit(tmp_path, preset_path):
    config = tiny_config(tmp_path, max_train_examples=16, validation_split=0.0, epochs=8, learning_rate=3e-4,
                         warmup_ratio=0.0, dropout=0.0)
    splits = load_splits(**config.data_options())
    tuned = fine_tune(ResumableJob(config, config.output_dir), splits)
    losses = tuned.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert tuned.history["accuracy"][-1] >= 0.9


def test_early_stopping_ends_the_run_once_validation_stops_improving(tmp_path, tiny_hf_preset):
    # A learning rate this small leaves every prediction, so validation accuracy, unchanged.
    # Braces and brackets in the path: Keras formats checkpoint paths and glob reads brackets; neither may.
    config = tiny_config(tmp_path / "run {epoch} [1]", epochs=4, early_stopping_patience=1, learning_rate=1e-12,
                         backup_every_steps=3, preset=tiny_hf_preset)
    metrics = train_and_evaluate(config)
    assert metrics["epochs_run"] == 2, "epoch 2 did not improve on epoch 1: the run stops there"
    assert metrics["optimizer_steps"] == 2 * 4
    assert not os.path.exists(os.path.join(config.output_dir, rundir.BACKUP_DIR))
    assert os.path.isfile(os.path.join(config.output_dir, rundir.BEST_WEIGHTS))
    assert os.listdir(os.path.dirname(config.output_dir)) == ["run"], "nothing beside an --output-dir of the user's"
    leftovers = [name for _, _, names in os.walk(config.output_dir) for name in names if name.startswith(".tmp-")]
    assert leftovers == [], "every temporary file was renamed into place"
    with_patience = tiny_config(tmp_path / "patient", epochs=3, early_stopping_patience=0, learning_rate=1e-12,
                                preset=tiny_hf_preset)
    assert train_and_evaluate(with_patience)["epochs_run"] == 3, "patience 0 never stops early"


def test_run_directory_holds_config_metrics_model_and_plot(finished_run):
    config, metrics = finished_run
    run = config.output_dir
    assert TrainConfig.from_dict(files.read_json(os.path.join(run, "config.json"))) == config
    assert files.read_json(os.path.join(run, "metrics.json")) == json.loads(json.dumps(metrics))
    test = metrics["test"]
    assert test["examples"] == 24 == np.sum(test["confusion_matrix"])
    assert test["accuracy"] == pytest.approx(np.trace(test["confusion_matrix"]) / 24)
    assert 0 <= test["roc_auc"] <= 1 and test["loss"] > 0
    assert set(test) >= {"precision", "recall", "f1", "per_class"}
    assert metrics["examples"] == {"train": 32, "validation": 8, "test": 24}
    assert metrics["epochs_run"] == 2 and set(metrics["validation"]) == {"accuracy", "loss"}
    timing = metrics["timing"]
    assert timing["train_sequences_per_second"] > 0 and timing["eval_sequences_per_second"] > 0
    assert timing["total_seconds"] > timing["train_seconds"] > 0
    assert metrics["peak_rss_mib"] > 500
    with open(os.path.join(run, "confusion_matrix.png"), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isfile(os.path.join(run, rundir.BEST_WEIGHTS))


def test_saved_model_reproduces_the_reported_test_accuracy(finished_run):
    config, metrics = finished_run
    classifier = load_classifier(os.path.join(config.output_dir, "model.keras"))
    test = load_splits(**config.data_options()).test
    probabilities = classifier.predict(test.texts.astype(str), verbose=0)
    accuracy = np.mean(np.argmax(probabilities, axis=1) == test.labels)
    assert accuracy == pytest.approx(metrics["test"]["accuracy"])


def test_tensorboard_holds_loss_accuracy_learning_rate_gradient_norm_and_speed(finished_run):
    config, metrics = finished_run
    train = read_scalars(os.path.join(config.output_dir, "logs", "train"))
    validation = read_scalars(os.path.join(config.output_dir, "logs", "validation"))
    for tag in ("batch_loss", "batch_accuracy", "batch_learning_rate", "batch_gradient_norm",
                "batch_sequences_per_second", "epoch_loss", "epoch_accuracy", "epoch_learning_rate",
                "epoch_gradient_norm", "epoch_sequences_per_second"):
        assert tag in train, sorted(train)
    steps, _ = train["batch_loss"]
    assert steps.tolist() == list(range(1, 9)), "4 steps per epoch, logged every step"
    schedule = WarmupLinearDecay(config.learning_rate, 8, warmup_ratio=0.0)
    assert train["batch_learning_rate"][1][0] == pytest.approx(float(schedule(1)), rel=1e-4)
    norms, speeds = train["batch_gradient_norm"][1], train["batch_sequences_per_second"][1]
    assert np.all(norms > 0) and np.all(np.isfinite(norms)) and len(set(norms.round(6))) > 1
    assert np.all(speeds > 0) and np.all(speeds < 10_000)
    assert train["epoch_loss"][0].tolist() == [0, 1]
    assert validation["epoch_accuracy"][1][-1] == pytest.approx(metrics["validation"]["accuracy"])


def test_gradient_norm_is_the_global_norm_before_clipping():
    optimizer = GradientNormAdamW(learning_rate=0.1, global_clipnorm=1.0)
    variables = [keras.Variable(np.zeros((2,), "float32")), keras.Variable(np.zeros((), "float32"))]
    optimizer.apply([np.array([3.0, 0.0], "float32"), np.array(4.0, "float32")], variables)
    assert float(optimizer.gradient_norm.numpy()) == pytest.approx(5.0)


def test_layer_decay_shrinks_the_step_layer_by_layer_towards_the_embeddings():
    # Adam's first step is the learning rate times the gradient's sign, whatever the gradient's size.
    variables = []
    for scope in ("token_embedding", "transformer_layer_0", "transformer_layer_1", "logits"):
        with keras.name_scope(scope):
            variables.append(keras.Variable(np.zeros((3,), "float32"), name="kernel"))
    optimizer = GradientNormAdamW(learning_rate=0.1, weight_decay=0.0, layer_decay=0.5)
    optimizer.apply([np.array([1.0, -2.0, 30.0], "float32")] * 4, variables)
    steps = [float(-variable.numpy()[0]) for variable in variables]
    np.testing.assert_allclose(steps, [0.0125, 0.025, 0.05, 0.1], rtol=1e-3)
    assert keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).layer_decay == 0.5


@pytest.mark.parametrize("traced", [False, True])
def test_fused_adam_update_matches_keras_adamw(traced):
    # Schedule, clipping, decay with exclusions: only the Adam update itself differs in code.
    rng = np.random.default_rng(0)
    shapes = {"kernel": (6, 4), "bias": (4,), "gamma": (3,)}
    initial = {name: rng.normal(size=shape).astype("float32") for name, shape in shapes.items()}
    steps = [[rng.normal(size=shape).astype("float32") for shape in shapes.values()] for _ in range(5)]
    results = []
    for kind in (GradientNormAdamW, keras.optimizers.AdamW):
        optimizer = kind(learning_rate=WarmupLinearDecay(0.1, 6, warmup_ratio=1 / 3), weight_decay=0.1, global_clipnorm=2.0)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma"])
        variables = [keras.Variable(value, name=name) for name, value in initial.items()]
        optimizer.build(variables)  # as `fit` does, before tracing
        def apply(grads):
            optimizer.apply(grads, variables)
        run = tf.function(apply) if traced else apply
        for grads in steps:
            run(grads)
        results.append([variable.numpy() for variable in variables])
    for fused, stock, start in zip(*results, initial.values()):
        assert np.abs(stock - start).max() > 0.1
        # TensorFlow's kernel rounds 1 - beta_2 in float32 (0.99998713e-3); Keras' is 1e-3 to float32.
        np.testing.assert_allclose(fused, stock, rtol=0, atol=1e-5)


def test_sparse_gradient_update_matches_keras_adamw():
    # An embedding's gradient: rows of a table, a row more than once. Keras sums it into a dense
    # gradient; kerasbert keeps it sparse through the clipping and sums it inside the update.
    rng = np.random.default_rng(1)
    initial = rng.normal(size=(9, 3)).astype("float32")
    steps = [tf.IndexedSlices(tf.constant(rng.normal(size=(5, 3)).astype("float32")), tf.constant(rows), tf.constant([9, 3]))
             for rows in ([0, 2, 2, 7, 0], [1, 1, 1, 4, 8], [3, 2, 2, 0, 6])]
    results = []
    for kind in (GradientNormAdamW, keras.optimizers.AdamW):
        optimizer = kind(learning_rate=WarmupLinearDecay(0.1, 4, warmup_ratio=0.25), weight_decay=0.1, global_clipnorm=0.5)
        variable = keras.Variable(initial, name="embeddings")
        optimizer.build([variable])
        apply = tf.function(lambda grads: optimizer.apply(grads, [variable]))
        for gradient in steps:
            apply([gradient])
        results.append(variable.numpy())
    fused, stock = results
    assert np.abs(stock - initial).max() > 0.05
    np.testing.assert_allclose(fused, stock, rtol=0, atol=1e-5)


def test_existing_output_dir_is_refused_and_kept(finished_run, capsys):
    config, _ = finished_run
    before = sorted(os.listdir(config.output_dir))
    assert cli.main(["train", "--data-dir", config.data_dir, "--output-dir", config.output_dir]) == 2
    assert "exists and is not empty (pass --overwrite" in capsys.readouterr().err
    assert sorted(os.listdir(config.output_dir)) == before


def test_output_dir_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["train", "--output-dir", str(blocker / "run")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_overwrite_replaces_an_earlier_run(tmp_path):
    config = tiny_config(tmp_path, max_train_examples=16, max_test_examples=8, validation_split=0.25)
    os.makedirs(config.output_dir)
    for stale in ("metrics.json", ".tmp-killed-write.json"):  # an earlier run's, and one a kill left
        with open(os.path.join(config.output_dir, stale), "w") as file:
            file.write("old")
    metrics = train_and_evaluate(dataclasses.replace(config, overwrite=True))
    assert not os.path.exists(os.path.join(config.output_dir, ".tmp-killed-write.json"))
    assert metrics["examples"]["test"] == 8 == files.read_json(os.path.join(config.output_dir, "metrics.json"))[
        "examples"]["test"]


def test_the_readme_smoke_job_finishes(tmp_path):
    # `make quick`: 18 optimizer steps, fewer than --log-every-steps 20; the report once failed on that.
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--quick", "--output-dir",
                             str(tmp_path / "quick"), "--data-dir", str(TFDS_DIR)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "estimated time on this machine" in result.stdout and "compute precision" in result.stdout
    assert (tmp_path / "quick" / "report.md").is_file() and (tmp_path / "quick" / "training_curves.png").is_file()
    assert not (tmp_path / "quick" / "backup").exists()
    # What the README promises in TensorBoard is on disk when the process ends: its one epoch's text too
    # (written at a step that is no multiple of --log-every-steps), served by a real server.
    tensorboard = TensorBoardServer(str(tmp_path))
    try:
        tags = tensorboard.wait_for("/data/plugin/text/tags", lambda tags: "quick/logs/validation" in tags)
        assert tags["quick/logs/validation"] == ["misclassified_reviews"]
        [entry] = tensorboard.get("/data/plugin/text/text", run="quick/logs/validation", tag="misclassified_reviews")
        assert entry["step"] == 0 and "sampled validation reviews misclassified" in entry["text"]
    finally:
        tensorboard.stop()
