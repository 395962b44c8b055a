"""Replays the fuzzer's inputs through its differential check, native against protobuf.

Every file of tests/fuzz/regressions/wire/ (hand-made hostile frames, and each crash
the fuzzer found, minimized) and tests/fuzz/corpus/wire/ (the seeds) must pass
`tests.fuzz.wire_check.check`: the same oracle `make fuzz` runs, without atheris.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.wire_check import check
from tests.native.strategies import needs_native

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
INPUT_DIRS = (FUZZ_DIR / "regressions" / "wire", FUZZ_DIR / "corpus" / "wire")
INPUTS = sorted(p for d in INPUT_DIRS for p in d.iterdir() if p.is_file())


def test_corpora_are_not_empty() -> None:
    for directory in INPUT_DIRS:
        assert any(p.parent == directory for p in INPUTS), f"{directory} holds no input"


@needs_native
@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_native_parser_agrees_with_protobuf(path: Path) -> None:
    check(path.read_bytes())
