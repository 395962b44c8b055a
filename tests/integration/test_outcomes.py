"""Delayed labels and fairness on a real server: score, report outcomes, read the figures.

Transactions come from the synthetic generator with their labels and monitoring
attributes; the test scores them, later reports each label with ReportOutcome, and
reads rolling performance and fairness back through the Admin API. The store is a
SQLite file under the server's state_dir: a restarted server still joins labels to
predictions made before the restart.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from riskwire.admin.v1 import admin_pb2, admin_pb2_grpc
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

N = 600


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    directory = tmp_path_factory.mktemp("outcomes")
    return write_config(
        directory,
        model_repository,
        outcomes={"flush_interval_ms": 20},
        fairness={"min_group_size": 20},
    )


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[ServerProcess]:
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


@pytest.fixture(scope="module")
def table() -> dict[str, np.ndarray]:
    # A high fraud rate, so that a few hundred labels hold enough fraud to measure.
    return generate(N, 31, SynthOptions(fraud_rate=0.2, attribute_label_correlation=0.5))


def _admin(server: ServerProcess) -> tuple[admin_pb2_grpc.AdminStub, tuple[tuple[str, str]]]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.admin_port}")
    return admin_pb2_grpc.AdminStub(channel), (("authorization", f"Bearer {server.admin_token}"),)


def test_labels_join_predictions_and_figures_follow(
    server: ServerProcess, table: dict[str, np.ndarray]
) -> None:
    txns = transactions_from_table(table)
    labels = [bool(v) for v in table["label"]]
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ScoringStub(channel)
        answers = []
        for i in range(0, N, 100):
            batch = stub.ScoreBatch(
                pb.ScoreBatchRequest(transactions=txns[i : i + 100]), timeout=30
            )
            answers.extend(batch.responses)
        join_ms = []
        for txn, answer, label in zip(txns, answers, labels, strict=True):
            start = time.perf_counter()
            joined = stub.ReportOutcome(
                pb.ReportOutcomeRequest(transaction_id=txn.transaction_id, label=label), timeout=10
            )
            join_ms.append((time.perf_counter() - start) * 1e3)
            assert joined.transaction_id == txn.transaction_id
            assert joined.model_name == answer.model_name
            assert joined.score == pytest.approx(answer.score)
            assert joined.decision == answer.decision
        with pytest.raises(grpc.RpcError) as unknown:
            stub.ReportOutcome(pb.ReportOutcomeRequest(transaction_id="never-scored"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "never-scored" in (unknown.value.details() or "")
        with pytest.raises(grpc.RpcError) as bad:
            stub.ReportOutcome(
                pb.ReportOutcomeRequest(transaction_id=txns[0].transaction_id, amount_minor=-5),
                timeout=10,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    admin, auth = _admin(server)
    (performance,) = admin.GetPerformance(
        admin_pb2.GetPerformanceRequest(), metadata=auth, timeout=30
    ).performance
    assert performance.labelled == N
    assert performance.positives == sum(labels)
    declined = [a.decision == pb.DECLINE for a in answers]
    tp = sum(d and y for d, y in zip(declined, labels, strict=True))
    fp = sum(d and not y for d, y in zip(declined, labels, strict=True))
    assert (performance.decline.true_positives, performance.decline.false_positives) == (tp, fp)
    assert performance.HasField("auc") and 0.5 < performance.auc <= 1.0
    fraud_usd = sum(
        t.amount_minor / 100
        for t, d, y in zip(txns, declined, labels, strict=True)
        if d and y and t.currency == "USD"
    )
    assert performance.fraud_caught_usd >= fraud_usd - 1e-6  # other currencies add to it

    reports = admin.GetFairness(admin_pb2.GetFairnessRequest(), metadata=auth, timeout=30).reports
    by_attribute = {r.attribute: r for r in reports}
    assert set(by_attribute) == {"age_band", "region"}
    for report in by_attribute.values():
        assert sum(g.decisions for g in report.groups) == N
        rates = [g.selection_rate for g in report.groups if g.compared]
        assert report.disparate_impact_ratio == pytest.approx(min(rates) / max(rates))
    print(
        f"\nReportOutcome round trip over gRPC: median {statistics.median(join_ms):.2f} ms, "
        f"p99 {sorted(join_ms)[int(0.99 * len(join_ms)) - 1]:.2f} ms ({N} labels)"
    )


def test_a_restarted_server_still_joins_earlier_predictions(
    config: Path, server: ServerProcess, table: dict[str, np.ndarray]
) -> None:
    txn = transactions_from_table(table)[0]
    with grpc.insecure_channel(server.target) as channel:
        pb_grpc.ScoringStub(channel).Score(pb.ScoreRequest(transaction=txn), timeout=10)
    time.sleep(0.2)  # past the writer's flush interval (20 ms); close flushes anyway
    assert server.terminate() == 0, server.log()
    again = start_server(config)
    try:
        with grpc.insecure_channel(again.target) as channel:
            joined = pb_grpc.ScoringStub(channel).ReportOutcome(
                pb.ReportOutcomeRequest(transaction_id=txn.transaction_id, label=True),
                timeout=10,
            )
        assert joined.transaction_id == txn.transaction_id and joined.updated
    finally:
        assert again.terminate() == 0, again.log()
