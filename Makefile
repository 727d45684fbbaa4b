# The two commands of the README: `make demo` (set up, run the main job) and `make test` (set up, pass the tests).
# Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests never reach the network: the Hugging Face Hub is offline for them.
# accelerate launch gives each process one CPU thread unless told otherwise; the trainer raises a CPU run to its
# share of the cores anyway (fer_mek.environment.cpu_threads_of_run), and the flag below says the same explicitly.
CPU_THREADS := $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)))")
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The main job: the default training run (MEK on the synthetic set; replaces an earlier demo run), then the
# trained model used through the Auto classes and the pipeline.
demo: setup
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		--num_cpu_threads_per_process $(CPU_THREADS) scripts/train.py --overwrite
	$(PY) scripts/demo.py --model runs/synthetic-mek/best

test: setup
	$(TEST_ENV) $(PY) -m pytest -n 2

test-all: setup
	$(TEST_ENV) $(PY) -m pytest -n 2 -m ""

lint: setup
	$(PY) -m ruff check fer_mek scripts tests hub

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
