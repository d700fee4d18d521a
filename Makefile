# Two commands for a fresh machine (README): `make demo` and `make test`. Both set up first; set-up is
# idempotent (a stamp keyed on the lock file and pyproject.toml).
PYTHON ?= python3.11
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/cpu.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo-ray
.PHONY: setup demo compare test test-all bench lint

setup: $(STAMP)

$(STAMP): requirements/cpu.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# pyproject's SPDX license needs setuptools >= 77 (a Python 3.11 venv brings 65.5); built without isolation
	$(BIN)/pip install -q --upgrade pip==25.3 "setuptools>=77"
	# torch first and alone, pinned, so nothing can pull another build. Where pip's indexes do not serve the
	# CPU build (stock PyPI on Linux serves the CUDA one): make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
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

# The main job through OpenRLHF's own Ray trainer on the CPU (--trainer.device cpu: Ray actors, DeepSpeed
# ZeRO-2 over gloo, reference model, weight broadcast to a LATR engine actor); smaller than `make demo`,
# a debugging/CI run of the distributed path (scripts/demo-ray.sh; 18 prompts, 2 x 8 per step; 3.5-4.5 min on 2 idle cores)
demo-ray: setup
	scripts/demo-ray.sh

# LATR vs stochastic sampling over seeds: the main job (demo-cpu.sh) with each sampler, SEEDS="1 2 3", then one
# table + one plot in outputs/experiment/experiment.{md,png} (scripts/experiment-cpu.sh; about 1 hour on 2 cores;
# rerunning continues where it stopped; SMOKE=1 for a quick check of the pipeline)
.PHONY: experiment
experiment: setup
	scripts/experiment-cpu.sh

# LATR vs stochastic sampling on the embedded SmolLM2-135M-Instruct, built-in countdown prompts; sizes and any
# other `latr-sglang sample` flags from the command line:
#   make compare PROMPTS=16 N=8 MAX_NEW_TOKENS=256 ARGS="--latr.preset small"
PROMPTS ?= 8
N ?= 8
MAX_NEW_TOKENS ?= 128
ARGS ?=
compare: setup
	mkdir -p outputs
	$(BIN)/latr-sglang sample --num-prompts $(PROMPTS) --n $(N) --max-new-tokens $(MAX_NEW_TOKENS) \
		--output outputs/compare_trajectories.jsonl $(ARGS)

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
