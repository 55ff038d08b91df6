# lambdascope: `make run` (the main job on the embedded default) and `make test`.
# Each target installs what it needs into .venv by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU torch wheel lies in /opt/wheels on these machines; elsewhere pip finds it on its index.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := $(if $(WHEELS),--find-links $(WHEELS),)

.PHONY: run test proto venv clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_FLAGS) -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

## Generate the Python stubs from protos/ (the only way stubs are written).
proto: venv
	$(PY) scripts/gen_protos.py

## The main job: start the platform, train baseline and self-modeling MLPs on digits,
## audit both, print the comparison, stop the platform.
run: venv
	$(PY) -m lambdascope.demo

test: venv
	scripts/ensure_chromium.sh
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
