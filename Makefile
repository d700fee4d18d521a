# Two commands for a fresh machine (README): `make demo` and `make test`. Both set up first; set-up is
# idempotent (a stamp keyed on the lock file and pyproject.toml).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/cpu.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup demo compare test test-all bench lint

setup: $(STAMP)

$(STAMP): requirements/cpu.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	# torch first and alone: the CPU build, pinned, so nothing can pull a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-deps -r requirements/cpu.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	# convert the embedded default model (SmolLM2-135M-Instruct GGUF) to a HF folder once (~35 s)
	$(BIN)/python -c "from latr_sglang.models import embedded_model_dir as d; print('default model:', d())"
	rm -f $(VENV)/.installed-*
	touch $@

# The main job: DAPO + LATR training on countdown with the embedded SmolLM2-135M-Instruct, evaluation before vs
# after, plots (scripts/demo-cpu.sh; under 20 min on 2 cores)
demo: setup
	scripts/demo-cpu.sh

# LATR vs stochastic sampling on the embedded SmolLM2-135M-Instruct, 8 countdown prompts x 8 (~2 min)
compare: setup
	mkdir -p outputs
	$(BIN)/latr-sglang sample --num-prompts 8 --n 8 --max-new-tokens 128 --output outputs/demo_trajectories.jsonl

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m ''

bench: setup
	$(BIN)/python -m latr_sglang.bench.engine
	$(BIN)/python -m latr_sglang.bench.rewards
	$(BIN)/python -m latr_sglang.bench.rollout

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
