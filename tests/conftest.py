"""Shared fixtures: the demo model repository every server test scores against."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo repository: ``make``'s var/models when built, else trained here (small)."""
    configured = os.environ.get("RISKWIRE_TEST_MODELS")
    candidate = Path(configured) if configured else ROOT / "var" / "models"
    if (candidate / "fraud-gbdt" / "1" / "model.onnx").is_file():
        return candidate
    from gateway.models.train import prepare_demo_repository

    base = tmp_path_factory.mktemp("demo")
    prepare_demo_repository(base / "models", base / "data", rows=40_000, seed=7)
    return base / "models"
