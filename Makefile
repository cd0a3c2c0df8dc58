# NeuroCine — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NC := $(VENV)/bin/neurocine
STAMP := $(VENV)/.installed
# The tested environment: every package at an exact version, torch as below (`make lock`).
LOCK := requirements/lock.txt
TORCH := 2.13.0
NB_STAMP := $(VENV)/.notebooks
SWEEP ?= mask_ratio
WORKERS ?= 1
DATA ?= data/sim/subject1.h5
CONFIG ?= experiments/cc2017_subject1.yaml
ARGS ?=

# Nothing waits on the network: every model is loaded from local files.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONHASHSEED := 0
# The demo's models are tiny: on this project's shared 2-core machines one torch thread per
# process ran stage 1 and stage 2 several times faster than two (threads fighting other jobs).
# `make demo OMP_NUM_THREADS=2` (or any N) overrides it.
export OMP_NUM_THREADS ?= 1

.PHONY: help install lock test test-slow lint typecheck format demo simulate embed train-stage1 \
        train-stage2 reconstruct evaluate sweep bench bench-all bench-gpu pretrained clean pipeline \
        rehearse notebooks notebooks-html

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): $(LOCK) setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r $(LOCK)
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked environment (requirements/lock.txt) + neurocine

# pip-compile keeps the pins already in the lock and resolves only what setup.cfg changed;
# `make lock UPGRADE=1` re-resolves everything to the newest versions allowed.
lock: $(STAMP) ## Re-resolve requirements/lock.txt from setup.cfg (dev extra; torch at TORCH)
	echo "torch==$(TORCH)" | CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet \
	  --extra dev --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
	  $(if $(UPGRADE),--upgrade) --output-file $(LOCK) setup.cfg -
	sed -i -E -e 's/^(torch==[^+ ]+)\+[A-Za-z0-9.]+$$/\1/' \
	  -e 's/^(    #( via|  )) -r -$$/\1 the Makefile (TORCH)/' $(LOCK)

lint: $(STAMP) ## ruff format --check + ruff check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: $(STAMP) ## mypy on src/neurocine (settings in pyproject.toml)
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff format and autofixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint typecheck ## Install, lint, type-check, then run the fast tests
	$(PY) -m pytest -q --durations=15

test-slow: $(STAMP) ## Run the long tests (DDP, resume, demo, recipes)
	$(PY) -m pytest -q -m slow --durations=15

$(DATA): $(STAMP)
	$(NC) simulate --out $(DATA)

simulate: $(DATA) ## Simulate the built-in dataset (data/sim/subject1.h5)

embed: $(DATA) ## Write CLIP image/text targets into the dataset
	$(NC) embed $(DATA) --config experiments/stage1.yaml

train-stage1: embed ## Stage 1: contrastive fMRI encoder on the simulated default
	$(NC) train stage1 --config experiments/stage1.yaml

train-stage2: $(STAMP) ## Stage 2: video diffusion conditioned on the latest stage-1 run
	$(NC) train stage2 --config experiments/stage2.yaml

sweep: embed ## Run experiments/sweeps/$(SWEEP).yaml (make sweep SWEEP=interp_ratio WORKERS=2)
	$(NC) sweep experiments/sweeps/$(SWEEP).yaml --workers $(WORKERS)

demo: $(STAMP) ## Install, then simulate → embed → stage 1 → stage 2 → reconstruct → evaluate
	$(NC) demo --config experiments/demo.yaml

pipeline: $(STAMP) ## Real data → metrics: make pipeline CONFIG=experiments/cc2017_subject1.yaml ARGS="source.root=… models.clip=…"
	$(NC) pipeline --config $(CONFIG) $(ARGS)

rehearse: $(STAMP) ## The real cc2017 chain on generated data + random-weight models (wiring, not quality)
	$(NC) rehearse --out rehearsal

$(NB_STAMP): $(STAMP) setup.cfg
	$(VENV)/bin/pip install --quiet -e ".[notebooks]"
	$(PY) -m ipykernel install --sys-prefix --name neurocine --display-name neurocine
	touch $(NB_STAMP)

notebooks: $(NB_STAMP) ## JupyterLab in notebooks/ with the "neurocine" kernel (installs neurocine[notebooks])
	cd notebooks && ../$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

notebooks-html: $(NB_STAMP) ## Execute both notebooks on the demo's and sweep's runs → docs/notebooks/*.html
	$(VENV)/bin/jupyter nbconvert --execute --to html --output-dir docs/notebooks \
	  --ExecutePreprocessor.kernel_name=neurocine notebooks/inspect_run.ipynb notebooks/compare_sweep.ipynb

bench: $(STAMP) ## Run the speed benchmarks (bench/*.py) and rewrite docs/benchmarks.md
	$(PY) -m bench.run_all

bench-all: $(STAMP) ## make bench plus the quality benchmarks that train whole models
	$(PY) -m bench.run_all --all

bench-gpu: $(STAMP) ## On a GPU: paper-size stage 1/2 steps, memory, DDIM (≤ 8 min; bench/gpu_check.py)
	$(PY) -m bench.gpu_check
	$(PY) -m bench.run_all --only-docs

pretrained: $(STAMP) ## Retrain the shipped tiny CLIP / VAE / video prior and the evaluation CLIP
	$(NC) pretrain clip --out src/neurocine/pretrained/clip
	$(NC) pretrain clip --out src/neurocine/pretrained/clip_eval seed=1 data.seed=300
	$(NC) pretrain vae --out src/neurocine/pretrained/vae
	$(NC) pretrain prior --out src/neurocine/pretrained/prior

clean: ## Remove runs/, data/ and caches (keeps .venv)
	rm -rf runs data rehearsal .pytest_cache .ruff_cache .mypy_cache
