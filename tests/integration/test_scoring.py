"""riskwire.v1.Scoring against a real server subprocess and the real demo models."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from gateway.data.synth import SynthOptions, generate
from gateway.features import dispatch
from gateway.features.columns import columns_from_table, transactions_from_table
from gateway.features.reference import encode
from gateway.features.spec import parse_feature_spec
from gateway.models.card import ModelCard
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

ROUTES = """
routes:
  - name: strict
    match: {channel: [NO_SUCH_CHANNEL]}
    salt: strict
    deadline_ms: 0.001
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
    fallback: {on: []}
  - name: lenient
    match: {channel: [NO_SUCH_CHANNEL]}
    salt: lenient
    deadline_ms: 0.001
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
    fallback: {on: [timeout], decision: REVIEW}
  - name: default
    salt: test
    deadline_ms: 5000
    arms: [{model: fraud-gbdt, version: 1, weight: 100, role: champion}]
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("scoring")
    routes = directory / "routes.yaml"
    routes.write_text(ROUTES)
    config = write_config(
        directory,
        model_repository,
        routes_file=str(routes),
        grpc={"max_batch_transactions": 512, "max_message_bytes": 1024 * 1024},
    )
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.ScoringStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.ScoringStub(channel)


@pytest.fixture(scope="module")
def table() -> dict[str, np.ndarray]:
    # A seed the demo models were not trained on: fresh transactions.
    return generate(600, 1234, SynthOptions(fraud_rate=0.05))


@pytest.fixture(scope="module")
def offline_scores(table: dict[str, np.ndarray], model_repository: Path) -> np.ndarray:
    """What the champion gives these rows offline: reference encoder + ONNX Runtime."""
    card = ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")
    spec = parse_feature_spec(card.feature_spec)
    rows = encode(spec, columns_from_table(table, spec.sources))
    session = ort.InferenceSession(
        str(model_repository / "fraud-gbdt" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    (probabilities,) = session.run([card.outputs.score.name], {card.inputs.name: rows})
    return np.asarray(probabilities)[:, card.outputs.score.column].astype(np.float64)


def test_score_answers_with_the_champion_and_its_thresholds(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray], model_repository: Path
) -> None:
    card = ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")
    txn = transactions_from_table(table)[0]
    response = stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
    assert response.transaction_id == txn.transaction_id
    assert 0.0 <= response.score <= 1.0
    assert (response.model_name, response.model_version) == ("fraud-gbdt", "1")
    assert response.arm == pb.CHAMPION
    assert response.decision_source == pb.MODEL
    assert response.route == "default"
    assert response.config_version == 1
    assert response.server_latency_us > 0
    expected = (
        pb.DECLINE
        if response.score >= card.thresholds.decline_at
        else pb.REVIEW
        if response.score >= card.thresholds.review_at
        else pb.APPROVE
    )
    assert response.decision == expected


def test_served_scores_equal_offline_scores(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray], offline_scores: np.ndarray
) -> None:
    """No training/serving skew: the wire path scores exactly what training would."""
    txns = transactions_from_table(table)
    served = [stub.Score(pb.ScoreRequest(transaction=t), timeout=10).score for t in txns[:60]]
    np.testing.assert_allclose(served, offline_scores[:60], rtol=0, atol=1e-6)


def test_fraud_scores_higher_than_legitimate(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    txns = transactions_from_table(table)
    response = stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns[:512]), timeout=30)
    scores = np.array([r.score for r in response.responses])
    labels = table["label"][:512].astype(bool)
    assert labels.any() and (~labels).any()
    assert scores[labels].mean() > 3 * scores[~labels].mean()


def test_score_batch_keeps_order_and_matches_unary(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray], offline_scores: np.ndarray
) -> None:
    txns = transactions_from_table(table)[:256]
    response = stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns), timeout=30)
    assert [r.transaction_id for r in response.responses] == [t.transaction_id for t in txns]
    np.testing.assert_allclose(
        [r.score for r in response.responses], offline_scores[:256], rtol=0, atol=1e-6
    )


def test_score_stream_answers_every_request_in_order(
    server: ServerProcess, table: dict[str, np.ndarray], offline_scores: np.ndarray
) -> None:
    txns = transactions_from_table(table)[:100]

    async def run() -> list[pb.ScoreResponse]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stream = pb_grpc.ScoringStub(channel).ScoreStream(
                (pb.ScoreRequest(transaction=t) for t in txns), timeout=30
            )
            return [response async for response in stream]

    responses = asyncio.run(run())
    assert [r.transaction_id for r in responses] == [t.transaction_id for t in txns]
    np.testing.assert_allclose(
        [r.score for r in responses], offline_scores[:100], rtol=0, atol=1e-6
    )


def _valid(table: dict[str, np.ndarray]) -> pb.Transaction:
    return transactions_from_table(table)[1]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda t: t.ClearField("transaction_id"), "transaction.transaction_id"),
        (lambda t: setattr(t, "amount_minor", -5), "transaction.amount_minor"),
        (lambda t: setattr(t, "currency", "XYZ"), "transaction.currency"),
        (lambda t: t.numeric_extras.__setitem__("txn_count_1h", math.nan), "numeric_extras"),
        (lambda t: t.numeric_extras.__setitem__("txn_count_1h", math.inf), "numeric_extras"),
        (lambda t: setattr(t, "timestamp_ms", 0), "transaction.timestamp_ms"),
        (lambda t: setattr(t, "customer_tenure_days", -1), "customer_tenure_days"),
    ],
    ids=[
        "no-id",
        "negative-amount",
        "unknown-currency",
        "nan-extra",
        "inf-extra",
        "no-time",
        "negative-tenure",
    ],
)
def test_bad_transactions_are_invalid_argument_naming_the_field(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray], mutate: object, field: str
) -> None:
    txn = _valid(table)
    mutate(txn)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


def test_bad_transaction_in_a_batch_names_its_index(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    txns = transactions_from_table(table)[:5]
    txns[3].amount_minor = -1
    with pytest.raises(grpc.RpcError) as caught:
        stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "transactions[3].amount_minor" in caught.value.details()


def test_oversized_batch_is_refused(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    txn = _valid(table)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ScoreBatch(pb.ScoreBatchRequest(transactions=[txn] * 513), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "transactions" in caught.value.details()
    assert "512" in caught.value.details()


def test_oversized_message_is_resource_exhausted(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    txn = _valid(table)
    txn.categorical_extras["padding"] = "x" * (2 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unknown_route_is_not_found(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(pb.ScoreRequest(transaction=_valid(table), route="nope"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in caught.value.details()


def test_route_budget_spent_is_deadline_exceeded_without_fallback(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(pb.ScoreRequest(transaction=_valid(table), route="strict"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "strict" in caught.value.details()


def test_route_budget_spent_answers_the_fallback_decision(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    response = stub.Score(pb.ScoreRequest(transaction=_valid(table), route="lenient"), timeout=10)
    assert response.decision_source == pb.FALLBACK
    assert response.fallback_reason == "TIMEOUT"
    assert response.decision == pb.REVIEW


def test_a_call_past_its_deadline_ends_deadline_exceeded(
    server: ServerProcess, table: dict[str, np.ndarray]
) -> None:
    """A stream whose gRPC deadline passes ends DEADLINE_EXCEEDED after its answers.

    (A unary call with a microsecond timeout is no test of this: gRPC may carry it to
    the server with a few hundred microseconds left, and a tree model answers in less.)
    """
    txns = transactions_from_table(table)[:2]

    async def run() -> tuple[list[pb.ScoreResponse], grpc.StatusCode | None]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            call = pb_grpc.ScoringStub(channel).ScoreStream(timeout=0.5)
            answers = []
            await call.write(pb.ScoreRequest(transaction=txns[0]))
            answers.append(await call.read())
            await asyncio.sleep(1.0)  # past the deadline
            try:
                await call.write(pb.ScoreRequest(transaction=txns[1]))
                answers.append(await call.read())
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the call already ended: its status says why
            return answers, await call.code()

    answers, code = asyncio.run(run())
    assert [a.transaction_id for a in answers if isinstance(a, pb.ScoreResponse)] == [
        txns[0].transaction_id
    ]
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_monitoring_attributes_do_not_change_the_score(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    txn = _valid(table)
    plain = stub.Score(pb.ScoreRequest(transaction=txn), timeout=10).score
    txn.monitoring_attributes["age_band"] = "65+"
    txn.monitoring_attributes["region"] = "south"
    assert stub.Score(pb.ScoreRequest(transaction=txn), timeout=10).score == plain


def test_score_batch_is_bounded_by_the_call_deadline_not_the_route_budget(
    stub: pb_grpc.ScoringStub, table: dict[str, np.ndarray]
) -> None:
    """Bulk scoring ignores the per-authorization budget that makes Score fall back."""
    txns = transactions_from_table(table)[:64]
    response = stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns, route="lenient"), timeout=30)
    assert all(r.decision_source == pb.MODEL for r in response.responses)


@pytest.fixture(scope="module")
def raw_channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as channel:
        yield channel


def _raw_call(channel: grpc.Channel, method: str, frame: bytes) -> bytes:
    """Calls a Scoring method with `frame` as the request bytes, as they are."""
    call = channel.unary_unary(f"/riskwire.v1.Scoring/{method}")
    response: bytes = call(frame, timeout=10)
    return response


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _frame(table: dict[str, np.ndarray]) -> bytes:
    return pb.ScoreRequest(transaction=_valid(table)).SerializeToString()


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        ("truncated", lambda frame: frame[:-3]),
        ("cut-inside-the-transaction", lambda frame: frame[:7]),
        ("wire-type-7", lambda frame: frame + bytes([0x0F, 0x00])),
        ("length-past-the-end", lambda frame: frame + bytes([0x1A, 0x7F]) + b"ab"),
        ("overlong-varint", lambda frame: frame + bytes([0x10]) + b"\xff" * 11),
        ("field-number-0", lambda frame: bytes([0x02, 0x00]) + frame),
        (
            "invalid-utf8",
            lambda frame: pb.ScoreRequest(route="x").SerializeToString()[:-1] + b"\xff" + frame,
        ),
    ],
)
def test_corrupt_frames_are_invalid_argument_never_a_crash(
    raw_channel: grpc.Channel, table: dict[str, np.ndarray], name: str, corrupt: object
) -> None:
    frame = corrupt(_frame(table))  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as caught:
        _raw_call(raw_channel, "Score", frame)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    if dispatch.resolve_implementation("auto") == "native":
        # The native parser names where it stopped reading.
        assert "byte" in caught.value.details(), caught.value.details()
    # The server is still there, and still right.
    answer = pb.ScoreResponse.FromString(_raw_call(raw_channel, "Score", _frame(table)))
    assert answer.decision_source == pb.MODEL


def test_raw_frames_with_unknown_and_repeated_fields_score_like_the_clean_one(
    raw_channel: grpc.Channel, table: dict[str, np.ndarray]
) -> None:
    """What protobuf accepts, the server accepts and reads the same way."""
    txn = _valid(table)
    clean = pb.ScoreResponse.FromString(
        _raw_call(raw_channel, "Score", pb.ScoreRequest(transaction=txn).SerializeToString())
    )
    body = txn.SerializeToString()
    decoy = pb.Transaction(amount_minor=1, currency="JPY", account_id="decoy").SerializeToString()
    unknown = bytes([0xF8, 0x07, 0x2A, 0xA3, 0x06, 0x08, 0x01, 0xA4, 0x06])  # field 127, group 100
    # The transaction sent in two parts (protobuf merges them, later fields winning),
    # behind unknown fields of several wire types.
    frame = unknown + _delimited(1, decoy) + _delimited(1, body) + bytes([0x10, 0x00])
    again = pb.ScoreResponse.FromString(_raw_call(raw_channel, "Score", frame))
    assert again.score == clean.score
    assert again.transaction_id == clean.transaction_id == txn.transaction_id
