"""``riskwire drift report`` against a real Admin servicer over gRPC: the table, the
exit codes scripts alert on, the JSON and the plot.

The server is in-process: a grpc.aio server on 127.0.0.1:0 with the bearer-token
interceptor and the real ``AdminServicer`` over a ``DataPlane`` whose drift monitors
were fed real encoded rows and ONNX scores of the demo models.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from gateway.cli import main
from gateway.data.synth import SynthOptions, generate
from gateway.dataplane import DataPlane
from gateway.drift_cli import EXIT_ACT, SERVER_TOKEN_ENV, format_report
from gateway.features import dispatch, hashing
from gateway.features.columns import columns_from_table
from gateway.grpc.admin import AdminServicer
from gateway.grpc.auth import BearerTokenInterceptor
from gateway.models.card import ModelCard
from gateway.models.repository import ModelRepository
from gateway.routes_cli import EXIT_OK, EXIT_PRECONDITION, EXIT_UNREACHABLE, EXIT_USAGE
from gateway.settings import BatchingSettings
from gateway.telemetry.drift import DriftMonitors, DriftSettings
from riskwire.admin.v1 import admin_pb2 as pb
from riskwire.admin.v1 import admin_pb2_grpc
from router.routes import load_table
from router.store import RouteStore

TOKEN = "drift-test-token"
ROUTES = """
routes:
  - name: all
    salt: all
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
"""


def _rows_and_scores(
    directory: Path, options: SynthOptions, n: int
) -> tuple[ModelCard, npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    card = ModelCard.load(directory / "card.yaml")
    generator = card.lineage.generator
    assert generator is not None
    table = generate(int(generator["rows"]), 11, options)
    keep = np.sort(np.random.default_rng(1).choice(len(table["timestamp_ms"]), n, replace=False))
    table = {name: column[keep] for name, column in table.items()}
    rows = dispatch.make_encoder(card.spec, "auto").encode(
        columns_from_table(table, card.spec.sources)
    )
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (out,) = session.run([card.outputs.score.name], {card.inputs.name: rows})
    return card, rows, np.asarray(out)[:, card.outputs.score.column].astype(np.float64)


@pytest.fixture(scope="module")
def monitors(model_repository: Path) -> DriftMonitors:
    """fraud-gbdt v1 saw 600 rows with amounts tripled (act); fraud-mlp v1 only 100
    ordinary ones (insufficient)."""
    drift = DriftMonitors(DriftSettings())
    card, rows, scores = _rows_and_scores(
        model_repository / "fraud-gbdt" / "1", SynthOptions(amount_shift=3.0), 600
    )
    drift.observe(card, rows, scores)
    card, rows, scores = _rows_and_scores(model_repository / "fraud-mlp" / "1", SynthOptions(), 100)
    drift.observe(card, rows, scores)
    drift.fold_all()
    return drift


def _plane(model_repository: Path, drift: DriftMonitors | None) -> DataPlane:
    repository = ModelRepository(model_repository, BatchingSettings(), "python")
    return DataPlane(repository, RouteStore(load_table(ROUTES)), hashing.bucket, drift=drift)


def _report(plane: DataPlane, *args: str) -> int:
    """Serve Admin on a free port, run ``riskwire drift report ARGS`` against it."""

    async def run() -> int:
        server = grpc.aio.server(interceptors=[BearerTokenInterceptor(TOKEN)])
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(plane, "python", "python"), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            argv = ["drift", "report", "--admin", f"127.0.0.1:{port}", *args]
            return await asyncio.to_thread(main, argv)
        finally:
            await server.stop(None)

    return asyncio.run(run())


def _table(text: str, model: str) -> list[list[str]]:
    """The rows under ``model``'s FEATURE header, split on blanks."""
    block = text.split(f"{model} v1: ", 1)[1].split("\n\n", 1)[0]
    lines = block.splitlines()
    assert lines[1].split() == ["FEATURE", "PSI", "SAMPLES", "LEVEL"]
    return [line.split() for line in lines[2:]]


def test_report_prints_the_table_by_psi_and_exits_1_at_act(
    model_repository: Path, monitors: DriftMonitors, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _report(_plane(model_repository, monitors), "--token", TOKEN)
    out = capsys.readouterr().out
    assert code == EXIT_ACT
    assert out.startswith("thresholds: watch >= 0.1, act >= 0.25; PSI from 500 samples")
    assert "fraud-gbdt v1: act (600 samples)" in out
    gbdt = _table(out, "fraud-gbdt")
    assert gbdt[0][0] == "amount_log" and gbdt[0][2:] == ["600", "act"]
    assert float(gbdt[0][1]) > 0.25
    psis = [float(row[1]) for row in gbdt]
    assert psis == sorted(psis, reverse=True)
    assert {row[0] for row in gbdt} >= {"amount_ratio", "merchant_risk", "score"}
    assert "hour_sin" not in {row[0] for row in gbdt}  # cyclical: not monitored
    assert "fraud-mlp v1: insufficient (100 samples)" in out
    assert {(row[1], row[3]) for row in _table(out, "fraud-mlp")} == {("-", "insufficient")}


def test_report_of_one_model_without_act_exits_0(
    model_repository: Path,
    monitors: DriftMonitors,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SERVER_TOKEN_ENV, TOKEN)  # the server's own variable works too
    code = _report(_plane(model_repository, monitors), "--model", "fraud-mlp", "--version", "1")
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert "fraud-mlp v1" in out and "fraud-gbdt" not in out


def test_json_carries_every_distribution(
    model_repository: Path, monitors: DriftMonitors, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _report(_plane(model_repository, monitors), "--token", TOKEN, "--json")
    reply = json.loads(capsys.readouterr().out)
    assert code == EXIT_ACT
    assert (reply["watch_psi"], reply["act_psi"], reply["min_samples"]) == (0.1, 0.25, "500")
    gbdt = next(m for m in reply["models"] if m["model"] == "fraud-gbdt")
    amount = next(f for f in gbdt["features"] if f["feature"] == "amount_log")
    assert amount["has_psi"] and amount["level"] == "act"
    assert len(amount["reference_proportions"]) == len(amount["edges"]) + 1
    assert sum(amount["live_proportions"]) == pytest.approx(1.0)
    assert gbdt["features"][-1]["feature"] == "score"


def test_plot_draws_the_worst_distributions(
    model_repository: Path,
    monitors: DriftMonitors,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path = tmp_path / "drift.png"
    code = _report(
        _plane(model_repository, monitors),
        "--token",
        TOKEN,
        "--top",
        "3",
        "--plot",
        str(path),
    )
    assert code == EXIT_ACT
    assert f"wrote {path} (6 distributions)" in capsys.readouterr().out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 800
    # Not a blank canvas: bars in two colours on white.
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50


@pytest.mark.parametrize(
    ("args", "expected", "message"),
    [
        (["--token", TOKEN, "--model", "fraud-xgb"], EXIT_USAGE, "NOT_FOUND: no drift monitor"),
        (["--token", TOKEN, "--version", "1"], EXIT_USAGE, "--version needs --model"),
        (["--token", "wrong"], EXIT_UNREACHABLE, "UNAUTHENTICATED"),
    ],
)
def test_errors_map_to_exit_codes(
    model_repository: Path,
    monitors: DriftMonitors,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: int,
    message: str,
) -> None:
    assert _report(_plane(model_repository, monitors), *args) == expected
    assert message in capsys.readouterr().err


def test_monitoring_off_is_a_failed_precondition(
    model_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(_plane(model_repository, None), "--token", TOKEN) == EXIT_PRECONDITION
    assert "FAILED_PRECONDITION: drift monitoring is off" in capsys.readouterr().err


def test_empty_report_reads_plainly() -> None:
    assert format_report(pb.GetDriftResponse()) == "(no model version has drift data yet)"
