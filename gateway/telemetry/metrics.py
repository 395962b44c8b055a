"""OpenTelemetry metrics, wired once at server assembly (STYLE.md, "Telemetry in one place").

The server makes one :class:`MeterProvider` whose only reader is a Prometheus reader
bound to the metrics endpoint's own registry (no global registry, no global provider:
two servers in one test process never share a figure). Library code receives the
``Meter`` and registers *observable* instruments: the serving path bumps plain
counters and the SDK reads them at scrape time (see gateway/telemetry/serving.py for
why histograms go out as pre-aggregated Prometheus families beside it).

Naming: OpenTelemetry names with dots (``riskwire.queue.rows``) come out in Prometheus
with underscores, ``_total`` on counters and the unit as a suffix where it has one
(``riskwire_batch_rows_total``); no scope labels and no target_info, so the series
look as if written for Prometheus by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

import gateway
from gateway.backends.batching import BATCH_SIZE_EDGES, BatcherStats
from gateway.models.repository import LoadedModel

METER_NAME = "riskwire.gateway"


def make_meter_provider(registry: CollectorRegistry) -> MeterProvider:
    """A MeterProvider whose metrics appear in ``registry`` (the /metrics page)."""
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    return MeterProvider(
        metric_readers=[reader],
        resource=Resource.create(
            {"service.name": "riskwire", "service.version": gateway.__version__}
        ),
    )


def meter_of(provider: MeterProvider) -> Meter:
    return provider.get_meter(METER_NAME, gateway.__version__)


class BatcherMetrics(Collector):
    """The batchers' counters and queue depths (OpenTelemetry), batch sizes (histogram).

    Args:
        loaded: the model versions loaded now (read at each scrape).
    """

    def __init__(self, loaded: Callable[[], Sequence[LoadedModel]]) -> None:
        self._loaded = loaded

    def register_metrics(self, meter: Meter) -> None:
        counters = {
            "riskwire.batches": ("Model calls made by the batcher", lambda s: s.batches),
            "riskwire.batch.rows": ("Rows scored by the batcher", lambda s: s.rows),
            "riskwire.expired.rows": (
                "Requests dropped unrun: their deadline passed while queued",
                lambda s: s.expired,
            ),
            "riskwire.backend.failures": ("Model calls that raised", lambda s: s.failures),
        }
        for name, (description, read) in counters.items():
            meter.create_observable_counter(
                name, [self._reader(read)], unit="", description=description
            )
        meter.create_observable_counter(
            "riskwire.shed.requests",
            [self._shed],
            unit="",
            description="Requests the batcher refused, answered by the route's fallback or "
            "RESOURCE_EXHAUSTED: reason queue_full (queue_rows) or deadline (admission: "
            "the work ahead would end past the request's deadline)",
        )
        meter.create_observable_gauge(
            "riskwire.queue.rows",
            [self._queue_rows],
            unit="",
            description="Rows waiting in the model's batcher now",
        )

    def _reader(
        self, read: Callable[[BatcherStats], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for model in self._loaded():
                yield Observation(read(model.batcher.stats), _labels(model))

        return observe

    def _shed(self, _: CallbackOptions) -> Iterable[Observation]:
        for model in self._loaded():
            stats = model.batcher.stats
            yield Observation(stats.shed, _labels(model) | {"reason": "queue_full"})
            yield Observation(stats.shed_late, _labels(model) | {"reason": "deadline"})

    def _queue_rows(self, _: CallbackOptions) -> Iterable[Observation]:
        for model in self._loaded():
            yield Observation(model.batcher.queued_rows, _labels(model))

    def collect(self) -> Iterator[Metric]:
        sizes = HistogramMetricFamily(
            "riskwire_batch_size",
            "Rows per model call made by the batcher",
            labels=["model", "version"],
        )
        for model in self._loaded():
            stats = model.batcher.stats
            running = 0
            buckets = []
            for edge, count in zip([*BATCH_SIZE_EDGES, None], stats.sizes, strict=True):
                running += count
                buckets.append(("+Inf" if edge is None else str(float(edge)), float(running)))
            sizes.add_metric([model.name, str(model.version)], buckets, float(stats.rows))
        yield sizes


def _labels(model: LoadedModel) -> dict[str, str]:
    return {"model": model.name, "version": str(model.version)}
