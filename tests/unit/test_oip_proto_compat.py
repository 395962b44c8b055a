"""Our Open Inference Protocol proto keeps Triton's wire contract (tritonclient works)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "integration" / "oip_wire_check.py"

# find_spec on the top-level package only: importing tritonclient.grpc here would put
# Triton's `inference.*` symbols into this process's default descriptor pool, where
# they clash with riskwire's generated `inference` package.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tritonclient") is None,
    reason="tritonclient[grpc] (a dev dependency) is not installed",
)


def test_oip_proto_matches_tritonclient_descriptor() -> None:
    proc = subprocess.run(
        [sys.executable, str(CHECK)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("OK:"), proc.stdout
