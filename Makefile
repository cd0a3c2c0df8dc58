# NeuroCine — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NC := $(VENV)/bin/neurocine
STAMP := $(VENV)/.installed
NB_STAMP := $(VENV)/.notebooks
SWEEP ?= mask_ratio
WORKERS ?= 1
DATA ?= data/sim/subject1.h5

# Nothing waits on the network: every model is loaded from local files.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONHASHSEED := 0
# The demo's models are tiny: on this project's shared 2-core machines one torch thread per
# process ran stage 1 and stage 2 several times faster than two (threads fighting other jobs).
# `make demo OMP_NUM_THREADS=2` (or any N) overrides it.
export OMP_NUM_THREADS ?= 1

.PHONY: help install test test-slow lint format demo simulate embed train-stage1 train-stage2 \
        reconstruct evaluate sweep bench bench-all pretrained notebooks notebooks-html clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch==2.13.0 + neurocine[dev]

lint: $(STAMP) ## ruff format --check + ruff check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP) ## Apply ruff format and autofixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint ## Install, lint, then run the fast tests
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

$(NB_STAMP): $(STAMP) setup.cfg
	$(VENV)/bin/pip install --quiet -e ".[notebooks]"
	$(PY) -m ipykernel install --sys-prefix --name neurocine --display-name neurocine
	touch $(NB_STAMP)

notebooks: $(NB_STAMP) ## JupyterLab in notebooks/ with the "neurocine" kernel (installs neurocine[notebooks])
	cd notebooks && ../$(VENV)/bin/jupyter lab

notebooks-html: $(NB_STAMP) ## Execute both notebooks on the demo's and sweep's runs → docs/notebooks/*.html
	$(VENV)/bin/jupyter nbconvert --execute --to html --output-dir docs/notebooks \
	  --ExecutePreprocessor.kernel_name=neurocine notebooks/inspect_run.ipynb notebooks/compare_sweep.ipynb

bench: $(STAMP) ## Run the speed benchmarks (bench/*.py) and rewrite docs/benchmarks.md
	$(PY) -m bench.run_all

bench-all: $(STAMP) ## make bench plus the quality benchmarks that train whole models
	$(PY) -m bench.run_all --all

pretrained: $(STAMP) ## Retrain the shipped tiny CLIP / VAE / video prior and the evaluation CLIP
	$(NC) pretrain clip --out src/neurocine/pretrained/clip
	$(NC) pretrain clip --out src/neurocine/pretrained/clip_eval seed=1 data.seed=300
	$(NC) pretrain vae --out src/neurocine/pretrained/vae
	$(NC) pretrain prior --out src/neurocine/pretrained/prior

clean: ## Remove runs/, data/ and caches (keeps .venv)
	rm -rf runs data .pytest_cache .ruff_cache
