# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bootstrapped

.PHONY: venv demo desk test bench lint format docs metadata update-compat clean

$(STAMP): requirements.txt requirements-bqemulator.txt setup.py scripts/bootstrap.sh
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/bootstrap.sh
	touch $@

venv: $(STAMP)

## The main job: local stack + pipeline + simulated traffic, end to end (about 2 minutes).
demo: venv
	$(PY) -m local_stack.demo

## The verification desk on the demo's fines: prints its login link; Ctrl-C stops it all.
desk: venv
	$(PY) -m local_stack.desk_demo

## The whole test suite: unit (TestPipeline/TestStream) and integration (emulators).
test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest tests/unit -n 2  # pure and in-process: one worker per core
	$(PY) -m tests.lanes  # live pipelines one at a time; desk, warehouse, report beside them

## Benchmarks: each prints its figures (none is a timed test).
bench: venv
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .venv-bqemulator demo-output .pytest_cache .ruff_cache *.egg-info

## Regenerate docs/reference.md's option and schema tables from the code.
docs: venv
	$(PY) -m pipeline.docs

## Regenerate metadata.json (the Flex Template's parameters) from the options.
metadata: venv
	$(PY) -m pipeline.metadata

## Record this graph's stateful steps in pipeline/update_compat.json (docs/deploy.md, Releases).
update-compat: venv
	$(PY) -m pipeline.update_compat --write
