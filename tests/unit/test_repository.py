"""Hot loads and unloads: warm before visible, refused while routed, drained before closed.

A real repository (a temporary copy of the demo models with fraud-gbdt copied as
version 2) behind a real data plane and route store; where a call must stay in flight,
the model's batcher is swapped for one that answers only when the test says so.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.dataplane import DataPlane, DecisionSource, ScoreOptions, Tensor
from gateway.errors import ErrorKind, GatewayError
from gateway.features import hashing
from gateway.grpc.converters import batch_from_transactions
from gateway.grpc.inference import version_parameter, versions_to_load
from gateway.models import repository as repository_module
from gateway.models.repository import ModelRepository, ModelState
from gateway.settings import BatchingSettings
from inference import grpc_service_pb2 as oip
from riskwire.v1 import scoring_pb2 as pb
from router.routes import RouteTable, RouteTableError, load_table
from router.store import RouteStore

NAME = "fraud-gbdt"


def routes_to(version: int, shadow: int | None = None) -> RouteTable:
    shadows = f"\n    shadows: [{{model: {NAME}, version: {shadow}}}]" if shadow else ""
    return load_table(
        f"""
routes:
  - name: cards
    salt: s
    arms: [{{model: {NAME}, version: {version}, weight: 100}}]{shadows}
"""
    )


@pytest.fixture
def models(tmp_path: Path, model_repository: Path) -> Path:
    """fraud-gbdt versions 1 and 2 (a copy of 1 with its card's version changed)."""
    root = tmp_path / "models"
    shutil.copytree(model_repository / NAME / "1", root / NAME / "1")
    add_version(root, 2)
    return root


def add_version(root: Path, version: int, card_version: int | None = None) -> Path:
    target = root / NAME / str(version)
    shutil.copytree(root / NAME / "1", target)
    card = target / "card.yaml"
    text = card.read_text()
    assert text.count("\nversion: 1\n") == 1
    card.write_text(text.replace("\nversion: 1\n", f"\nversion: {card_version or version}\n"))
    return target


def make_repository(root: Path) -> ModelRepository:
    return ModelRepository(root, BatchingSettings(warmup_batches=1), "python")


def make_plane(repository: ModelRepository, table: RouteTable) -> DataPlane:
    def check(candidate: RouteTable) -> list[str]:
        # What Server._route_problems asks of the repository.
        def available(name: str, version: int) -> str | None:
            try:
                repository.get(name, version)
            except GatewayError:
                return "not loaded"
            return None

        return candidate.problems_against(available)

    return DataPlane(repository, RouteStore(table, check), hashing.bucket)


def one_transaction(i: int = 0) -> Any:
    txn = pb.Transaction(
        transaction_id=f"tx{i}",
        account_id=f"acc{i}",
        currency="USD",
        amount_minor=12_345,
        timestamp_ms=1_700_000_000_000,
        channel=pb.ECOMMERCE,
        country="US",
    )
    return batch_from_transactions([txn], single=True)


class GateBatcher:
    """Answers every submitted row with 0.25, only once ``open`` is called."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[npt.NDArray[np.float64]]] = []
        self.closed = False
        self.max_batch = 16
        self.queued_rows = 0

    def submit(
        self,
        rows: npt.NDArray[np.float32],
        deadline: float = float("inf"),
        times: list[int] | None = None,
    ) -> asyncio.Future[npt.NDArray[np.float64]]:
        future: asyncio.Future[npt.NDArray[np.float64]] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def open(self) -> None:
        for future in self.pending:
            future.set_result(np.full(1, 0.25))

    async def close(self) -> None:
        self.closed = True


async def gate_batcher(model: Any) -> GateBatcher:
    """Swap the model's (stopped) batcher for a GateBatcher."""
    await model.batcher.close()
    gate = GateBatcher()
    model.batcher = gate
    return gate


async def settle(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def test_unload_waits_for_the_call_in_flight_which_succeeds(models: Path) -> None:
    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        v2 = await repository.load(NAME, 2)
        gate = await gate_batcher(v2)
        plane = make_plane(repository, routes_to(2))

        call = asyncio.create_task(plane.score(one_transaction(), ScoreOptions()))
        await settle()
        assert gate.pending and plane.in_flight(v2) == 1
        # The table swaps mid-call, then v2 (no longer routed) is unloaded.
        plane.routes.replace(routes_to(1))
        unload = asyncio.create_task(plane.unload_model(NAME, 2))
        await settle()
        assert not unload.done() and not gate.closed
        assert repository.status(NAME, 2).state is ModelState.UNLOADING
        with pytest.raises(GatewayError) as lookup:
            repository.get(NAME, 2)
        assert lookup.value.kind is ErrorKind.NOT_FOUND
        # A table naming the unloading version is refused: the old one stays in force.
        with pytest.raises(RouteTableError, match="not loaded"):
            plane.routes.replace(routes_to(2))
        assert plane.routes.current.config_version == 2
        with pytest.raises(GatewayError) as reload:
            await plane.load_model(NAME, 2)
        assert reload.value.kind is ErrorKind.UNAVAILABLE

        gate.open()
        (result,) = await call
        await unload
        assert (result.model_version, result.source, result.score) == (
            2,
            DecisionSource.MODEL,
            0.25,
        )
        assert result.config_version == 1  # the table the call started under
        assert gate.closed and plane.in_flight(v2) == 0
        status = repository.status(NAME, 2)
        assert (status.state, status.reason) == (ModelState.UNAVAILABLE, "unloaded")
        await repository.close()

    asyncio.run(run())


def test_unload_stops_waiting_after_the_drain_timeout(models: Path) -> None:
    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        v2 = await repository.load(NAME, 2)
        gate = await gate_batcher(v2)
        plane = make_plane(repository, routes_to(2))
        call = asyncio.create_task(plane.score(one_transaction(), ScoreOptions()))
        await settle()
        plane.routes.replace(routes_to(1))
        await plane.unload_model(NAME, 2, drain_timeout_s=0.05)
        assert gate.closed and not call.done()
        gate.open()
        (result,) = await call
        assert result.model_version == 2
        await repository.close()

    asyncio.run(run())


def test_a_cancelled_unload_still_finishes(models: Path) -> None:
    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        v2 = await repository.load(NAME, 2)
        gate = await gate_batcher(v2)
        plane = make_plane(repository, routes_to(2))
        call = asyncio.create_task(plane.score(one_transaction(), ScoreOptions()))
        await settle()
        plane.routes.replace(routes_to(1))
        unload = asyncio.create_task(plane.unload_model(NAME, 2))
        await settle()
        unload.cancel()  # the admin client went away
        with pytest.raises(asyncio.CancelledError):
            await unload
        gate.open()
        await call
        await settle()
        assert gate.closed
        assert repository.status(NAME, 2).state is ModelState.UNAVAILABLE
        await repository.close()

    asyncio.run(run())


def test_unload_waits_for_raw_tensor_inference(models: Path) -> None:
    release = threading.Event()

    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        v2 = await repository.load(NAME, 2)
        plane = make_plane(repository, routes_to(1))
        real_run = v2.runtime.run

        def slow_run(*args: Any) -> Any:
            release.wait(10)
            return real_run(*args)

        v2.runtime.run = slow_run  # type: ignore[method-assign, assignment]
        width = v2.spec.width
        tensor = Tensor("features", "FP32", np.zeros((1, width), dtype=np.float32))
        infer = asyncio.create_task(plane.infer_tensors(NAME, "2", [tensor], [], None))
        await settle()
        assert plane.in_flight(v2) == 1
        unload = asyncio.create_task(plane.unload_model(NAME, 2))
        await settle()
        assert not unload.done()
        release.set()
        model, outputs = await infer
        await unload
        assert model.version == 2 and outputs
        await repository.close()

    asyncio.run(run())


@pytest.mark.parametrize("shadow", [False, True])
def test_unloading_a_routed_version_is_refused(models: Path, shadow: bool) -> None:
    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        await repository.load(NAME, 2)
        plane = make_plane(repository, routes_to(1, shadow=2 if shadow else None))
        routed = 2 if shadow else 1
        with pytest.raises(GatewayError) as refused:
            await plane.unload_model(NAME, routed)
        assert refused.value.kind is ErrorKind.FAILED_PRECONDITION
        assert "['cards']" in refused.value.message
        with pytest.raises(GatewayError) as every:
            await plane.unload_model(NAME)
        assert every.value.kind is ErrorKind.FAILED_PRECONDITION
        assert repository.get(NAME, routed).version == routed
        if not shadow:
            await plane.unload_model(NAME, 2)  # not routed
            assert [m.version for m in repository.loaded()] == [1]
        await repository.close()

    asyncio.run(run())


def test_unload_puts_the_model_back_when_a_table_took_it_meanwhile(models: Path) -> None:
    class RacingStore:
        """A table naming v2 lands between unload's first check and its second."""

        def __init__(self, before: RouteStore, after: RouteStore) -> None:
            self.reads = 0
            self.stores = (before, after)

        @property
        def current(self) -> Any:
            self.reads += 1
            return self.stores[0 if self.reads <= 1 else 1].current

    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        v2 = await repository.load(NAME, 2)
        plane = make_plane(repository, routes_to(1))
        plane.routes = RacingStore(plane.routes, RouteStore(routes_to(2)))  # type: ignore[assignment]
        with pytest.raises(GatewayError) as refused:
            await plane.unload_model(NAME, 2)
        assert refused.value.kind is ErrorKind.FAILED_PRECONDITION
        assert repository.get(NAME, 2) is v2
        await repository.close()

    asyncio.run(run())


class GatedWarmup:
    """Patches OrtModel so that warm-up blocks until ``release`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        gate = self
        real = repository_module.OrtModel  # type: ignore[attr-defined]

        class Gated(real):  # type: ignore[valid-type, misc]
            def score(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
                gate.calls += 1
                gate.entered.set()
                gate.release.wait(10)
                return super().score(rows)  # type: ignore[no-any-return]

        monkeypatch.setattr(repository_module, "OrtModel", Gated)


def test_a_loaded_version_is_visible_only_once_warm(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        repository = make_repository(models)
        await repository.load(NAME, 1)
        plane = make_plane(repository, routes_to(1))
        warmup = GatedWarmup(monkeypatch)
        load = asyncio.create_task(plane.load_model(NAME, 2))
        assert await asyncio.to_thread(warmup.entered.wait, 10)
        assert repository.status(NAME, 2).state is ModelState.LOADING
        with pytest.raises(GatewayError):
            repository.get(NAME, 2)
        with pytest.raises(RouteTableError, match="not loaded"):
            plane.routes.replace(routes_to(2))
        warmup.release.set()
        model = await load
        assert warmup.calls > 0
        assert repository.get(NAME, 2) is model
        assert repository.status(NAME, 2).state is ModelState.READY
        plane.routes.replace(routes_to(2))
        (result,) = await plane.score(one_transaction(), ScoreOptions())
        assert (result.model_version, result.source) == (2, DecisionSource.MODEL)
        await repository.close()

    asyncio.run(run())


def test_loading_a_loaded_version_returns_it(models: Path) -> None:
    async def run() -> None:
        repository = make_repository(models)
        plane = make_plane_after_load(repository, await repository.load(NAME, 1))
        newest = await plane.load_model(NAME)
        assert newest.version == 2
        assert await plane.load_model(NAME, 2) is newest
        assert await plane.load_model(NAME) is newest
        assert [m.version for m in repository.loaded()] == [1, 2]
        await repository.close()

    asyncio.run(run())


def make_plane_after_load(repository: ModelRepository, model: Any) -> DataPlane:
    return make_plane(repository, routes_to(model.version))


def test_unknown_models_and_versions_are_not_found(models: Path) -> None:
    async def run() -> None:
        repository = make_repository(models)
        plane = make_plane_after_load(repository, await repository.load(NAME, 1))
        for unload in (plane.unload_model("no-such-model"), plane.unload_model(NAME, 2)):
            with pytest.raises(GatewayError) as error:
                await unload
            assert error.value.kind is ErrorKind.NOT_FOUND
        for load in (plane.load_model("no-such-model"), plane.load_model(NAME, 9)):
            with pytest.raises(GatewayError) as error:
                await load
            assert error.value.kind is ErrorKind.NOT_FOUND
        with pytest.raises(GatewayError) as bad_name:
            await plane.load_model("../etc")
        assert bad_name.value.kind is ErrorKind.INVALID_ARGUMENT
        await repository.close()

    asyncio.run(run())


@pytest.mark.parametrize("damage", ["card", "graph", "card_version"])
def test_a_broken_version_fails_to_load_with_its_reason(models: Path, damage: str) -> None:
    if damage == "card_version":
        add_version(models, 3, card_version=7)
    else:
        target = add_version(models, 3)
        if damage == "card":
            (target / "card.yaml").write_text("name: fraud-gbdt\nversion: 3\n")
        else:
            (target / "model.onnx").write_bytes(b"not an onnx graph")

    async def run() -> None:
        repository = make_repository(models)
        plane = make_plane_after_load(repository, await repository.load(NAME, 1))
        with pytest.raises(GatewayError) as error:
            await plane.load_model(NAME, 3)
        assert error.value.kind is ErrorKind.FAILED_PRECONDITION
        assert "3" in error.value.message
        status = repository.status(NAME, 3)
        assert status.state is ModelState.UNAVAILABLE
        assert status.reason.startswith("load failed: ")
        assert [s.version for s in repository.statuses()] == [1, 2, 3]
        await repository.close()

    asyncio.run(run())


def parameters(**values: Any) -> dict[str, oip.ModelRepositoryParameter]:
    out = {}
    for key, value in values.items():
        if isinstance(value, int):
            out[key] = oip.ModelRepositoryParameter(int64_param=value)
        else:
            out[key] = oip.ModelRepositoryParameter(string_param=value)
    return out


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, [None]),
        ({"version": 2}, [2]),
        ({"version": "2"}, [2]),
        ({"config": '{"version_policy": {"specific": {"versions": [3, 1]}}}'}, [1, 3]),
        ({"config": '{"version_policy": {"latest": {"num_versions": 2}}}'}, [2, 3]),
        ({"config": '{"version_policy": {"all": {}}}'}, [1, 2, 3]),
        ({"config": '{"max_batch_size": 8}'}, [None]),
    ],
)
def test_repository_load_parameters_pick_versions(
    given: dict[str, Any], expected: list[int | None]
) -> None:
    assert versions_to_load(parameters(**given), [1, 2, 3]) == expected


@pytest.mark.parametrize(
    "given",
    [
        {"version": 0},
        {"version": "two"},
        {"config": "{"},
        {"config": '{"version_policy": {"specific": {"versions": []}}}'},
    ],
)
def test_bad_repository_parameters_are_invalid(given: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as error:
        versions_to_load(parameters(**given), [1])
    assert error.value.kind is ErrorKind.INVALID_ARGUMENT


def test_unload_version_parameter() -> None:
    assert version_parameter({}) is None
    assert version_parameter(parameters(version=4)) == 4
    assert version_parameter({"unload_dependents": oip.ModelRepositoryParameter()}) is None


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in set(threading.enumerate()) - before if t.name.startswith("model-")]
    assert not leaked, leaked
