# riskwire: `make serve` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODELS ?= var/models
DEMO_ROWS ?= 200000
SEED ?= 7
# One thread per model library: OpenMP-style pools spin and steal the other core.
export OMP_NUM_THREADS ?= 1

NATIVE_SOURCES := $(wildcard native/cpp/*.cpp native/cpp/*.hpp native/cython/*.pyx native/cython/*.pxd)
PROTO_SOURCES := $(shell find protos -name '*.proto')

.PHONY: all install build models serve test lint typecheck unit bench clean

all: build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Build tools first, then the package editable without isolation: the build uses
# the same pinned grpcio-tools / pybind11 / Cython as the rest of the venv.
$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q "setuptools>=70" wheel "grpcio-tools==1.81.1" "pybind11>=2.12" "cython>=3.0" "numpy>=1.26" "mypy-protobuf>=3.6"
	$(BIN)/pip install -q --no-build-isolation -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Regenerate protos and rebuild the extensions in place when their sources change.
$(VENV)/.built: $(VENV)/.installed $(NATIVE_SOURCES) $(PROTO_SOURCES)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.built

$(MODELS)/fraud-gbdt/1/model.onnx: | $(VENV)/.built
	$(BIN)/riskwire models prepare-demo --models $(MODELS) --rows $(DEMO_ROWS) --seed $(SEED)

models: $(MODELS)/fraud-gbdt/1/model.onnx

serve: build models
	$(BIN)/riskwire serve --models $(MODELS)

lint: build
	$(BIN)/ruff check .
	$(BIN)/ruff format --check gateway router tests benchmarks

typecheck: build
	$(BIN)/mypy

unit: build models
	$(BIN)/python -m pytest -q

test: build models lint typecheck
	$(BIN)/python -m pytest -q
	@echo "--- again on the pure-Python reference (RISKWIRE_PURE_PYTHON=1)"
	RISKWIRE_PURE_PYTHON=1 $(BIN)/python -m pytest -q tests/unit tests/native tests/integration/test_scoring.py

bench: build models
	$(BIN)/python -m benchmarks.load.compare --models $(MODELS)

clean:
	rm -rf build $(VENV)/.built gateway/_native/*.so riskwire inference native/cython/*.c native/cython/*.cpp
