"""The model-risk report, with live figures from a real server, rendered by Chromium.

The flow a model-risk reviewer follows: demo models trained here, a version that passes
every gate approved with ``riskwire models approve`` (recorded in an audit log), a
real gateway serving it as a live arm, scored transactions and reported outcomes, then
``riskwire governance report --metrics-url ... --audit-dir ...``. The document is
opened in real headless Chromium twice: once with a copy that measures each section
and figure after layout (``--dump-dom``), once as it is (``--screenshot``), whose
pixels must show the plots' colours.

Needs the Debian ``chromium`` package (``make test-tools`` installs it); skipped,
saying so, where it is absent.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway.cli import main
from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from gateway.models.report import SECTIONS, live_figures
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ServerProcess, start_server, write_config
from tests.unit.test_governance import FLAT, add_flat_model, train_repository

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (make test-tools installs Debian's chromium)"
)

N = 400
ROUTES = """
routes:
  - name: default
    salt: governance
    deadline_ms: 5000
    arms:
      - {model: fraud-gbdt, version: 1, weight: 50, role: champion}
      - {model: fraud-flat, version: 1, weight: 50, role: challenger}
    shadows:
      - {model: fraud-mlp, version: 1, percent: 100}
"""
# Plot colours (gateway/models/report.py _COLORS): blue and orange bars of every plot,
# green for the held-out share of the split and the PSI bars below the watch band.
BLUE = (0x2B, 0x6C, 0xB0)
ORANGE = (0xDD, 0x6B, 0x20)
GREEN = (0x38, 0xA1, 0x69)
MEASURE = """<script>
const out = {sections: {}, figures: {}};
for (const s of document.querySelectorAll("section")) {
  const r = s.getBoundingClientRect();
  out.sections[s.id] = [r.width, r.height];
}
for (const f of document.querySelectorAll("figure.plot")) {
  const svg = f.querySelector("svg");
  const r = svg.getBoundingClientRect();
  out.figures[f.id] = [r.width, r.height, svg.querySelectorAll("path").length];
}
const pre = document.createElement("pre");
pre.id = "layout";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


@dataclass(frozen=True)
class Reports:
    directory: Path
    flat: Path
    index: Path


def _metrics(server: ServerProcess) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def _wait_for_live_figures(server: ServerProcess, limit_s: float = 60.0) -> None:
    """Until /metrics has drift, performance and fairness of fraud-flat v1 (drift folds
    and reports refresh in the background): a condition with a bound, not a sleep."""
    deadline = time.monotonic() + limit_s
    while True:
        live = live_figures(_metrics(server), "scrape", FLAT, 1)
        arms = {(r["arm"], r.get("attribute")) for r in [*live.performance, *live.fairness]}
        if "score" in live.psi and {("challenger", None), ("challenger", "age_band")} <= arms:
            return
        assert time.monotonic() < deadline, f"live figures incomplete: {live}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reports]:
    base = tmp_path_factory.mktemp("governance-report")
    models = train_repository(base)
    add_flat_model(models)
    audit = base / "audit"
    approve = ["models", "approve", FLAT, "1", "--by", "dana@risk.example"]
    approve += ["--models", str(models), "--audit-dir", str(audit)]
    assert main([*approve, "--audit-key-file", str(base / "audit.key")]) == 0

    routes = base / "routes.yaml"
    routes.write_text(ROUTES)
    config = write_config(
        base,
        models,
        routes_file=str(routes),
        drift={"min_samples": 100},
        fairness={"min_group_size": 20},
        outcomes={"flush_interval_ms": 20},
        audit={"directory": str(base / "server-audit"), "key_file": str(base / "server.key")},
    )
    server = start_server(config)
    try:
        table = generate(N, 11, SynthOptions(fraud_rate=0.2, attribute_label_correlation=0.5))
        txns = transactions_from_table(table)
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScoringStub(channel)
            for i in range(0, N, 100):
                stub.ScoreBatch(pb.ScoreBatchRequest(transactions=txns[i : i + 100]), timeout=30)
            for txn, label in zip(txns, table["label"], strict=True):
                request = pb.ReportOutcomeRequest(
                    transaction_id=txn.transaction_id, label=bool(label)
                )
                stub.ReportOutcome(request, timeout=10)
        _wait_for_live_figures(server)
        out = base / "reports"
        report = ["governance", "report", "--models", str(models), "--out", str(out)]
        report += ["--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics"]
        assert main([*report, "--audit-dir", str(audit)]) == 0
    finally:
        assert server.terminate() == 0, server.log()
    yield Reports(out, out / f"{FLAT}-v1.html", out / "index.html")


def _chromium(*args: str, cwd: Path) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={cwd / 'chromium-profile'}",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_chromium_lays_out_every_section_and_figure(reports: Reports, tmp_path: Path) -> None:
    source = reports.flat.read_text(encoding="utf-8")
    measured = tmp_path / "measured.html"
    measured.write_text(source.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", measured.as_uri(), cwd=tmp_path)

    match = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert match is not None, dom[-2000:]
    layout = json.loads(html.unescape(match[1]))
    assert list(layout["sections"]) == [key for key, _ in SECTIONS]
    for key, (width, height) in layout["sections"].items():
        assert width > 500 and height > 40, (key, width, height)
    figures = layout["figures"]
    expected = {
        "fig-split",
        "fig-golden",
        "fig-latency",
        "fig-fairness-0",
        "fig-fairness-1",
        "fig-live-latency",
        "fig-psi",
        "fig-calibration",
        "fig-score-reference",
    }
    assert set(figures) == expected
    for figure, (width, height, paths) in figures.items():
        assert width > 200 and height > 100, (figure, width, height)
        assert paths > 5, (figure, paths)  # axes, ticks, bars: drawn, not an empty frame

    # What the reviewer reads, as Chromium parsed it.
    assert "fraud-flat v1: model-risk report" in dom
    assert "dana@risk.example" in dom
    assert "worker 999: ok" in dom
    assert 'id="no-live-data"' not in dom
    assert "challenger" in dom  # the live performance and fairness tables, per arm


def test_the_screenshot_shows_the_plots(reports: Reports, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    _chromium(
        "--window-size=1280,5000",
        f"--screenshot={shot}",
        reports.flat.as_uri(),
        cwd=tmp_path,
    )
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.shape == (5000, 1280, 3)
    not_white = (pixels < 245).any(axis=2).mean()
    assert not_white > 0.05, f"only {not_white:.1%} of the page is painted"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 100, colours  # text, tables, badges and plots, not a flat page

    def share(colour: tuple[int, int, int]) -> float:
        return float((np.abs(pixels - np.array(colour)).max(axis=2) <= 8).mean())

    assert share(BLUE) > 0.005  # bars and lines of the plots
    assert share(ORANGE) > 0.001  # FPR and decline bars, the validation split
    assert share(GREEN) > 0.0005  # the split's held-out bar, PSI bars


def test_the_index_links_every_version(reports: Reports, tmp_path: Path) -> None:
    dom = _chromium("--dump-dom", reports.index.as_uri(), cwd=tmp_path)
    links = re.findall(r'<a href="([^"]+)">', dom)
    assert links == ["fraud-flat-v1.html", "fraud-gbdt-v1.html", "fraud-mlp-v1.html"]
    assert all((reports.directory / link).is_file() for link in links)
