"""The canary controller in a real server: a healthy canary walks its steps to promotion,
one that fails a guard is rolled back to 0, each move in the history with its figures."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from riskwire.admin.v1 import admin_pb2 as apb
from riskwire.admin.v1 import admin_pb2_grpc as apb_grpc
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config
from tests.integration.test_admin import GBDT, MLP, Admin, arm, wait_until

LENIENT = {"p99_ms": 10_000, "error_rate": 0.5, "score_psi": 100, "decline_rate_delta": 1.0}
# The two demo models score differently: their PSI is far above this.
STRICT = {**LENIENT, "score_psi": 0.0001}


def route(name: str, weight: float, steps: list[float], guards: dict[str, float]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        # Each transaction its own entity, so that 1% of them meets the canary.
        "sticky_key": "transaction_id",
        "salt": f"{name}-1",
        "deadline_ms": 2000,
        "arms": [arm(GBDT, 1, 100 - weight), arm(MLP, 1, weight, "canary")],
        "canary": {"steps": steps, "interval_s": 1, "min_requests": 30, "guards": guards},
    }
    if name != "strict":
        spec["match"] = {"channel": ["ECOMMERCE"]}
    return spec


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("canary")
    routes = {
        "routes": [
            route("lenient", 1, [1, 50, 100], LENIENT),
            route("strict", 50, [50, 100], STRICT),  # the default route
        ]
    }
    (directory / "routes.yaml").write_text(yaml.safe_dump(routes, sort_keys=False))
    config = write_config(
        directory,
        model_repository,
        routes_file=str(directory / "routes.yaml"),
        routes_poll_s=0,
        canary={"tick_s": 0.1},
    )
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


def _routes(admin: Admin) -> dict[str, Any]:
    text = admin.GetRoutes(apb.GetRoutesRequest()).routes_yaml
    return {r["name"]: r for r in yaml.safe_load(text)["routes"]}


def _psi(reason: str) -> float:
    found = re.search(r"score PSI ([0-9.e+-]+)", reason)
    assert found, reason
    return float(found.group(1))


def test_a_healthy_canary_is_promoted_and_a_failing_one_rolled_back(
    server: ServerProcess,
) -> None:
    transactions = transactions_from_table(generate(3000, 5, SynthOptions()))
    batches = [transactions[i : i + 250] for i in range(0, len(transactions), 250)]
    stop = threading.Event()
    failures: list[str] = []
    calls = [0]

    def load() -> None:
        # Steady traffic on both routes, bounded in time and count.
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(server.target) as channel:
            scoring = pb_grpc.ScoringStub(channel)
            while not stop.is_set() and time.monotonic() < deadline and calls[0] < 4000:
                batch = batches[calls[0] % len(batches)]
                for name in ("lenient", "strict"):
                    try:
                        scoring.ScoreBatch(
                            pb.ScoreBatchRequest(transactions=batch, route=name), timeout=10
                        )
                    except grpc.RpcError as error:
                        failures.append(f"{name}: {error.code().name}: {error.details()}")
                calls[0] += 1

    client = threading.Thread(target=load, name="canary-load")
    client.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.admin_port}") as channel:
            admin = Admin(apb_grpc.AdminStub(channel), server.admin_token)

            def settled() -> bool:
                routes = _routes(admin)
                lenient, strict = routes["lenient"], routes["strict"]
                return "canary" not in lenient and strict["arms"][1]["weight"] == 0

            wait_until(settled, timeout=40)
            history = admin.GetHistory(apb.GetHistoryRequest()).entries
            routes = _routes(admin)
            (status,) = admin.GetCanaryStatus(apb.GetCanaryStatusRequest(route="strict")).canaries
    finally:
        stop.set()
        client.join(30)
    assert not failures, failures[:5]

    assert routes["lenient"]["arms"] == [arm(MLP, 1, 100)]
    assert routes["strict"]["arms"] == [arm(GBDT, 1, 100), arm(MLP, 1, 0, "canary")]

    by_route: dict[str, list[apb.HistoryEntry]] = {"lenient": [], "strict": []}
    for entry in reversed(history):  # oldest first
        if entry.actor == "canary":
            by_route[entry.reason.split("'")[1]].append(entry)
    lenient = by_route["lenient"]
    assert [e.kind for e in lenient] == ["canary_step", "canary_step", "canary_promote"]
    assert "weight 1 -> 50" in lenient[0].reason and "weight 50 -> 100" in lenient[1].reason
    assert "lenient: fraud-mlp v1 canary 1 -> 50" in lenient[0].diff
    psis = [_psi(e.reason) for e in lenient[:2]]
    assert all(value > 0.0001 for value in psis)
    assert "it becomes the champion" in lenient[2].reason
    [rollback] = by_route["strict"]
    assert rollback.kind == "canary_rollback"
    assert "score PSI" in rollback.reason and "> 0.0001" in rollback.reason
    assert "weight 50 -> 0" in rollback.reason
    assert "strict: fraud-mlp v1 canary 50 -> 0" in rollback.diff
    # The controller's own view: why it acted last, and the window it watches now.
    assert (status.weight, status.last_change.kind) == (0, "canary_rollback")
    assert status.last_verdict in ("rollback", "hold")  # at 0 it holds until raised again
    assert {"requests", "p99_ms", "decline_rate"} <= set(status.champion_window)
    # The evidence travels with the change, as numbers, not only in the reason's text.
    assert rollback.figures["score_psi"] > 0.0001
    assert rollback.figures["canary_requests"] >= 30
    assert all(e.figures["canary_requests"] >= 30 for e in lenient)
    versions = [e.config_version for e in history]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)

    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10
    ).read()
    text = metrics.decode()
    assert 'riskwire_canary_transitions_total{action="step",route="lenient"} 2.0' in text
    assert 'riskwire_canary_transitions_total{action="rollback",route="strict"} 1.0' in text
    assert 'riskwire_canary_weight{model="fraud-mlp",route="strict",version="1"} 0.0' in text
    # The figures, for whoever reads the run (-s).
    for entry in lenient + by_route["strict"]:
        print(f"v{entry.config_version} {entry.kind}: {entry.reason}")
    print(f"load: {calls[0]} rounds of 2 x 250 transactions")
