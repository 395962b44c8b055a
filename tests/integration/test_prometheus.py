"""The gateway's metrics read back through a real Prometheus (Debian's `prometheus`).

A gateway on 127.0.0.1 takes a known load; a Prometheus started by the test scrapes it
every second; PromQL then has to give back what the test sent: the number of calls and
latency quantiles consistent with the latencies the client saw, the fallbacks it
provoked, and drift PSI computed in PromQL from the bin counters (the expression of
``gateway.telemetry.drift.promql_psi``, the one an alert would use): under 0.1 for an
unshifted stream at the minimum sample size, over 0.25 for a stream whose amounts are
shifted.

`make test-tools` installs Prometheus; without it this module skips, saying so.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from gateway.models.card import ModelCard
from gateway.telemetry.drift import DriftSettings, promql_psi
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (make test-tools installs it)"
)

ROUTES = """
routes:
  - name: tight
    match: {channel: [NO_SUCH_CHANNEL]}
    salt: tight
    deadline_ms: 0.001
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
    fallback: {on: [timeout], decision: REVIEW}
  - name: default
    salt: prom
    deadline_ms: 5000
    arms: [{model: fraud-gbdt, version: 1, weight: 100, role: champion}]
"""

MIN_SAMPLES = DriftSettings().min_samples
"""The unshifted stream is exactly the default minimum sample size."""
FALLBACKS = 17
SCORE_CALLS = 200


class Prometheus:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{expr}: {error.read().decode()}") from None
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float:
        result = self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, want: float, timeout: float = 30.0) -> float:
        """Poll until the scalar result of ``expr`` equals ``want``; the time it did."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            now = time.time()
            result = self.query(expr, now)
            if len(result) == 1:
                seen = float(result[0]["value"][1])
                if seen == want:
                    return now
            time.sleep(0.25)
        raise AssertionError(f"{expr} stayed {seen}, wanted {want}: {self.log.read_text()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("prom-gateway")
    routes = directory / "routes.yaml"
    routes.write_text(ROUTES)
    config = write_config(
        directory,
        model_repository,
        routes_file=str(routes),
        drift={"fold_interval_ms": 100},
    )
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, gateway: ServerProcess
) -> Iterator[Prometheus]:
    assert PROMETHEUS is not None
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: riskwire\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{gateway.metrics_port}']}}]\n"
    )
    log = directory / "prometheus.log"
    # Prometheus cannot report a port it chose itself: take a free one, retrying if
    # another process wins it between the probe and the bind.
    for _ in range(5):
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Prometheus(process, port, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if server.query('up{job="riskwire"} == 1'):
                    break
            except (OSError, AssertionError):
                pass  # not listening yet, or 503 while its storage opens
            time.sleep(0.2)
        if process.poll() is None:
            break
    else:
        raise AssertionError(f"prometheus did not start: {log.read_text()[-2000:]}")
    assert server.query('up{job="riskwire"} == 1'), log.read_text()[-2000:]
    yield server
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _score_all(target: str, txns: list[pb.Transaction], unary: int) -> list[float]:
    """Score ``unary`` transactions one call each (their latencies, ms), the rest in batches."""
    latencies = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        for txn in txns[:unary]:
            start = time.perf_counter()
            stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
            latencies.append((time.perf_counter() - start) * 1e3)
        rest = txns[unary:]
        for i in range(0, len(rest), 250):
            stub.ScoreBatch(pb.ScoreBatchRequest(transactions=rest[i : i + 250]), timeout=30)
    return latencies


def _psi_between(t1: float | None, t2: float) -> str:
    """promql_psi over the rows counted between two instants (all rows when t1 is None)."""
    counts = f"riskwire_drift_bin_observations_total @ {t2:.3f}"
    if t1 is not None:
        counts = f"({counts} - riskwire_drift_bin_observations_total @ {t1:.3f})"
    expr = promql_psi("1m").replace("increase(riskwire_drift_bin_observations_total[1m])", counts)
    assert counts in expr
    return expr


@pytest.fixture(scope="module")
def streams(model_repository: Path) -> tuple[list[pb.Transaction], list[pb.Transaction]]:
    """Unshifted and amount-shifted transactions drawn from a world as large as the
    training data's (account histories, hence velocities, depend on its size)."""
    card = ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")
    generator = card.lineage.generator
    assert generator is not None
    base = SynthOptions(**generator["options"])
    rows = int(generator["rows"])
    rng = np.random.default_rng(11)
    picked = np.sort(rng.choice(rows, MIN_SAMPLES, replace=False))
    shifted_options = SynthOptions(**{**generator["options"], "amount_shift": 4.0})
    return tuple(  # type: ignore[return-value]
        transactions_from_table({k: v[picked] for k, v in generate(rows, seed, options).items()})
        for seed, options in ((101, base), (102, shifted_options))
    )


def test_latency_fallbacks_and_drift_through_promql(
    gateway: ServerProcess,
    prometheus: Prometheus,
    streams: tuple[list[pb.Transaction], list[pb.Transaction]],
) -> None:
    unshifted, shifted = streams
    latencies = _score_all(gateway.target, unshifted, SCORE_CALLS)
    with grpc.insecure_channel(gateway.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        for txn in unshifted[:FALLBACKS]:
            answer = stub.Score(pb.ScoreRequest(transaction=txn, route="tight"), timeout=10)
            assert answer.decision_source == pb.FALLBACK
    rows = 'sum(riskwire_drift_bin_observations_total{model="fraud-gbdt",feature="score"})'
    t1 = prometheus.wait_for(rows, MIN_SAMPLES)

    # Calls and latency: what the client sent and saw.
    calls = 'sum(riskwire_stage_duration_seconds_count{route="default",stage="total"})'
    prometheus.wait_for(calls, SCORE_CALLS + -(-(MIN_SAMPLES - SCORE_CALLS) // 250))
    assert prometheus.value('sum(riskwire_requests_total{method="Score",route="default"})') == (
        SCORE_CALLS
    )
    p50 = prometheus.value(
        "histogram_quantile(0.5, sum by (le) "
        '(riskwire_stage_duration_seconds_bucket{route="default",stage="total"}))'
    )
    client_p50_s = float(np.median(latencies)) / 1e3
    # The server's time is part of the client's; the quantile is interpolated within a
    # bucket, so allow the upper edge of the client's bucket.
    edges = [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25]
    ceiling = next((e for e in edges if e >= client_p50_s), 1.0)
    assert 0 < p50 <= ceiling, (p50, client_p50_s)

    # Fallbacks: exactly those the test provoked.
    fallbacks = 'sum(riskwire_fallbacks_total{route="tight",reason="TIMEOUT"})'
    assert prometheus.wait_for(fallbacks, FALLBACKS)

    # Drift, computed in PromQL from the counters: unshifted rows at min_samples.
    quiet = {
        r["metric"]["feature"]: float(r["value"][1])
        for r in prometheus.query(_psi_between(None, t1), t1)
        if r["metric"]["model"] == "fraud-gbdt"
    }
    assert len(quiet) > 10 and "score" in quiet
    assert max(quiet.values()) < 0.1, sorted(quiet.items(), key=lambda kv: -kv[1])[:5]

    shifted = transactions_from_table(generate(MIN_SAMPLES, 102, SynthOptions(amount_shift=4.0)))
    _score_all(gateway.target, shifted, 0)
    t2 = prometheus.wait_for(rows, 2 * MIN_SAMPLES)
    loud = {
        r["metric"]["feature"]: float(r["value"][1])
        for r in prometheus.query(_psi_between(t1, t2), t2)
        if r["metric"]["model"] == "fraud-gbdt"
    }
    amount_features = {f: v for f, v in loud.items() if "amount" in f}
    assert amount_features and max(amount_features.values()) > 0.25, loud
    # The gateway's own PSI gauge agrees that the amounts moved (its window holds both
    # streams, so its figure sits between the two PromQL ones).
    gauge = 'max(riskwire_drift_psi{model="fraud-gbdt",feature=~".*amount.*"}) > bool 0.1'
    prometheus.wait_for(gauge, 1.0)
    print(
        f"\nPromQL PSI, unshifted {MIN_SAMPLES} rows: max {max(quiet.values()):.4f}; "
        f"shifted (amount x4): {max(amount_features.values()):.4f} "
        f"({max(amount_features, key=amount_features.__getitem__)})"
    )
