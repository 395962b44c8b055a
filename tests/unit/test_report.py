"""The model-risk report: sections, figures, live figures from a scrape, audit evidence.

The documents are parsed back with the standard library's HTML parser; the rendering
in a real browser is tests/integration/test_governance_report.py.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.models import train
from gateway.models.card import ModelCard
from gateway.models.governance import ValidationOptions
from gateway.models.report import (
    SECTIONS,
    Histogram,
    LiveSource,
    live_figures,
    write_reports,
)
from tests.unit.test_governance import FLAT, add_flat_model, train_repository

OPTIONS = ValidationOptions(latency_calls=50)


class Document(HTMLParser):
    """What a test needs of a report: element ids, figures, svgs, tags, urls, text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.figures: list[str] = []
        self.svgs = 0
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.add(tag)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        if tag == "figure":
            self.figures.append(str(values.get("id")))
        if tag == "svg":
            self.svgs += 1
        for key in ("src", "href", "xlink:href"):
            if values.get(key):
                self.urls.append(str(values[key]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse(path: Path) -> Document:
    document = Document()
    document.feed(path.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = train_repository(tmp_path_factory.mktemp("report"))
    add_flat_model(models)
    return models


@pytest.fixture(scope="module")
def audit_dir(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An audit log holding the approval of fraud-flat v1 (which approve writes)."""
    base = tmp_path_factory.mktemp("audit")
    approved = base / "models"
    shutil.copytree(repo, approved)
    argv = ["models", "approve", FLAT, "1", "--by", "carol@risk.example", "--models"]
    argv += [str(approved), "--audit-dir", str(base / "audit")]
    argv += ["--audit-key-file", str(base / "audit.key")]
    assert main(argv) == 0
    return base / "audit"


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def _histogram(
    buckets: list[tuple[str, float]], count: float, total: float, **labels: str
) -> list[str]:
    name = "riskwire_stage_duration_seconds"
    lines = [f"{name}_bucket{{{_labels(le=le, **labels)}}} {n}" for le, n in buckets]
    return [
        *lines,
        f"{name}_count{{{_labels(**labels)}}} {count}",
        f"{name}_sum{{{_labels(**labels)}}} {total}",
    ]


def _gauge(name: str, samples: list[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {name}", f"# TYPE {name} gauge"]
    return lines + [f"{name}{{{_labels(**labels)}}} {value}" for labels, value in samples]


FLAT_V1 = {"model": FLAT, "version": "1"}
STAGE = {"stage": "total", **FLAT_V1}
SCRAPE = "\n".join(
    [
        "# HELP riskwire_stage_duration_seconds Time per stage of a scoring call",
        "# TYPE riskwire_stage_duration_seconds histogram",
        # Two routes of fraud-flat v1, merged by the report; fraud-gbdt left out.
        *_histogram(
            [("0.001", 10), ("0.002", 20), ("+Inf", 20)],
            20,
            0.02,
            route="a",
            arm="champion",
            **STAGE,
        ),
        *_histogram(
            [("0.001", 0), ("0.002", 10), ("+Inf", 20)], 20, 0.06, route="b", arm="canary", **STAGE
        ),
        *_histogram(
            [("0.001", 99), ("0.002", 99), ("+Inf", 99)],
            99,
            0.05,
            route="a",
            arm="champion",
            stage="total",
            model="fraud-gbdt",
            version="1",
        ),
        *_gauge(
            "riskwire_drift_psi",
            [
                ({"feature": "amount_log", **FLAT_V1}, 0.31),
                ({"feature": "score", **FLAT_V1}, 0.04),
                ({"feature": "amount_log", "model": FLAT, "version": "2"}, 0.9),
            ],
        ),
        *_gauge("riskwire_drift_window_samples", [(FLAT_V1, 640)]),
        *_gauge("riskwire_performance_auc", [({"route": "a", "arm": "champion", **FLAT_V1}, 0.91)]),
        *_gauge(
            "riskwire_performance_labels", [({"route": "a", "arm": "champion", **FLAT_V1}, 300)]
        ),
        *_gauge(
            "riskwire_fairness_disparate_impact_ratio",
            [({"route": "a", "arm": "champion", "attribute": "region", **FLAT_V1}, 0.75)],
        ),
    ]
)
"""A /metrics page as the gateway writes it (names and labels of gateway/telemetry/)."""


def test_live_figures_keep_one_version_and_merge_its_routes() -> None:
    live = live_figures(SCRAPE, "scrape.txt", FLAT, 1)
    total = live.stages["total"]
    assert total.count == 40 and total.total == pytest.approx(0.08)
    assert total.buckets == ((0.001, 10.0), (0.002, 30.0), (float("inf"), 40.0))
    assert live.psi == {"amount_log": 0.31, "score": 0.04}
    assert live.window_samples == 640.0
    assert live.performance == ({"route": "a", "arm": "champion", "auc": 0.91, "labels": 300.0},)
    (fairness,) = live.fairness
    assert (fairness["attribute"], fairness["disparate_impact"]) == ("region", 0.75)
    assert not live.empty
    assert live_figures(SCRAPE, "scrape.txt", FLAT, 3).empty


def test_histogram_quantiles_interpolate_within_a_bucket() -> None:
    h = Histogram(((0.001, 10.0), (0.002, 30.0), (float("inf"), 40.0)), 40.0, 0.08)
    assert h.quantile(0.25) == pytest.approx(0.001)  # rank 10: the first bucket's top
    assert h.quantile(0.5) == pytest.approx(0.0015)  # rank 20: halfway through the second
    assert h.quantile(0.99) == 0.002  # in +Inf: the highest finite bound
    assert Histogram(((float("inf"), 0.0),), 0.0, 0.0).quantile(0.5) is None


@pytest.fixture(scope="module")
def offline(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Reports with no live source and no audit log."""
    return write_reports(repo, tmp_path_factory.mktemp("offline"), OPTIONS)


def test_one_report_per_version_and_an_index(repo: Path, offline: list[Path]) -> None:
    assert [p.name for p in offline] == [
        "fraud-flat-v1.html",
        "fraud-gbdt-v1.html",
        "fraud-mlp-v1.html",
        "index.html",
    ]
    index = parse(offline[-1])
    assert index.urls == ["fraud-flat-v1.html", "fraud-gbdt-v1.html", "fraud-mlp-v1.html"]
    assert "fraud-gbdt v1 fraud-ml@riskwire.example approved FAIL fairness" in index.plain


def test_every_section_and_figure_is_in_the_document(offline: list[Path]) -> None:
    for path in offline[:-1]:
        document = parse(path)
        assert [i for i in document.ids if i in dict(SECTIONS)] == [k for k, _ in SECTIONS]
        for figure in (
            "fig-split",
            "fig-golden",
            "fig-latency",
            "fig-fairness-0",
            "fig-fairness-1",
            "fig-calibration",
            "fig-score-reference",
        ):
            assert figure in document.figures, (path.name, figure)
        assert document.svgs == len(document.figures) == 7
        assert {"check-" + c for c in ("card_schema", "onnx_inputs", "fairness")} <= set(
            document.ids
        )
        # Self-contained: no scripts, stylesheets or images from anywhere.
        assert not {"script", "link", "img", "iframe"} & document.tags
        assert all(url.startswith("#") for url in document.urls), document.urls
        assert "no-live-data" in document.ids
        assert "audit-not-configured" in document.ids
        assert "Audit verification: not configured" in document.plain


def test_inline_svgs_do_not_share_ids(offline: list[Path]) -> None:
    document = parse(offline[1])
    assert len(document.ids) == len(set(document.ids))


def test_the_report_tells_approval_from_validation(offline: list[Path]) -> None:
    flat, gbdt = parse(offline[0]).plain, parse(offline[1]).plain
    assert "The card says approved, but the gates do not pass now (fairness)" in gbdt
    assert "riskwire-demo-trainer" in gbdt
    assert "Not approved: the gateway refuses it as a live arm" in flat
    assert "every gate passes: it may be approved" in flat
    assert "age_band FAIL DI" in gbdt


def test_card_text_is_escaped(repo: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(repo / train.MLP_NAME, models / train.MLP_NAME)
    path = models / train.MLP_NAME / "1" / "card.yaml"
    card = ModelCard.load(path)
    hostile = '<script>alert("x")</script> & <b>bold</b>'
    ModelCard.from_dict({**card.to_dict(), "description": hostile}).dump(path)
    (report, _) = write_reports(models, tmp_path / "out", OPTIONS)
    text = report.read_text()
    assert "<script>" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold" in text
    assert hostile in parse(report).plain


def test_live_figures_and_audit_evidence_in_the_report(
    repo: Path, audit_dir: Path, tmp_path: Path
) -> None:
    scrape = tmp_path / "metrics.txt"
    scrape.write_text(SCRAPE)
    argv = ["governance", "report", "--models", str(repo), "--out", str(tmp_path / "out")]
    argv += ["--metrics-file", str(scrape), "--audit-dir", str(audit_dir)]
    assert main(argv) == 0
    flat = parse(tmp_path / "out" / "fraud-flat-v1.html")
    assert {"fig-live-latency", "fig-psi"} <= set(flat.figures)
    assert "no-live-data" not in flat.ids
    text = flat.plain
    assert f"From {scrape}" in text
    assert "total 40 1.500 2.000" in text  # stage, calls, p50 ms, p99 ms
    assert "Window: 640 rows." in text
    assert "a champion region 0.75" in text
    # The audit log verifies, and holds the approval that approve recorded.
    assert "PASS" in text and "worker 999: ok" in text
    assert "model_approval" in text and "carol@risk.example" in text
    # Each version reads its own series: fraud-gbdt has latency only, fraud-mlp nothing.
    gbdt = parse(tmp_path / "out" / "fraud-gbdt-v1.html")
    assert "total 99 " in gbdt.plain and "No PSI yet" in gbdt.plain
    mlp = parse(tmp_path / "out" / "fraud-mlp-v1.html")
    assert "no-live-data" in mlp.ids
    assert "No live data for this version" in mlp.plain


def test_a_broken_audit_log_is_reported(repo: Path, audit_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "audit"
    shutil.copytree(audit_dir, broken)
    (segment,) = broken.glob("w999-*.jsonl")
    original = segment.read_bytes()
    assert original.count(b"carol@risk.example") == 1
    segment.write_bytes(original.replace(b"carol@risk.example", b"mallory@risk.example"))
    (report, *_) = write_reports(repo, tmp_path / "out", OPTIONS, audit_dir=broken)
    text = parse(report).plain
    assert "FAIL" in text and "worker 999: BROKEN at" in text and "digest_mismatch" in text


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port  # nothing listens there any more


def test_an_unreachable_live_source_is_reported_not_fatal(
    repo: Path, tmp_path: Path, closed_port: int
) -> None:
    live = LiveSource(metrics_url=f"http://127.0.0.1:{closed_port}/metrics")
    (report, *_) = write_reports(repo, tmp_path / "out", OPTIONS, live=live)
    assert "No live data: the live source failed:" in parse(report).plain
