# Two commands on a fresh machine: `make demo` and `make test`. Both create/reuse the venv in $(VENV).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfseg-installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 1

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) demo.py --output demo_output

# Two pytest workers (pytest-xdist): one test process leaves half of a 2-core machine idle (TensorFlow's graph
# building and the file checks run on one core). Each worker holds its own models: mind memory before raising it.
# Tests are handed out a few at a time, the slow ones first, except that the tests sharing a module-scoped fixture go to
# one worker together (tests/conftest.py, `--dist loadscope`), which builds the fixture once.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf demo_output runs .pytest_cache
