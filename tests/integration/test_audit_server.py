"""The audit log of a real server: every answered call has its record, the chain
verifies, a kill -9 under load is recovered, and query finds a decision by its id.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway.audit.query import query
from gateway.audit.records import load_key
from gateway.audit.verify import verify
from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from riskwire.admin.v1 import admin_pb2, admin_pb2_grpc
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config

THREADS = 4
PER_THREAD = 100


@pytest.fixture(scope="module")
def txns() -> list[pb.Transaction]:
    return transactions_from_table(generate(1000, 41, SynthOptions()))


def _load(target: str, txns: list[pb.Transaction], answered: list[str]) -> None:
    """THREADS concurrent clients of Score; the ids of the calls answered go in ``answered``."""

    def client(part: list[pb.Transaction]) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            for txn in part:
                try:
                    stub.Score(pb.ScoreRequest(transaction=txn), timeout=10)
                except grpc.RpcError:
                    return  # the server went away (the kill -9 test)
                answered.append(txn.transaction_id)

    threads = [threading.Thread(target=client, args=(txns[i::THREADS],)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _audit_dir(config: Path) -> Path:
    return config.parent / "state" / "audit"


@pytest.fixture()
def config(tmp_path: Path, model_repository: Path) -> Path:
    return write_config(tmp_path, model_repository)


@pytest.fixture()
def server(config: Path) -> Iterator[ServerProcess]:
    running = start_server(config)
    yield running
    if running.proc.poll() is None:
        assert running.terminate() == 0, running.log()


def test_every_answered_call_has_its_decision_record(
    config: Path, server: ServerProcess, txns: list[pb.Transaction]
) -> None:
    answered: list[str] = []
    _load(server.target, txns[: THREADS * PER_THREAD], answered)
    with grpc.insecure_channel(server.target) as channel:
        batch = pb_grpc.ScoringStub(channel).ScoreBatch(
            pb.ScoreBatchRequest(transactions=txns[500:600]), timeout=30
        )
    admin = f"127.0.0.1:{server.admin_port}"
    with grpc.insecure_channel(admin) as channel, pytest.raises(grpc.RpcError):
        # No token: refused, and recorded.
        admin_pb2_grpc.AdminStub(channel).GetRoutes(admin_pb2.GetRoutesRequest(), timeout=10)
    assert server.terminate() == 0, server.log()  # a clean stop flushes the queue

    directory = _audit_dir(config)
    report = verify(directory)
    assert report.ok, report.render()
    key = load_key(config.parent / "state" / "audit.key")
    kinds = Counter(r["kind"] for r in query(directory, key))
    assert len(answered) == THREADS * PER_THREAD
    assert kinds["decision"] == len(answered) + len(batch.responses)
    assert kinds["model_load"] == 2 and kinds["config_change"] == 1
    assert kinds["admin_refused"] == 1
    # A decision found by its transaction id, stored keyed-hashed, never in clear.
    wanted = txns[7]
    (record,) = query(directory, key, transaction_id=wanted.transaction_id)
    assert record["payload"]["route"] == "default"
    text = "".join(p.read_text() for p in directory.glob("*.jsonl"))
    assert wanted.transaction_id not in text and wanted.account_id not in text


def test_a_server_killed_under_load_recovers_its_chain(
    config: Path, server: ServerProcess, txns: list[pb.Transaction]
) -> None:
    answered: list[str] = []
    loader = threading.Thread(target=_load, args=(server.target, txns, answered))
    loader.start()
    while len(answered) < 150 and loader.is_alive():
        loader.join(0.01)
    server.proc.send_signal(signal.SIGKILL)
    assert server.terminate(already_signalled=True) == -signal.SIGKILL  # and its pipe closed
    loader.join(60)

    again = start_server(config)
    try:
        with grpc.insecure_channel(again.target) as channel:
            pb_grpc.ScoringStub(channel).Score(pb.ScoreRequest(transaction=txns[-1]), timeout=10)
    finally:
        assert again.terminate() == 0, again.log()
    directory = _audit_dir(config)
    cli = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", str(directory), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["ok"] is True
    key = load_key(config.parent / "state" / "audit.key")
    records = list(query(directory, key))
    kinds = Counter(r["kind"] for r in records)
    assert kinds["recovery"] >= 1
    # Up to the group-commit window may be lost with the process; the rest is there.
    assert kinds["decision"] >= np.floor(0.5 * len(answered))
