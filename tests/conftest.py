"""Shared fixtures: real IMDB reviews from ../shared/data and the real offline MiniLM weights."""

import inspect
import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasbert  # noqa: E402,F401  (before any test imports TensorFlow: the kernels users' runs get)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = pathlib.Path(os.environ.get("KERASBERT_SHARED_DATA", ROOT.parent / "shared" / "data"))
TFDS_DIR = SHARED_DATA / "tensorflow_datasets"
ACL_IMDB_TARBALL = SHARED_DATA / "aclImdb_v1_labeled.tar.gz"

# A test needs ../shared/data when it uses one of these fixtures or names; such a test is also
# slow, like every test on the real weights: `pytest -m "not slow"` runs the fast tier.
DATA_FIXTURES = {"tfds_dir", "real_reviews", "small_acl_imdb", "finished_run", "tfds_splits", "run_dir", "exported",
                 "server", "readme_project", "train"}
DATA_NAMES = ("TFDS_DIR", "ACL_IMDB_TARBALL", "tiny_config", "TINY", "run_example")
WEIGHTS_FIXTURES = {"preset_path"}


def needs_shared_data(item):
    if set(item.fixturenames) & DATA_FIXTURES:
        return True
    function = getattr(item, "function", None)
    return function is not None and any(name in inspect.getsource(function) for name in DATA_NAMES)


# The files that take longest, longest first (`--durations` of the whole suite on a 2-core Zen 4,
# benchmarks/suite_time.md). `make test` runs them first and hands each xdist worker the next file
# only when it is nearly done (`--dist loadfile --no-loadscope-reorder`), so no long file starts
# last and ends the run on one worker while the other idles.
LONGEST_FILES = ("test_export.py", "test_faults.py", "test_readme.py", "test_distribution.py", "test_training.py",
                 "test_examples.py", "test_streamed_training.py", "test_adaptation.py", "test_task.py",
                 "test_crash_points.py", "test_docstrings.py", "test_model.py", "test_monitoring.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if needs_shared_data(item):
            item.add_marker(pytest.mark.shared_data)
        if item.get_closest_marker("shared_data") or set(item.fixturenames) & WEIGHTS_FIXTURES:
            item.add_marker(pytest.mark.slow)
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_runtest_setup(item):
    if item.get_closest_marker("shared_data") and not TFDS_DIR.is_dir():
        pytest.fail(f"this test reads the real IMDB reviews in {SHARED_DATA}, which does not exist "
                    "(the project's shared/ folder belongs beside the checkout)", pytrace=False)


@pytest.fixture(scope="session")
def tfds_dir():
    return str(TFDS_DIR)


@pytest.fixture(scope="session")
def preset_path():
    from kerasbert.presets import resolve_preset

    return resolve_preset("all_minilm_l6_v2_offline")


@pytest.fixture(scope="session")
def real_reviews():
    """40 real labeled reviews (20 neg, 20 pos) from the aclImdb train split, as (text, label) pairs."""
    wanted = {"neg": 20, "pos": 20}
    reviews = []
    with tarfile.open(ACL_IMDB_TARBALL) as archive:
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and parts[-3:-2] == ["train"] and wanted.get(parts[-2], 0) > 0:
                wanted[parts[-2]] -= 1
                text = archive.extractfile(member).read().decode("utf-8").strip()
                reviews.append((text, parts[-2]))
                if not any(wanted.values()):
                    break
    return reviews


@pytest.fixture(scope="session")
def small_acl_imdb(tmp_path_factory, real_reviews):
    """An aclImdb folder of real reviews: 10 per class in train, 5 per class in test."""
    root = tmp_path_factory.mktemp("acl") / "aclImdb"
    by_label = {"neg": [], "pos": []}
    for text, label in real_reviews:
        by_label[label].append(text)
    for label, texts in by_label.items():
        for split, chunk in (("train", texts[:10]), ("test", texts[10:15])):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index, text in enumerate(chunk):
                (folder / f"{index}_{1 if label == 'neg' else 9}.txt").write_text(text, encoding="utf-8")
    return str(root)


def tiny_config(tmp_path, **overrides):
    """A TrainConfig for a run of seconds: 32 real tfds reviews, sequence length 32."""
    from kerasbert.job.config import TrainConfig

    values = dict(data_dir=str(TFDS_DIR), max_train_examples=40, max_test_examples=24, validation_split=0.2,
                  max_seq_length=32, batch_size=8, eval_batch_size=16, log_every_steps=1,
                  output_dir=str(tmp_path / "run"), mixed_precision="off")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A finished tiny run (2 epochs of 4 steps): its config and metrics."""
    from kerasbert.job.training import train_and_evaluate

    config = tiny_config(tmp_path_factory.mktemp("train"), epochs=2)
    return config, train_and_evaluate(config)


def assert_same_predictions(first, second, inputs, atol=1e-6):
    np.testing.assert_allclose(first.predict(inputs, verbose=0), second.predict(inputs, verbose=0), atol=atol)


class TensorBoardServer:
    def __init__(self, logdir, load_fast="false"):
        from kerasbert.distribution import free_loopback_ports

        [self.port] = free_loopback_ports(1)
        tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
        self.process = subprocess.Popen(
            [tensorboard, "--logdir", logdir, "--host", "127.0.0.1", "--port", str(self.port), "--load_fast", load_fast],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def get(self, route, **query):
        url = f"http://127.0.0.1:{self.port}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
        return body if "individualImage" in route else json.loads(body)

    def post(self, route, payload):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{route}", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_for(self, route, ready, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tensorboard exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                answer = self.get(route)
                if ready(answer):
                    return answer
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"tensorboard did not serve {route} within {timeout} s")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_hf_preset):
    """`train.py` options for the tiny random backbone of `tiny_hf_preset`: for runs whose point
    is the job around the model (faults, strategies, resuming, crash points), not the model."""
    return ["--preset", tiny_hf_preset]


@pytest.fixture(scope="session")
def tiny_hf_preset(tmp_path_factory, preset_path):
    """A Hugging Face BERT folder with MiniLM's vocabulary and tokenizer settings and a tiny random
    backbone (1 layer, hidden 16): a preset that loads and trains in seconds."""
    import keras_hub
    from safetensors.numpy import save_file

    from kerasbert.adaptation import weight_map

    folder = tmp_path_factory.mktemp("tiny_hf_preset")
    config = json.loads((pathlib.Path(preset_path) / "config.json").read_text())
    config.update(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=128)
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("vocab.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((pathlib.Path(preset_path) / name).read_bytes())
    backbone = keras_hub.models.BertBackbone(vocabulary_size=config["vocab_size"], num_layers=1, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=128)
    save_file(dict(weight_map(backbone)), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return str(folder)


def kill_after_backup(processes, run, step, timeout=600):
    """SIGKILL `processes` (training `run`) once its backup has reached `step`; the backup's state."""
    state_file = pathlib.Path(run) / "backup" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes[0].poll() is None:
        if state_file.exists() and json.loads(state_file.read_text())["global_step"] >= step:
            break
        time.sleep(0.02)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    return json.loads(state_file.read_text())


# Deterministic tiny runs: no dropout anywhere, float32, no clipping (Keras clips
# per replica before the all-reduce, so clipping alone would tell strategies apart).
TINY = ["--data-dir", str(TFDS_DIR), "--max-train-examples", "40", "--validation-split", "0.2",
        "--max-test-examples", "16", "--max-seq-length", "32", "--batch-size", "8", "--eval-batch-size", "16",
        "--dropout", "0", "--backbone-dropout", "0", "--clip-norm", "0", "--mixed-precision", "off",
        "--log-every-steps", "1"]


@pytest.fixture
def train(tiny_backbone):
    """`train(output_dir, *options)`: a tiny run of `train.py` in a fresh process; its output."""
    def run(output_dir, *options, env=None, wait=True):
        command = [sys.executable, "train.py", "--output-dir", str(output_dir), *TINY, *tiny_backbone, *options]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})
        if not wait:
            return process
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        return output

    return run
