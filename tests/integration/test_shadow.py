"""Shadow arms on a real server: every call is compared, after its answer, on /metrics."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import columns_from_table, transactions_from_table
from gateway.features.reference import encode
from gateway.features.spec import parse_feature_spec
from gateway.models.card import ModelCard
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

ROUTES = """
routes:
  - name: default
    salt: shadow-test
    deadline_ms: 5000
    arms: [{model: fraud-gbdt, version: 1, weight: 100, role: champion}]
    shadows: [{model: fraud-mlp, version: 1, percent: 100}]
"""
UNARY = 300
BATCH = 200
LABELS = (("model", "fraud-mlp"), ("route", "default"), ("version", "1"))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_repository: Path
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("shadow")
    routes = directory / "routes.yaml"
    routes.write_text(ROUTES)
    running = start_server(write_config(directory, model_repository, routes_file=str(routes)))
    yield running
    assert running.terminate() == 0, running.log()


def _samples(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _wait_compared(port: int, expected: int, timeout: float = 30.0) -> Samples:
    """Poll /metrics until the shadow has compared ``expected`` calls (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = _samples(port)
        done = samples.get(("riskwire_shadow_compared_total", LABELS), 0.0)
        if done >= expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)  # a poll interval, not a wait for something to have happened


def _offline(model_repository: Path, model: str, table: dict[str, np.ndarray]) -> np.ndarray:
    card = ModelCard.load(model_repository / model / "1" / "card.yaml")
    spec = parse_feature_spec(card.feature_spec)
    rows = encode(spec, columns_from_table(table, spec.sources))
    session = ort.InferenceSession(
        str(model_repository / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (out,) = session.run([card.outputs.score.name], {card.inputs.name: rows})
    return np.asarray(out)[:, card.outputs.score.column].astype(np.float64)


def _decisions(scores: np.ndarray, card: ModelCard) -> np.ndarray:
    t = card.thresholds
    return np.where(scores >= t.decline_at, 2, np.where(scores >= t.review_at, 1, 0))


def test_every_answered_call_is_compared_with_its_shadow(
    server: ServerProcess, model_repository: Path
) -> None:
    table = generate(UNARY + BATCH, 4321, SynthOptions(fraud_rate=0.05))
    txns = transactions_from_table(table)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        for txn in txns[:UNARY]:
            response = stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
            # The answer is the champion's alone; the shadow never shows in it.
            assert (response.model_name, response.decision_source) == ("fraud-gbdt", pb.MODEL)
        batch = stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns[UNARY:]), timeout=30)
        assert {r.model_name for r in batch.responses} == {"fraud-gbdt"}

    samples = _wait_compared(server.metrics_port, UNARY + BATCH)
    compared = samples[("riskwire_shadow_compared_total", LABELS)]
    agreements = samples[("riskwire_shadow_agreements_total", LABELS)]
    assert compared == UNARY + BATCH, server.log()
    assert samples[("riskwire_shadow_shed_total", LABELS)] == 0
    assert samples[("riskwire_shadow_errors_total", LABELS)] == 0
    assert samples[("riskwire_shadow_skipped_total", LABELS)] == 0
    assert 0 < agreements / compared < 1
    flips = sum(
        value
        for (name, labels), value in samples.items()
        if name == "riskwire_shadow_flips_total" and set(LABELS) <= set(labels)
    )
    assert flips == compared - agreements
    assert samples[("riskwire_shadow_score_diff_count", LABELS)] == compared

    # Against offline scores: each model decides at its own card's thresholds (the
    # route sets none), as it would if it were the primary arm.
    gbdt = _offline(model_repository, "fraud-gbdt", table)
    mlp = _offline(model_repository, "fraud-mlp", table)
    gbdt_card = ModelCard.load(model_repository / "fraud-gbdt" / "1" / "card.yaml")
    mlp_card = ModelCard.load(model_repository / "fraud-mlp" / "1" / "card.yaml")
    expected = int((_decisions(gbdt, gbdt_card) == _decisions(mlp, mlp_card)).sum())
    assert abs(agreements - expected) <= 2  # a score within 1e-6 of a threshold may differ
    mean = samples[("riskwire_shadow_score_diff_mean", LABELS)]
    assert mean == pytest.approx(float((mlp - gbdt).mean()), abs=1e-5)
    abs_sum = samples[("riskwire_shadow_score_diff_sum", LABELS)]
    assert abs_sum == pytest.approx(float(np.abs(mlp - gbdt).sum()), abs=1e-3)
