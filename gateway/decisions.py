"""Where an answer came from: a dependency-free module, so that settings-level modules
(gateway/telemetry/outcomes.py) can name it without importing the data plane."""

from __future__ import annotations

import enum


class DecisionSource(enum.StrEnum):
    MODEL = "MODEL"
    FALLBACK = "FALLBACK"
