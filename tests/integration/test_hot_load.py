"""Hot model loads under steady Score load: no call fails while versions come and go.

A real server subprocess scores fraud-gbdt v1 (the routed champion) from client
threads while the Open Inference repository extension loads v2 (a copy of v1), is
refused the routed v1, and unloads and reloads v2.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

NAME = "fraud-gbdt"
ROUTES = f"""
routes:
  - name: default
    salt: hot-load
    deadline_ms: 5000
    arms: [{{model: {NAME}, version: 1, weight: 100, role: champion}}]
"""
CLIENTS = 4
MIN_CALLS = 2_000
MAX_CALLS = 40_000
MAX_SECONDS = 120.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("hot-load")
    models = directory / "models"
    shutil.copytree(model_repository / NAME / "1", models / NAME / "1")
    shutil.copytree(models / NAME / "1", models / NAME / "2")
    card = models / NAME / "2" / "card.yaml"
    text = card.read_text()
    assert text.count("\nversion: 1\n") == 1
    card.write_text(text.replace("\nversion: 1\n", "\nversion: 2\n"))
    routes = directory / "routes.yaml"
    routes.write_text(ROUTES)
    # Only what the routes use is loaded at start: v2 arrives while serving.
    config = write_config(directory, models, routes_file=str(routes))
    running = start_server(config, env={"RISKWIRE_MODELS__LOAD_ALL": "false"})
    yield running
    assert running.terminate() == 0, running.log()


@dataclass
class Load:
    """Score calls from a few client threads until told to stop (bounded)."""

    target: str
    requests: list[pb.ScoreRequest]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    calls: int = 0

    def run(self, offset: int) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            i = offset
            while not self.stop.is_set() and self.calls < MAX_CALLS:
                if time.monotonic() > deadline:
                    break
                request = self.requests[i % len(self.requests)]
                i += CLIENTS
                try:
                    response = stub.Score(request, timeout=10)
                except grpc.RpcError as error:
                    with self.lock:
                        self.calls += 1
                        self.failures.append(f"{error.code()}: {error.details()}")
                    continue
                with self.lock:
                    self.calls += 1
                    key = (pb.DecisionSource.Name(response.decision_source), response.model_version)
                    self.answered[key] += 1

    def wait_for(self, calls: int, timeout: float = 60.0) -> None:
        """Block until ``calls`` calls have been answered: a condition, not a sleep."""
        deadline = time.monotonic() + timeout
        while self.calls < calls:
            assert time.monotonic() < deadline, f"only {self.calls} calls in {timeout}s"
            assert not self.stop.is_set()
            time.sleep(0.01)


def status_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def version(number: int) -> dict[str, oip.ModelRepositoryParameter]:
    return {"version": oip.ModelRepositoryParameter(int64_param=number)}


@pytest.mark.slow
def test_loads_and_unloads_under_load_fail_no_call(server: ServerProcess) -> None:
    txns = transactions_from_table(generate(400, 99, SynthOptions(fraud_rate=0.05)))
    load = Load(server.target, [pb.ScoreRequest(transaction=t) for t in txns])
    threads = [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    seen: dict[str, object] = {}
    try:
        with grpc.insecure_channel(server.target) as channel:
            repo = oip_grpc.GRPCInferenceServiceStub(channel)

            def ready(v: int) -> bool:
                request = oip.ModelReadyRequest(name=NAME, version=str(v))
                return repo.ModelReady(request, timeout=10).ready

            def index() -> dict[str, tuple[str, str]]:
                response = repo.RepositoryIndex(oip.RepositoryIndexRequest(), timeout=10)
                return {m.version: (m.state, m.reason) for m in response.models if m.name == NAME}

            load.wait_for(200)
            seen["index_before"] = index()
            # No version named: the newest on disk, 2.
            repo.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=NAME), timeout=60)
            seen["v2_ready"] = ready(2)
            seen["index_loaded"] = index()
            load.wait_for(load.calls + 200)
            seen["unload_v1"] = status_of(
                lambda: repo.RepositoryModelUnload(
                    oip.RepositoryModelUnloadRequest(model_name=NAME, parameters=version(1)),
                    timeout=60,
                )
            )
            seen["unload_all"] = status_of(
                lambda: repo.RepositoryModelUnload(
                    oip.RepositoryModelUnloadRequest(model_name=NAME), timeout=60
                )
            )
            cycles = []
            for _ in range(3):
                unloaded = status_of(
                    lambda: repo.RepositoryModelUnload(
                        oip.RepositoryModelUnloadRequest(model_name=NAME, parameters=version(2)),
                        timeout=60,
                    )
                )
                gone = not ready(2)
                load.wait_for(load.calls + 100)
                loaded = status_of(
                    lambda: repo.RepositoryModelLoad(
                        oip.RepositoryModelLoadRequest(model_name=NAME, parameters=version(2)),
                        timeout=60,
                    )
                )
                cycles.append((unloaded, gone, loaded, ready(2)))
                load.wait_for(load.calls + 100)
            seen["cycles"] = cycles
            seen["unload_v2"] = status_of(
                lambda: repo.RepositoryModelUnload(
                    oip.RepositoryModelUnloadRequest(model_name=NAME, parameters=version(2)),
                    timeout=60,
                )
            )
            seen["v2_ready_after"] = ready(2)
            seen["v1_ready_after"] = ready(1)
            seen["index_after"] = index()
            load.wait_for(max(MIN_CALLS, load.calls + 200))
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(30)

    assert load.failures == [], load.failures[:5]
    assert load.calls >= MIN_CALLS
    assert set(load.answered) == {("MODEL", "1")}, load.answered
    assert seen["index_before"] == {"1": ("READY", ""), "2": ("UNAVAILABLE", "not loaded")}
    assert seen["v2_ready"] is True
    assert seen["index_loaded"] == {"1": ("READY", ""), "2": ("READY", "")}
    assert seen["unload_v1"] == grpc.StatusCode.FAILED_PRECONDITION
    assert seen["unload_all"] == grpc.StatusCode.FAILED_PRECONDITION
    ok = grpc.StatusCode.OK
    assert seen["cycles"] == [(ok, True, ok, True)] * 3
    assert seen["unload_v2"] == ok
    assert (seen["v2_ready_after"], seen["v1_ready_after"]) == (False, True)
    assert seen["index_after"] == {"1": ("READY", ""), "2": ("UNAVAILABLE", "unloaded")}


def test_unloading_the_routed_version_names_the_route(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        repo = oip_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            repo.RepositoryModelUnload(
                oip.RepositoryModelUnloadRequest(model_name=NAME, parameters=version(1)),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "['default']" in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as missing:
            repo.RepositoryModelLoad(
                oip.RepositoryModelLoadRequest(model_name=NAME, parameters=version(9)), timeout=10
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
