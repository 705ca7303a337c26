"""TensorBoard as users see it: a real `tensorboard` server on 127.0.0.1, read through its HTTP API."""

import os
import shutil

import numpy as np
import pytest

from kerasbert.job import cli, rundir
from kerasbert.job.plots import precision_recall_curve
from kerasbert.job.report import read_scalars
from kerasbert.job.rundir import REPORT_FILE, TRAINING_CURVES_PNG
from kerasbert.job.training import train_and_evaluate
from kerasbert.monitoring import misclassified_table
from kerasbert.texts import LabeledTexts
from tests.conftest import TensorBoardServer, tiny_config

# TensorBoard is pointed at the folder holding the run, as users point it at runs/.
TRAIN, VALIDATION, TEST = "run/logs/train", "run/logs/validation", "run/logs/test"


@pytest.fixture(scope="module")
def server(finished_run):
    config, _ = finished_run
    tensorboard = TensorBoardServer(os.path.dirname(config.output_dir))
    tensorboard.wait_for("/data/plugin/scalars/tags", lambda tags: TEST in tags and VALIDATION in tags)
    yield tensorboard
    tensorboard.stop()
    with pytest.raises(OSError):  # the server is gone: its port refuses connections
        tensorboard.get("/data/plugin/scalars/tags")


def test_scalars_served_equal_the_recorded_metrics(server, finished_run):
    _, metrics = finished_run
    tags = server.get("/data/plugin/scalars/tags")
    assert {"batch_loss", "batch_gradient_norm", "batch_sequences_per_second", "batch_learning_rate",
            "epoch_accuracy", "epoch_sequences_per_second"} <= set(tags[TRAIN])
    validation = server.get("/data/plugin/scalars/scalars", run=VALIDATION, tag="epoch_accuracy")
    assert [step for _, step, _ in validation] == [0, 1]
    assert validation[-1][2] == pytest.approx(metrics["validation"]["accuracy"], rel=1e-6)
    for name in ("accuracy", "f1", "roc_auc", "loss"):
        [(_, step, value)] = server.get("/data/plugin/scalars/scalars", run=TEST, tag=f"test_{name}")
        assert value == pytest.approx(metrics["test"][name], rel=1e-6)
        assert step == 8, "test results are logged at the last optimizer step"
    norms = server.get("/data/plugin/scalars/scalars", run=TRAIN, tag="batch_gradient_norm")
    assert len(norms) == 8 and all(value > 0 for _, _, value in norms)


def test_hparams_session_holds_the_config_and_final_metrics(server, finished_run):
    config, metrics = finished_run
    experiment = server.post("/data/plugin/hparams/experiment", {})
    hparam_names = {info["name"] for info in experiment["hparamInfos"]}
    assert {"learning_rate", "max_seq_length", "batch_size", "mixed_precision"} <= hparam_names
    columns = [{"hparam": name, "includeInResult": True} for name in ("learning_rate", "max_seq_length",
                                                                       "mixed_precision")]
    columns += [{"metric": {"group": "test", "tag": "test_accuracy"}, "includeInResult": True},
                {"metric": {"group": "validation", "tag": "epoch_accuracy"}, "includeInResult": True}]
    groups = server.post("/data/plugin/hparams/session_groups", {
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING", "STATUS_FAILURE"],
        "colParams": columns, "startIndex": 0, "sliceSize": 10,
    })["sessionGroups"]
    assert len(groups) == 1
    group = groups[0]
    assert group["hparams"]["learning_rate"] == pytest.approx(config.learning_rate)
    assert group["hparams"]["max_seq_length"] == config.max_seq_length
    assert group["hparams"]["mixed_precision"] == config.mixed_precision
    values = {(value["name"].get("group"), value["name"]["tag"]): value["value"] for value in group["metricValues"]}
    assert values[("test", "test_accuracy")] == pytest.approx(metrics["test"]["accuracy"], rel=1e-6)
    assert values[("validation", "epoch_accuracy")] == pytest.approx(metrics["validation"]["accuracy"], rel=1e-6)


def test_misclassified_reviews_are_served_per_epoch(server, finished_run):
    config, _ = finished_run
    assert "misclassified_reviews" in server.get("/data/plugin/text/tags")[VALIDATION]
    entries = server.get("/data/plugin/text/text", run=VALIDATION, tag="misclassified_reviews")
    assert [entry["step"] for entry in entries] == [0, 1]
    assert "sampled validation reviews misclassified" in entries[-1]["text"]


def test_images_and_pr_curves_are_served(server, finished_run):
    config, metrics = finished_run
    image_tags = server.get("/data/plugin/images/tags")[TEST]
    assert {"confusion_matrix", "precision_recall"} <= set(image_tags)
    for tag in ("confusion_matrix", "precision_recall"):
        [entry] = server.get("/data/plugin/images/images", run=TEST, tag=tag)
        png = server.get("/data/plugin/images/individualImage?" + entry["query"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    curves = server.get("/data/plugin/pr_curves/pr_curves", run=TEST, tag="pr_curve_pos/pr_curves")[TEST]
    [curve] = curves
    recall, precision = np.array(curve["recall"]), np.array(curve["precision"])
    assert recall[0] == pytest.approx(1.0), "threshold 0 recalls every positive"
    positives = metrics["test"]["per_class"]["pos"]["support"]
    assert curve["true_positives"][0] == positives
    everyone = positives + metrics["test"]["per_class"]["neg"]["support"]
    assert precision[0] == pytest.approx(positives / everyone, abs=1e-3), "threshold 0 calls every review positive"


def png_size(path):
    import matplotlib.image

    return matplotlib.image.imread(path).shape


def test_report_writes_markdown_with_valid_pictures(finished_run, capsys):
    config, metrics = finished_run
    run = config.output_dir
    os.remove(os.path.join(run, REPORT_FILE))
    assert cli.main(["report", run]) == 0
    printed = capsys.readouterr().out
    assert f"| accuracy | {metrics['test']['accuracy']:.4f} |" in printed
    assert "`--learning-rate`" in printed and "fine-tuning" in printed
    by_length = metrics["test"]["by_length"]
    assert sum(row["examples"] for row in by_length) == metrics["examples"]["test"]
    assert f"| {by_length[0]['words']} | {by_length[0]['examples']:,} | {by_length[0]['accuracy']:.4f} |" in printed
    with open(os.path.join(run, REPORT_FILE)) as report:
        text = report.read()
    for name in (TRAINING_CURVES_PNG, rundir.CONFUSION_MATRIX_PNG, rundir.PRECISION_RECALL_PNG):
        assert f"]({name})" in text
        height, width, channels = png_size(os.path.join(run, name))
        assert height >= 300 and width >= 300 and channels in (3, 4)


def test_report_refuses_what_is_not_a_finished_run(tmp_path, finished_run, capsys):
    config, _ = finished_run
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "is not a kerasbert run directory (no config.json)" in capsys.readouterr().err

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(os.path.join(config.output_dir, "config.json"), unfinished)
    assert cli.main(["report", str(unfinished)]) == 2
    assert "has no test metrics (metrics.json is missing" in capsys.readouterr().err

    killed = tmp_path / "killed"  # the writer killed mid-record: the events before it still make a report
    shutil.copytree(config.output_dir, killed)
    os.remove(killed / REPORT_FILE)
    events = sorted((killed / "logs" / "train").glob("events.out.tfevents.*"))[0]
    events.write_bytes(events.read_bytes()[:-7])
    assert cli.main(["report", str(killed)]) == 0
    said = capsys.readouterr()
    assert f"warning: TensorBoard events file {events} is damaged" in said.out and not said.err
    assert (killed / REPORT_FILE).exists()

    broken = tmp_path / "broken"  # damaged from its first records on: nothing to draw, one line
    shutil.copytree(config.output_dir, broken)
    os.remove(broken / REPORT_FILE)
    events = sorted((broken / "logs" / "train").glob("events.out.tfevents.*"))[0]
    content = events.read_bytes()
    events.write_bytes(content[:40] + b"\xff" * 64 + content[104:])
    assert cli.main(["report", str(broken)]) == 2
    error = capsys.readouterr().err
    assert "has no training scalars" in error and "Traceback" not in error
    assert not (broken / REPORT_FILE).exists()


def test_profile_steps_write_a_profiler_trace(tmp_path):
    config = tiny_config(tmp_path, max_train_examples=32, max_test_examples=8, validation_split=0.0,
                         profile_steps="2,3")
    train_and_evaluate(config)
    traces = [name for root, _, names in os.walk(os.path.join(config.output_dir, "logs", "train", "plugins", "profile"))
              for name in names if name.endswith(".xplane.pb")]
    assert traces, "no .xplane.pb trace under logs/train/plugins/profile"


def test_misclassified_table_lists_the_most_confident_mistakes():
    reviews = LabeledTexts(np.array(["good | film", "bad", "fine", "awful"], dtype=object),
                           np.array([1, 0, 1, 0], dtype="int32"))
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4]])
    table = misclassified_table(reviews, probabilities, ["neg", "pos"])
    rows = [line for line in table.splitlines() if line.startswith("| pos") or line.startswith("| neg")]
    assert table.startswith("2 of 4 sampled")
    assert rows[0].startswith("| pos | neg | 0.100 | good \\| film") and rows[1].startswith("| neg | pos | 0.200 | bad")


def test_precision_recall_curve_by_threshold():
    precision, recall = precision_recall_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.8, 0.1]))
    np.testing.assert_allclose(recall, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(precision, [1.0, 2 / 3, 0.5])


def test_epoch_scalars_and_time_estimate_when_steps_do_not_divide_the_logging_interval(tmp_path, capsys):
    # 4 steps an epoch, per-step scalars every 3: Keras alone dropped the epoch scalars of such epochs.
    config = tiny_config(tmp_path, max_train_examples=40, max_test_examples=8, epochs=2, log_every_steps=3)
    metrics = train_and_evaluate(config)
    train = read_scalars(os.path.join(config.output_dir, "logs", "train"))
    assert list(train["epoch_loss"][0]) == [0, 1]
    assert list(train["batch_loss"][0]) == [3, 6]
    printed = capsys.readouterr().out
    assert "estimated time on this machine: fine-tuning" in printed
    estimate = metrics["estimate"]
    assert estimate["remaining_steps"] == 0 and estimate["step_seconds"] > 0
    assert 0 < estimate["total_seconds"] < 10 * metrics["timing"]["total_seconds"]
    assert metrics["precision"] == {"requested": "off", "resolved": "off", "policy": "float32",
                                    "reason": "asked for explicitly"}
    assert metrics["hardware"]["cores"] == os.cpu_count()
    with open(os.path.join(config.output_dir, REPORT_FILE)) as report:
        assert "Compute precision off" in report.read()
