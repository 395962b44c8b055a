"""The data plane routes each transaction by its keys and encodes exactly its rows.

Fake models whose "score" is their first feature (a per-transaction numeric extra), so
every answer shows which transaction the model's encoder read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.dataplane import (
    STICKY_KEYS,
    DataPlane,
    DecisionSource,
    FallbackReason,
    ScoreOptions,
)
from gateway.errors import ErrorKind, GatewayError, Overloaded
from gateway.features import currency, dispatch, hashing
from gateway.features.columns import Transaction
from gateway.features.spec import parse_feature_spec
from gateway.grpc.converters import batch_from_transactions, routing_keys
from gateway.grpc.requests import make_request_parser
from riskwire.v1 import scoring_pb2 as pb
from router.routes import Decision, Thresholds, decide, load_table
from router.store import RouteStore

SPEC = parse_feature_spec(
    {
        "version": "t",
        "features": [
            {"name": "s", "transform": "identity", "source": "numeric_extras.s"},
            {"name": "c", "transform": "one_hot", "source": "channel", "vocabulary": ["ATM"]},
        ],
    }
)
ROUTES = """
routes:
  - name: atm
    match: {channel: [ATM]}
    salt: atm
    arms: [{model: b, version: 1, weight: 100}]
  - name: split
    salt: split
    sticky_key: transaction_id
    arms:
      - {model: a, version: 1, weight: 50}
      - {model: b, version: 1, weight: 50, role: challenger}
"""


CARD = SimpleNamespace(thresholds=Thresholds(review_at=0.5, decline_at=0.9))


class EchoBatcher:
    """Scores each row with its first feature, at once."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def submit(
        self, rows: npt.NDArray[np.float32], deadline: float, times: list[int] | None = None
    ) -> asyncio.Future[npt.NDArray[np.float64]]:
        self.calls.append(rows.shape[0])
        if times is not None:
            now = time.perf_counter_ns()
            times += (now, now)
        future: asyncio.Future[npt.NDArray[np.float64]] = asyncio.get_running_loop().create_future()
        future.set_result(rows[:, 0].astype(np.float64))
        return future


@dataclass
class FakeModel:
    name: str
    encoder: dispatch.Encoder
    batcher: EchoBatcher
    version: int = 1

    @property
    def card(self) -> Any:
        return CARD

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


class FakeRepository:
    def __init__(self, mode: dispatch.EncoderMode) -> None:
        self.models = {
            (name, 1): FakeModel(name, dispatch.make_encoder(SPEC, mode), EchoBatcher())
            for name in ("a", "b")
        }

    def get(self, name: str, version: int | None) -> FakeModel:
        return self.models[(name, version or 1)]


NATIVE = pytest.param(
    "native", marks=pytest.mark.skipif(dispatch.native_error() is not None, reason="not built")
)


def transactions(n: int) -> list[Transaction]:
    return [
        Transaction(
            transaction_id=f"tx{i}",
            account_id="same-account",
            currency="USD",
            amount_minor=100,
            timestamp_ms=1,
            channel=pb.ATM if i % 5 == 0 else pb.ECOMMERCE,
            numeric_extras={"s": i / 64},
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "mode",
    [
        "python",
        pytest.param(
            "native",
            marks=pytest.mark.skipif(dispatch.native_error() is not None, reason="not built"),
        ),
    ],
)
def test_each_row_is_scored_by_its_arm_from_its_own_transaction(
    mode: dispatch.EncoderMode,
) -> None:
    repository = FakeRepository(mode)
    routes = RouteStore(load_table(ROUTES))
    plane = DataPlane(repository, routes, hashing.bucket)  # type: ignore[arg-type]
    txns = transactions(40)
    batch = batch_from_transactions(txns)
    results = asyncio.run(plane.score(batch, ScoreOptions()))
    assert [r.transaction_id for r in results] == [t.transaction_id for t in txns]
    for txn, result in zip(txns, results, strict=True):
        keys = routing_keys(txn)
        expected = decide(routes.current.table, keys, hashing.bucket)
        assert (result.route, result.model_name) == (expected.route.name, expected.arm.model)
        assert result.score == np.float32(txn.numeric_extras["s"])
        assert result.source is DecisionSource.MODEL
    # The sticky key is the transaction id, so the 50/50 split uses both models; each
    # model got one encoder call with only its own rows.
    calls = {name: model.batcher.calls for (name, _), model in repository.models.items()}
    assert calls["a"] and calls["b"] and sum(calls["a"] + calls["b"]) == 40
    assert {r.route for r in results} == {"atm", "split"}


def test_routing_keys_are_plain_strings() -> None:
    txn = Transaction(
        transaction_id="t", account_id="acc", card_id="c", device_id="d", channel=pb.WALLET
    )
    assert routing_keys(txn) == {
        "channel": "WALLET",
        "account_id": "acc",
        "card_id": "c",
        "merchant_id": "",
        "device_id": "d",
        "transaction_id": "t",
        "country": "",
        "merchant_category_code": "",
    }
    assert set(routing_keys(txn)) == {"channel", "country", "merchant_category_code", *STICKY_KEYS}
    assert routing_keys(Transaction())["channel"] == ""


def test_batch_from_transactions_keeps_the_transactions() -> None:
    request = pb.ScoreBatchRequest(transactions=transactions(3))
    batch = batch_from_transactions(request.transactions)
    assert len(batch) == 3
    assert list(batch.transaction_ids) == ["tx0", "tx1", "tx2"]
    assert list(batch.transactions) == list(request.transactions)
    assert [k["channel"] for k in batch.routing_keys] == ["ATM", "ECOMMERCE", "ECOMMERCE"]


class FullBatcher(EchoBatcher):
    """A model whose queue is always full."""

    def submit(
        self, rows: npt.NDArray[np.float32], deadline: float, times: list[int] | None = None
    ) -> asyncio.Future[npt.NDArray[np.float64]]:
        raise Overloaded("queue is full")


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [("{on: [overload], decision: DECLINE}", "fallback"), ("{on: [timeout]}", "error")],
)
def test_a_full_queue_sheds_by_route_policy(fallback: str, expected: str) -> None:
    repository = FakeRepository("python")
    repository.models[("a", 1)].batcher = FullBatcher()
    table = load_table(
        "routes:\n  - {name: r, salt: s, arms: [{model: a, version: 1, weight: 100}],"
        f" fallback: {fallback}}}\n"
    )
    plane = DataPlane(repository, RouteStore(table), hashing.bucket)
    batch = batch_from_transactions(transactions(1))

    if expected == "error":
        with pytest.raises(GatewayError) as caught:
            asyncio.run(plane.score(batch, ScoreOptions()))
        assert caught.value.kind is ErrorKind.RESOURCE_EXHAUSTED
        return
    (result,) = asyncio.run(plane.score(batch, ScoreOptions()))
    assert result.source is DecisionSource.FALLBACK
    assert result.fallback_reason is FallbackReason.OVERLOAD
    assert result.decision is Decision.DECLINE


MATCH_ROUTES = """
routes:
  - name: big
    match: {amount_usd: {min: 500}}
    salt: big
    arms: [{model: b, version: 1, weight: 100}]
  - name: gb-retail
    match: {country: [GB], mcc: ["5411", "5900-5999"]}
    salt: gb
    arms: [{model: b, version: 1, weight: 100}]
  - name: default
    salt: default
    arms: [{model: a, version: 1, weight: 100}]
"""


def _expected_route(txn: Transaction) -> str:
    if currency.to_usd(txn.amount_minor, txn.currency) >= 500:
        return "big"
    code = txn.merchant_category_code
    if txn.country == "GB" and (code == "5411" or "5900" <= code <= "5999"):
        return "gb-retail"
    return "default"


@pytest.mark.parametrize("wire", ["python", NATIVE])
def test_routes_match_on_country_mcc_and_usd_amount(wire: dispatch.EncoderMode) -> None:
    """Either request parser gives the router what it matches on, amounts in USD."""
    rows = [
        ("USD", 49_999, "US", "5411"),  # 499.99 USD
        ("USD", 50_000, "US", "5411"),  # 500.00 USD: the bound is inclusive
        ("JPY", 50_000, "GB", "7995"),  # 50,000 yen is far below 500 USD
        ("GBP", 10_000, "GB", "5411"),
        ("GBP", 10_000, "GB", "5950"),
        ("GBP", 10_000, "GB", "6000"),
        ("GBP", 10_000, "FR", "5411"),
        ("BHD", 200_000, "GB", "0742"),  # three decimals: 200 dinars, over 500 USD
    ]
    txns = [
        Transaction(
            transaction_id=f"t{i}",
            account_id=f"acc{i}",
            currency=code,
            amount_minor=minor,
            country=country,
            merchant_category_code=mcc,
            timestamp_ms=1,
            numeric_extras={"s": 0.5},
        )
        for i, (code, minor, country, mcc) in enumerate(rows)
    ]
    frame = pb.ScoreBatchRequest(transactions=txns).SerializeToString()
    request = make_request_parser(wire, 64).score_batch_request(frame)
    assert list(request.batch.amounts_usd()) == [
        currency.to_usd(t.amount_minor, t.currency) for t in txns
    ]
    plane = DataPlane(FakeRepository(wire), RouteStore(load_table(MATCH_ROUTES)), hashing.bucket)  # type: ignore[arg-type]
    results = asyncio.run(plane.score(request.batch, request.options))
    assert [r.route for r in results] == [_expected_route(t) for t in txns]
    assert [r.route for r in results] == [
        "default",
        "big",
        "default",
        "gb-retail",
        "gb-retail",
        "default",
        "default",
        "big",
    ]
