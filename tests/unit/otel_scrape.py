"""Read what objects register on an OpenTelemetry Meter as Prometheus would see it."""

from __future__ import annotations

from typing import Protocol

from opentelemetry.metrics import Meter
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from gateway.telemetry.metrics import make_meter_provider, meter_of


class Registers(Protocol):
    def register_metrics(self, meter: Meter) -> None: ...


def scrape(*sources: Registers) -> dict[str, Metric]:
    """One scrape of the sources' instruments through the server's own exporter set-up."""
    registry = CollectorRegistry()
    provider = make_meter_provider(registry)
    try:
        meter = meter_of(provider)
        for source in sources:
            source.register_metrics(meter)
        return {family.name: family for family in registry.collect()}
    finally:
        provider.shutdown()
