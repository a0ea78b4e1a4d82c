# The two commands of the README. Everything else here serves them.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of this exact version lies on local disk; a looser spec would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0
DEMO   := demo_run

.PHONY: demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(VENV)/bin/tunesmith demo-data $(DEMO)/data
	$(VENV)/bin/tunesmith train $(DEMO)/data/train.jsonl --config configs/demo.yaml --output $(DEMO)/model
	$(VENV)/bin/tunesmith evaluate $(DEMO)/model $(DEMO)/data/test.jsonl
	$(VENV)/bin/tunesmith predict $(DEMO)/model $(DEMO)/data/new_emails.txt

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

test-fast: $(VENV)/.installed
	$(VENV)/bin/pytest -q -m 'not real'

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO) build src/*.egg-info .pytest_cache .ruff_cache
