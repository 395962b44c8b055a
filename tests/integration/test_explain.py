"""Reason codes over the wire: a real server, the real demo models, routes at their
normal deadline (8 ms), explain asked for by the request or by the route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from gateway.data.synth import SynthOptions, generate
from gateway.explain import Explainer
from gateway.features.columns import columns_from_transactions, transactions_from_table
from gateway.features.reference import encode
from gateway.features.spec import feature_output_names, parse_feature_spec
from gateway.models.card import ModelCard
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from router.routes import DEFAULT_EXPLAIN_TOP_K
from tests.integration.serverproc import ServerProcess, start_server, write_config

# No deadline_ms: every route keeps the default budget of an authorization.
ROUTES = """
routes:
  - name: atm
    match: {channel: [ATM]}
    salt: atm
    explain: true
    explain_top_k: 3
    arms: [{model: fraud-mlp, version: 1, weight: 100}]
  - name: wallet
    match: {channel: [WALLET]}
    salt: wallet
    arms: [{model: fraud-mlp, version: 1, weight: 100}]
  - name: default
    salt: test
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
"""
CHANNEL_OF = {"fraud-gbdt": pb.ECOMMERCE, "fraud-mlp": pb.WALLET}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("explain")
    routes = directory / "routes.yaml"
    routes.write_text(ROUTES)
    running = start_server(write_config(directory, model_repository, routes_file=str(routes)))
    yield running
    assert running.terminate() == 0, running.log()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.ScoringStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.ScoringStub(channel)


def transactions(channel: int, n: int) -> list[pb.Transaction]:
    """Fresh transactions (a seed the models never saw), one in five fraudulent."""
    txns = transactions_from_table(generate(max(n, 100), 2468, SynthOptions(fraud_rate=0.2)))[:n]
    for txn in txns:
        txn.channel = channel
    return txns


class Offline:
    """One model outside the server: the reference encoder, ONNX Runtime, the card."""

    def __init__(self, root: Path, name: str) -> None:
        self.card = ModelCard.load(root / name / "1" / "card.yaml")
        self.spec = parse_feature_spec(self.card.feature_spec)
        self.session = ort.InferenceSession(
            str(root / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        self.reference = Explainer.from_card(self.card).reference
        self.columns: dict[str, slice] = {}
        start = 0
        for feature in self.spec.features:
            stop = start + len(feature_output_names(feature))
            self.columns[feature.name] = slice(start, stop)
            start = stop

    def rows(self, txns: list[pb.Transaction]) -> Any:
        return encode(self.spec, columns_from_transactions(txns, self.spec.sources))

    def score(self, rows: Any) -> Any:
        (out,) = self.session.run([self.card.outputs.score.name], {self.card.inputs.name: rows})
        return np.asarray(out)[:, self.card.outputs.score.column].astype(np.float64)

    def occlusion(self, row: Any, feature: str) -> float:
        """f(x) - f(x with ``feature`` at the reference), alone in its own call."""
        moved = row.copy()
        moved[self.columns[feature]] = self.reference[self.columns[feature]]
        f_x, f_moved = self.score(np.stack([row, moved]))
        return float(f_x - f_moved)


def check_reasons(response: pb.ScoreResponse, offline: Offline, row: Any, top_k: int) -> None:
    """Codes from the card, at most top_k, signed, positive first, each one consistent
    with a one-feature occlusion offline."""
    codes = offline.card.reason_codes
    reasons = list(response.reason_codes)
    assert len(reasons) <= top_k
    assert len({r.feature for r in reasons}) == len(reasons)
    signs = [r.contribution > 0 for r in reasons]
    assert signs == sorted(signs, reverse=True)
    for r in reasons:
        assert r.feature in codes, r
        assert (r.code, r.description) == (codes[r.feature].code, codes[r.feature].description)
        assert r.contribution != 0.0
        assert r.contribution == pytest.approx(offline.occlusion(row, r.feature), abs=1e-5)


@pytest.mark.parametrize("name", ["fraud-gbdt", "fraud-mlp"])
def test_score_with_explain_returns_the_cards_reason_codes(
    name: str, stub: pb_grpc.ScoringStub, model_repository: Path
) -> None:
    offline = Offline(model_repository, name)
    txns = transactions(CHANNEL_OF[name], 40)
    rows = offline.rows(txns)
    responses = [stub.Score(pb.ScoreRequest(transaction=t, explain=True), timeout=10) for t in txns]

    assert all(r.model_name == name and r.decision_source == pb.MODEL for r in responses)
    assert sum(len(r.reason_codes) for r in responses) > len(responses)
    for response, row in zip(responses, rows, strict=True):
        check_reasons(response, offline, row, DEFAULT_EXPLAIN_TOP_K)
    # A flagged transaction leads with what raised its score.
    flagged = [r for r in responses if r.decision in (pb.REVIEW, pb.DECLINE)]
    assert flagged
    assert all(r.reason_codes and r.reason_codes[0].contribution > 0 for r in flagged)


def test_without_explain_there_are_no_reason_codes(stub: pb_grpc.ScoringStub) -> None:
    for txn in transactions(pb.ECOMMERCE, 10):
        response = stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
        assert response.decision_source == pb.MODEL
        assert len(response.reason_codes) == 0


def test_a_route_with_explain_gives_reasons_unasked(
    stub: pb_grpc.ScoringStub, model_repository: Path
) -> None:
    offline = Offline(model_repository, "fraud-mlp")
    txns = transactions(pb.ATM, 30)
    responses = [stub.Score(pb.ScoreRequest(transaction=t), timeout=10) for t in txns]

    assert all(r.route == "atm" and r.decision_source == pb.MODEL for r in responses)
    assert any(len(r.reason_codes) == 3 for r in responses)  # the route's top-k
    for response, row in zip(responses, offline.rows(txns), strict=True):
        check_reasons(response, offline, row, 3)


@pytest.mark.parametrize("name", ["fraud-gbdt", "fraud-mlp"])
def test_score_batch_with_explain_agrees_with_unary_calls(
    name: str, stub: pb_grpc.ScoringStub, model_repository: Path
) -> None:
    offline = Offline(model_repository, name)
    txns = transactions(CHANNEL_OF[name], 64)
    # 64 rows take several hundred occlusion rows: the model's worker thread.
    batch = stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns, explain=True), timeout=30)
    unary = [
        stub.Score(pb.ScoreRequest(transaction=t, explain=True), timeout=10) for t in txns[:16]
    ]

    assert [r.transaction_id for r in batch.responses] == [t.transaction_id for t in txns]
    assert all(r.decision_source == pb.MODEL for r in batch.responses)
    for response, row in zip(batch.responses[:16], offline.rows(txns[:16]), strict=True):
        check_reasons(response, offline, row, DEFAULT_EXPLAIN_TOP_K)
    for one, in_batch in zip(unary, batch.responses, strict=False):
        assert [(r.code, r.feature) for r in one.reason_codes] == [
            (r.code, r.feature) for r in in_batch.reason_codes
        ]
        np.testing.assert_allclose(
            [r.contribution for r in one.reason_codes],
            [r.contribution for r in in_batch.reason_codes],
            rtol=0,
            atol=1e-6,
        )
    plain = stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns), timeout=30)
    assert all(len(r.reason_codes) == 0 for r in plain.responses)
