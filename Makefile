# The two commands of the README:
#   make run   set up (virtual environment, packages, sample data) and start the app
#   make test  set up (packages, test tools, chromium) and run the whole test suite
# Nothing but Python 3.11+ is needed beforehand.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8501
ADDRESS ?= localhost

.PHONY: run test setup setup-dev sample browser clean default-model noise-robust-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# The offline sample dataset, generated once (deterministic).
data/sample/dataset.json: | $(VENV)/.installed
	$(BIN)/python -m unet sample-data data/sample --count 48 --seed 0

sample: data/sample/dataset.json

# Debian's chromium for the browser test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: setup sample
	$(BIN)/python -m streamlit run serve.py --server.address $(ADDRESS) --server.port $(PORT)

test: setup-dev browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# Retrain the bundled default model from its configs (needs ../shared/data), in five
# stages on a 2-core CPU: 55 min of training; 25 min of fine-tuning at a lower learning
# rate; about 100 min more in mixed bfloat16 (40 epochs of 100 steps, a new cosine
# cycle); about 75 min on larger 384x384 crops (more context per crop); then about 65 min
# on zoomed-out crops (0.9-1.5x the crop side shrunk to 384). On a GPU each stage takes
# minutes. The card then gets the automatic scale (docs/auto-scale.md) and a threshold chosen
# on fold 1 of 5 of the training photos (whole source walls per fold), never on the val
# splits, which are read once at the end (models/MODEL_CARD.md).
# Each stage starts from the model the previous one saved.
SHARED_DATA ?= ../shared/data
# $(call stage,CONFIG,NAME,DEST): train models/CONFIG.json, copy its newest run's model to DEST.
stage = $(BIN)/python -m unet train --config models/$(1).json --runs-dir runs && \
	run=$$(ls -td runs/*-$(2)-???? | head -1) && cp $$run/model.keras $(3)
default-model: setup
	$(call stage,default.train,default,runs/default-stage1.keras)
	$(call stage,default.finetune,default-finetune,runs/default-stage2.keras)
	$(call stage,default.long,default-long,runs/default-stage3.keras)
	$(call stage,default.context,default-context,runs/default-stage4.keras)
	$(call stage,default.zoomout,default-zoomout,models/default.keras) && cp $$run/model.json models/default.json
	$(BIN)/python -m unet calibrate --model models/default.keras --write --scales auto --fold 1/5 \
	  --data $(SHARED_DATA)/masonry $(SHARED_DATA)/deepcrack

# Retrain the bundled noise-robust model (models/MODEL_CARD.md, "Sensor noise in training"): the
# CPU recipe with sensor noise, on five folds of the training photos (whole source walls per
# fold; about 60-70 min each on a 2-core CPU), then once on every training photo (53-81 min),
# its threshold the folds' median and its scale their most common. About 6 hours here; on a GPU,
# minutes per fold (bench/gpu_session.sh). Run again after an interruption, it resumes: finished
# folds are kept, a stopped run goes on from its last checkpoint.
NOISE_RECIPE := models/recipe.cpu-noise.json
noise-robust-model: setup
	$(BIN)/python -m unet crossval --config $(NOISE_RECIPE) --folds 5 --runs-dir runs
	$(BIN)/python -m unet crossval --config $(NOISE_RECIPE) --folds 5 --final --runs-dir runs \
	  --out models/noise-robust.keras
