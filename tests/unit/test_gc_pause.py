"""The garbage collector's pauses as the server exports them (gateway/telemetry/gc_pause.py)."""

from __future__ import annotations

import gc

from gateway.telemetry.gc_pause import GcMonitor
from tests.unit.otel_scrape import scrape


def _samples(monitor: GcMonitor) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("generation", "")): sample.value
        for family in scrape(monitor).values()
        for sample in family.samples
    }


def test_a_full_collection_is_counted_and_timed_until_closed() -> None:
    monitor = GcMonitor()
    monitor.start()
    try:
        gc.collect()
        gc.collect()
        samples = _samples(monitor)
    finally:
        monitor.close()
    assert samples[("riskwire_gc_collections_total", "2")] >= 2
    total = samples[("riskwire_gc_pause_seconds_total", "2")]
    longest = samples[("riskwire_gc_max_pause_seconds", "2")]
    assert 0 < longest <= total
    assert samples[("riskwire_gc_frozen_objects", "")] == gc.get_freeze_count()
    # Closed: no longer called, and no longer holding a place in gc.callbacks.
    before = list(monitor.collections)
    gc.collect()
    assert monitor.collections == before
    assert all(getattr(cb, "__self__", None) is not monitor for cb in gc.callbacks)
