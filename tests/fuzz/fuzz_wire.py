#!/usr/bin/env python3
"""atheris fuzz target: the native wire parser against protobuf, differentially.

    make fuzz                     # FUZZ_SECONDS (600) with the seeds, dictionary, crash dir
    .venv/bin/python tests/fuzz/fuzz_wire.py [libFuzzer flags] [corpus dirs or files]

Executable on purpose: libFuzzer's -minimize_crash and -fork re-run argv[0] as a
command, so the venv's python must come first on PATH (the Makefile sees to it).

Each input goes through `tests.fuzz.wire_check.check` (both entry points, protobuf,
the native and reference encoders); a disagreement raises, and libFuzzer saves the
input as a crash-* file. The Python coverage of COVERED_MODULES guides the search; with
RISKWIRE_NATIVE_BUILD pointing at the clang build of `make fuzz`
(-fsanitize=address,undefined,fuzzer-no-link, asan_with_fuzzer.so preloaded), so does
the C++ parser's edge coverage. See tests/fuzz/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

if not __package__:  # run as a script: the repository root, for `tests.fuzz`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz import native_build

COVERED_MODULES = ["gateway.features", "gateway.grpc.converters"]
"""The Python code whose coverage guides the search besides the native parser's: the
reference encoder and readers, and the reference checks. (Not wire_check itself: its
branches say nothing new about an input, and instrumenting it halves the speed.)"""

# Before anything imports gateway._native._encoder: take it from the fuzz build when asked.
native_build.use_native_build()

with atheris.instrument_imports(include=COVERED_MODULES):
    from tests.fuzz import wire_check


def test_one_input(data: bytes) -> None:
    """libFuzzer's callback: raises on any disagreement (see wire_check)."""
    wire_check.check(data)


def main() -> None:
    where = native_build.describe()
    print(f"fuzz_wire: gateway._native from {where}", file=sys.stderr, flush=True)
    wire_check.check(b"")  # build the parsers and encoders before the clock starts
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
