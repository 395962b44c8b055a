"""The garbage collector's pauses on /metrics: time the event loop stood still.

A collection stops the whole process: the event loop, and every call that arrives
meanwhile waits before its handler runs, so the server's own latency stamps never show
it. Each server times every collection (``gc.callbacks``: ~2 us a collection here,
against 0.1 us for a young collection without it) and exports, per generation, the
collections, their summed and largest pause, and how many objects ``gc_freeze`` put
out of the collector's reach (benchmarks/micro/gc_pause.py measures what that saves).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from opentelemetry.metrics import Meter, Observation

GENERATIONS = (0, 1, 2)


class GcMonitor:
    """Times the collector's runs in this process (``start`` .. ``close``)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_s = [0.0, 0.0, 0.0]
        """Summed pause per generation, seconds."""
        self.max_pause_s = [0.0, 0.0, 0.0]
        """Largest single pause per generation, seconds."""
        self._started = 0.0
        self._installed = False

    def start(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def close(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self.collections[generation] += 1
        self.pause_s[generation] += pause
        if pause > self.max_pause_s[generation]:
            self.max_pause_s[generation] = pause

    def register_metrics(self, meter: Meter) -> None:
        def per_generation(values: list[float] | list[int]) -> list[Observation]:
            return [Observation(values[g], {"generation": str(g)}) for g in GENERATIONS]

        meter.create_observable_counter(
            "riskwire.gc.collections",
            [lambda _: per_generation(self.collections)],
            unit="",
            description="Garbage collections since start, per generation (2: full)",
        )
        meter.create_observable_counter(
            "riskwire.gc.pause",
            [lambda _: per_generation(self.pause_s)],
            unit="s",
            description="Time the process stood still in garbage collections, per generation",
        )
        meter.create_observable_gauge(
            "riskwire.gc.max_pause",
            [lambda _: per_generation(self.max_pause_s)],
            unit="s",
            description="The longest single garbage collection since start, per generation",
        )
        meter.create_observable_gauge(
            "riskwire.gc.frozen.objects",
            [lambda _: [Observation(gc.get_freeze_count())]],
            unit="",
            description="Objects out of the collector's reach (gc_freeze, at start)",
        )
