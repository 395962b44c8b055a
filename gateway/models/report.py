"""The model-risk report: one self-contained HTML document per model version.

A model-risk reviewer (SR 11-7 style) needs the evidence in one place, as a file they
can keep: what the model is and who owns it, where it came from, what validation
showed (the gates of gateway/models/governance.py, run when the report is written,
not copied from the card), who approved it, how it behaves in production, and whether
the audit log that records all of this is intact. Each section is a ``<section>``
with a stable id (inventory, lineage, validation, approval, monitoring, audit); each
plot is an inline SVG in a ``<figure>`` drawn by matplotlib (no pyplot state, no
files, no scripts, no external resources), so the document renders the same offline,
in a browser or in an archive, years later.

Live monitoring comes from a Prometheus scrape of a gateway (``/metrics``, or a saved
scrape): stage latency, drift PSI, rolling performance and fairness, as the gateway
exports them (gateway/telemetry/). Without one, the section says so plainly and
shows the card's training-time figures, which are the baseline the live figures are
judged against anyway.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import math
import re
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

# Figure objects, never pyplot: no global figure registry and no display backend; SVG
# goes through matplotlib's own SVG canvas.
from matplotlib.figure import Figure

from gateway.models.card import ModelCard
from gateway.models.governance import (
    CARD_SCHEMA,
    DI_MIN,
    FAIRNESS,
    GOLDEN_VECTORS,
    LATENCY,
    ONNX_INPUTS,
    CheckResult,
    HeldOutData,
    ValidationOptions,
    ValidationReport,
    repository_versions,
    validate,
)

SECTIONS = (
    ("inventory", "Inventory and owner"),
    ("lineage", "Lineage"),
    ("validation", "Validation evidence"),
    ("approval", "Approval"),
    ("monitoring", "Monitoring"),
    ("audit", "Audit log verification"),
)
PSI_WATCH, PSI_ACT = 0.1, 0.25
"""The usual PSI bands: below 0.1 stable, 0.1-0.25 watch, above 0.25 act."""
_AUDIT_KINDS = ("model_approval", "model_load", "model_unload")
_COLORS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#718096")


# --------------------------------------------------------------------------- live


@dataclass(frozen=True)
class LiveSource:
    """Where live figures come from: a gateway's /metrics URL or a saved scrape."""

    metrics_url: str | None = None
    metrics_file: Path | None = None

    @property
    def configured(self) -> bool:
        return self.metrics_url is not None or self.metrics_file is not None

    def fetch(self, timeout_s: float = 10.0) -> tuple[str, str]:
        """The Prometheus text and a description of where it came from.

        Raises:
            OSError: the URL cannot be fetched or the file read.
        """
        if self.metrics_file is not None:
            return self.metrics_file.read_text(encoding="utf-8"), str(self.metrics_file)
        if self.metrics_url is None:
            raise OSError("no live source configured")
        if not self.metrics_url.startswith(("http://", "https://")):
            raise OSError(f"metrics URL must be http(s), got {self.metrics_url!r}")
        with urllib.request.urlopen(self.metrics_url, timeout=timeout_s) as response:
            text: str = response.read().decode("utf-8")
        return text, self.metrics_url


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram summed over the label sets that were merged into it."""

    buckets: tuple[tuple[float, float], ...]
    """(upper bound, cumulative count), ascending, ending with +Inf."""
    count: float
    total: float

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket, as PromQL's histogram_quantile."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = upper, cumulative
        return lower


@dataclass(frozen=True)
class LiveFigures:
    """One model version's figures in a scrape."""

    source: str
    stages: Mapping[str, Histogram]
    """Stage name (parse, encode, queue, infer, respond, total) -> latency, seconds."""
    score: Histogram | None
    psi: Mapping[str, float]
    """Feature (or ``score``) -> PSI of the window against the card."""
    window_samples: float | None
    performance: tuple[Mapping[str, Any], ...]
    """Per (route, arm): precision, recall, auc, labels, degraded."""
    fairness: tuple[Mapping[str, Any], ...]
    """Per (route, arm, attribute): disparate_impact, demographic_parity, equalized_odds."""

    @property
    def empty(self) -> bool:
        return not (self.stages or self.score or self.psi or self.performance or self.fairness)


def _merge(samples: Iterable[tuple[str, Mapping[str, str], float]], base: str) -> Histogram:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for name, labels, value in samples:
        if name == f"{base}_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == f"{base}_count":
            count += value
        elif name == f"{base}_sum":
            total += value
    return Histogram(tuple(sorted(buckets.items())), count, total)


def live_figures(text: str, source: str, name: str, version: int) -> LiveFigures:
    """The figures of ``name`` ``version`` in Prometheus text (gateway/telemetry names).

    Raises:
        ValueError: the text is not Prometheus exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"model": name, "version": str(version)}
    families: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if all(labels.get(k) == v for k, v in wanted.items()):
                families.setdefault(family.name, []).append((sample.name, labels, sample.value))

    stage_samples: dict[str, list[tuple[str, Mapping[str, str], float]]] = {}
    for stage_sample in families.get("riskwire_stage_duration_seconds", []):
        stage_samples.setdefault(stage_sample[1].get("stage", ""), []).append(stage_sample)
    stages = {
        stage: _merge(samples, "riskwire_stage_duration_seconds")
        for stage, samples in sorted(stage_samples.items())
    }
    score_samples = families.get("riskwire_model_score", [])
    score = _merge(score_samples, "riskwire_model_score") if score_samples else None
    psi = {labels["feature"]: value for _, labels, value in families.get("riskwire_drift_psi", [])}
    window = [value for _, _, value in families.get("riskwire_drift_window_samples", [])]

    def by_key(metrics: Mapping[str, str], keys: Sequence[str]) -> tuple[Mapping[str, Any], ...]:
        rows: dict[tuple[str, ...], dict[str, Any]] = {}
        for field_name, family_name in metrics.items():
            for _, labels, value in families.get(family_name, []):
                key = tuple(labels.get(k, "") for k in keys)
                rows.setdefault(key, dict(zip(keys, key, strict=True)))[field_name] = value
        return tuple(rows[k] for k in sorted(rows))

    performance = by_key(
        {
            "precision": "riskwire_performance_precision",
            "recall": "riskwire_performance_recall",
            "auc": "riskwire_performance_auc",
            "labels": "riskwire_performance_labels",
            "degraded": "riskwire_performance_degraded",
        },
        ("route", "arm"),
    )
    fairness = by_key(
        {
            "disparate_impact": "riskwire_fairness_disparate_impact_ratio",
            "demographic_parity": "riskwire_fairness_demographic_parity_difference",
            "equalized_odds": "riskwire_fairness_equalized_odds_difference",
        },
        ("route", "arm", "attribute"),
    )
    return LiveFigures(
        source=source,
        stages=stages,
        score=score,
        psi=dict(sorted(psi.items())),
        window_samples=sum(window) if window else None,
        performance=performance,
        fairness=fairness,
    )


# --------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class AuditEvidence:
    """The audit log's verification, and its records about model versions."""

    directory: Path | None
    verification: Any | None = None
    """A gateway.audit.VerifyReport."""
    error: str | None = None
    records: tuple[Mapping[str, Any], ...] = ()
    """model_approval / model_load / model_unload records: kind, worker, seq, ts_ms,
    and the payload."""

    def about(self, name: str, version: int) -> list[Mapping[str, Any]]:
        return [
            r
            for r in self.records
            if r["payload"].get("model") == name and r["payload"].get("version") == version
        ]


def audit_evidence(directory: Path | None) -> AuditEvidence:
    """Verify the audit log under ``directory`` and collect its model records."""
    if directory is None:
        return AuditEvidence(None)
    try:
        from gateway.audit import verify
        from gateway.audit.chain import iter_lines, list_segments
    except ImportError as exc:  # the audit package is optional to this report
        return AuditEvidence(directory, error=f"the audit package is unavailable: {exc}")
    try:
        verification = verify(directory)
    except (OSError, ValueError) as exc:
        return AuditEvidence(directory, error=str(exc))
    records = []
    for segments in list_segments(directory).values():
        for segment in segments:
            for _, _, raw in iter_lines(segment.path):
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # verify reports it; this list is a reading aid
                if isinstance(record, dict) and record.get("kind") in _AUDIT_KINDS:
                    records.append(
                        {
                            "kind": record["kind"],
                            "worker": record.get("worker"),
                            "seq": record.get("seq"),
                            "ts_ms": record.get("ts_ms"),
                            "payload": record.get("payload") or {},
                        }
                    )
    records.sort(key=lambda r: (r["ts_ms"] or 0, r["worker"] or 0, r["seq"] or 0))
    return AuditEvidence(directory, verification, records=tuple(records))


# --------------------------------------------------------------------------- plots


_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def _figure(width: float = 6.4, height: float = 3.0) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _svg(figure: Figure, figure_id: str, caption: str) -> str:
    """The figure as inline SVG in a ``<figure>``, its ids prefixed with ``figure_id``:
    several SVGs in one document must not share clip-path and marker ids."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "riskwire", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    prefix = f"{figure_id}-"
    text = _SVG_ID.sub(lambda m: f'id="{prefix}{m[1]}"', text)
    text = _SVG_REF.sub(lambda m: f"{m[1]}{prefix}{m[2]}", text)
    return (
        f'<figure class="plot" id="{_e(figure_id)}">{text}'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _split_plot(card: ModelCard) -> str:
    split = card.lineage.split
    figure = _figure(6.4, 1.9)
    axes = figure.add_subplot()
    parts = (
        ("train", split.train_rows),
        ("validation", split.validation_rows),
        ("held-out", split.held_out_rows),
    )
    left = 0
    for i, (label, rows) in enumerate(parts):
        axes.barh([0], [rows], left=left, color=_COLORS[i], label=f"{label} ({rows:,})")
        left += rows
    axes.set_yticks([])
    axes.set_xlabel("rows, in time order")
    figure.legend(loc="outside upper center", ncol=3, frameon=False)
    return _svg(figure, "fig-split", "Training data split by time (rows)")


def _latency_plot(check: CheckResult) -> str:
    samples = [float(s) / 1000 for s in check.evidence.get("samples_us", [])]
    figure = _figure()
    axes = figure.add_subplot()
    axes.hist(samples, bins=40, color=_COLORS[0])
    for value, label, style in (
        (check.figures.get("median_ms"), "median", ":"),
        (check.figures.get("p99_ms"), "p99", "--"),
        (check.figures.get("budget_ms"), "budget", "-"),
    ):
        if isinstance(value, int | float):
            axes.axvline(
                float(value), color="#c53030", linestyle=style, label=f"{label} {value} ms"
            )
    axes.set_xlabel("single-row call, ms")
    axes.set_ylabel("calls")
    axes.legend()
    return _svg(figure, "fig-latency", "Single-row ONNX Runtime calls on this machine")


def _golden_plot(check: CheckResult) -> str:
    rows = check.evidence.get("rows", [])
    figure = _figure(4.0, 3.6)
    axes = figure.add_subplot()
    expected = [r["expected"] for r in rows]
    axes.plot([0, 1], [0, 1], color="#a0aec0", linewidth=1)
    axes.scatter(expected, [r["got"] for r in rows], color=_COLORS[0], zorder=3)
    axes.set_xlabel("score recorded at training")
    axes.set_ylabel("score now")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    return _svg(figure, "fig-golden", "Golden vectors: recorded against recomputed scores")


def _grouped_bars(
    axes: Any, names: Sequence[str], series: Sequence[tuple[str, list[float]]]
) -> None:
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        axes.bar(
            [p + offset for p in range(len(names))], values, width, color=_COLORS[i], label=label
        )
    axes.set_xticks(list(range(len(names))), names)
    axes.tick_params(axis="x", labelrotation=30)
    axes.legend(fontsize=8)


def _fairness_plot(attribute: Mapping[str, Any], index: int) -> str:
    groups = attribute["groups"]
    names = [g["group"] for g in groups]
    figure = _figure(9.6, 3.0)
    rates, review, decline = figure.subplots(1, 3)
    flag = [g["flag_rate"] or 0.0 for g in groups]
    declined = [g["decline_rate"] or 0.0 for g in groups]
    _grouped_bars(rates, names, [("flagged", flag), ("declined", declined)])
    for i, values in enumerate((flag, declined)):
        compared = [v for v, g in zip(values, groups, strict=True) if g["compared"]]
        if compared:
            rates.axhline(DI_MIN * max(compared), color=_COLORS[i], linestyle="--", linewidth=1)
    rates.set_title(f"rates (dashed: {DI_MIN:g} x highest)", fontsize=10)
    for axes, prefix, decision in ((review, "", "REVIEW"), (decline, "decline_", "DECLINE")):
        tpr = [g[f"{prefix}tpr"] or 0.0 for g in groups]
        fpr = [g[f"{prefix}fpr"] or 0.0 for g in groups]
        _grouped_bars(axes, names, [("TPR", tpr), ("FPR", fpr)])
        axes.set_title(f"TPR and FPR at {decision}", fontsize=10)
    name = attribute["attribute"]
    return _svg(figure, f"fig-fairness-{index}", f"Held-out outcomes by {name}")


def _calibration_plot(card: ModelCard) -> str:
    figure = _figure(4.0, 3.6)
    axes = figure.add_subplot()
    points = [
        (b.mean_predicted, b.observed_rate)
        for b in card.metrics.calibration
        if b.mean_predicted is not None and b.observed_rate is not None
    ]
    axes.plot([0, 1], [0, 1], color="#a0aec0", linewidth=1, label="perfect")
    axes.plot(
        [p for p, _ in points],
        [o for _, o in points],
        marker="o",
        color=_COLORS[0],
        label="held-out",
    )
    axes.set_xlabel("mean predicted score")
    axes.set_ylabel("observed fraud rate")
    axes.legend()
    return _svg(figure, "fig-calibration", "Calibration on the held-out split (card)")


def _score_plot(card: ModelCard) -> str:
    reference = card.reference.score
    edges = list(reference.edges)
    labels = [f"<{edges[0]:.3g}"] + [f"{a:.3g}-{b:.3g}" for a, b in itertools.pairwise(edges)]
    labels.append(f">={edges[-1]:.3g}")
    figure = _figure(7.2, 3.0)
    axes = figure.add_subplot()
    positions = list(range(len(labels)))
    axes.bar(positions, reference.proportions, color=_COLORS[0], label="training (card)")
    axes.set_xticks(positions, labels)
    axes.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes.set_ylabel("share of rows")
    axes.legend()
    caption = "Score distribution at training, in the card's frozen bins (drift's reference)"
    return _svg(figure, "fig-score-reference", caption)


def _psi_plot(psi: Mapping[str, float]) -> str:
    names = list(psi)
    figure = _figure(7.2, max(2.4, 0.22 * len(names) + 1.0))
    axes = figure.add_subplot()
    values = [psi[n] for n in names]
    colors = [
        "#c53030" if v > PSI_ACT else "#dd6b20" if v > PSI_WATCH else _COLORS[2] for v in values
    ]
    axes.barh(names, values, color=colors)
    axes.axvline(PSI_WATCH, color="#dd6b20", linestyle=":", label=f"watch {PSI_WATCH:g}")
    axes.axvline(PSI_ACT, color="#c53030", linestyle="--", label=f"act {PSI_ACT:g}")
    axes.invert_yaxis()
    axes.tick_params(axis="y", labelsize=7)
    axes.set_xlabel("PSI against the card's reference")
    axes.legend()
    return _svg(figure, "fig-psi", "Drift: PSI of the live window, per feature and score")


def _live_latency_plot(stages: Mapping[str, Histogram]) -> str:
    figure = _figure()
    axes = figure.add_subplot()
    names = [s for s in ("parse", "encode", "queue", "infer", "respond", "total") if s in stages]
    p50 = [(stages[s].quantile(0.5) or 0.0) * 1000 for s in names]
    p99 = [(stages[s].quantile(0.99) or 0.0) * 1000 for s in names]
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], p50, 0.4, color=_COLORS[0], label="p50")
    axes.bar([p + 0.2 for p in positions], p99, 0.4, color=_COLORS[1], label="p99")
    axes.set_xticks(list(positions), names)
    axes.set_ylabel("ms (from histogram buckets)")
    axes.legend()
    return _svg(figure, "fig-live-latency", "Live latency per stage of a scoring call")


# --------------------------------------------------------------------------- html


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str] | None = None) -> str:
    parts = ["<table>"]
    if head is not None:
        parts.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


def _pairs(items: Iterable[tuple[str, Any]]) -> str:
    return _table([(k, v) for k, v in items])


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status.upper())}</span>'


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;
background:#fff}
header{background:#1a365d;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
nav{padding:8px 32px;background:#edf2f7}nav a{margin-right:16px;color:#2c5282}
main{padding:8px 32px 48px;max-width:1100px}section{margin-top:28px}
h2{border-bottom:2px solid #cbd5e0;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #cbd5e0;padding:3px 8px;
font-size:13px;text-align:left;vertical-align:top}th{background:#edf2f7}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;font-weight:600;font-size:12px}
.pass{background:#c6f6d5;color:#22543d}.fail{background:#fed7d7;color:#742a2a}
.skipped{background:#feebc8;color:#7b341e}.note{background:#fefcbf;border-left:4px solid #d69e2e;
padding:8px 12px}.warn{background:#fed7d7;border-left:4px solid #c53030;padding:8px 12px}
figure.plot{margin:12px 0;display:inline-block;vertical-align:top}
figure.plot svg{max-width:100%;height:auto}figcaption{font-size:12px;color:#4a5568}
code{font-size:12px}
"""


def _inventory(report: ValidationReport, card: ModelCard | None) -> str:
    rows: list[tuple[str, Any]] = [
        ("model", report.model),
        ("version", report.version),
        ("directory", report.path),
        ("model.onnx sha256", report.model_sha256),
        ("card.yaml sha256", report.card_sha256),
    ]
    if card is not None:
        rows[2:2] = [
            ("kind", card.kind),
            ("description", card.description),
            ("owner", card.owner),
            ("input", f"{card.inputs.name} {card.inputs.dtype} [N, {card.inputs.width}]"),
            ("feature spec", card.feature_spec.get("version", "")),
            (
                "thresholds",
                f"REVIEW at {card.thresholds.review_at}, DECLINE at {card.thresholds.decline_at}",
            ),
        ]
    return _pairs(rows)


def _lineage(card: ModelCard | None) -> str:
    if card is None:
        return '<p class="warn">The card does not load: no lineage to show.</p>'
    lineage = card.lineage
    split = lineage.split
    rows: list[tuple[str, Any]] = [
        ("training data", lineage.training_data_digest),
        ("rows", lineage.rows),
        ("seed", lineage.seed),
        ("code version", lineage.code_version),
        ("validation from", _iso(split.validation_start_ms)),
        ("held out from", _iso(split.held_out_start_ms)),
    ]
    if lineage.generator is not None:
        rows.append(("generator", json.dumps(lineage.generator, sort_keys=True)))
    parameters = _table(sorted(lineage.parameters.items()), ("parameter", "value"))
    return _pairs(rows) + _split_plot(card) + "<h3>Training parameters</h3>" + parameters


def _iso(ms: int | None) -> str:
    if ms is None:
        return "n/a"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _check_block(check: CheckResult) -> str:
    parts = [
        f'<div class="check" id="check-{_e(check.name)}"><h3>{_e(check.name)} '
        f"{_badge(check.status)}</h3><p>{_e(check.summary)}</p>"
    ]
    if check.figures:
        parts.append(_pairs(check.figures.items()))
    if check.name == LATENCY and check.evidence.get("samples_us"):
        parts.append(_latency_plot(check))
    if check.name == GOLDEN_VECTORS and check.evidence.get("rows"):
        parts.append(_golden_plot(check))
        parts.append(
            _table(
                [
                    (i, r["expected"], r["got"], r["diff"])
                    for i, r in enumerate(check.evidence["rows"])
                ],
                ("row", "recorded", "now", "|diff|"),
            )
        )
    if check.name == FAIRNESS:
        if "source" in check.evidence:
            parts.append(f"<p>Held-out data: <code>{_e(check.evidence['source'])}</code></p>")
        for i, attribute in enumerate(check.evidence.get("attributes", [])):
            parts.append(
                f"<h4>{_e(attribute['attribute'])} "
                f"{_badge('pass' if attribute['passed'] else 'fail')} "
                f"{_e(attribute['verdict'])}</h4>"
            )
            parts.append(
                _table(
                    [
                        (
                            decision,
                            attribute[threshold]["disparate_impact"],
                            attribute[threshold]["equalized_odds"],
                            attribute[threshold]["tpr_gap"],
                            attribute[threshold]["fpr_gap"],
                        )
                        for threshold, decision in (
                            ("review_at", "REVIEW"),
                            ("decline_at", "DECLINE"),
                        )
                    ],
                    ("at", "DI ratio", "EO difference", "TPR gap", "FPR gap"),
                )
            )
            parts.append(_fairness_plot(attribute, i))
            parts.append(
                _table(
                    [
                        (
                            g["group"],
                            g["count"],
                            g["positives"],
                            g["flag_rate"],
                            g["tpr"],
                            g["fpr"],
                            g["decline_rate"],
                            g["decline_tpr"],
                            g["decline_fpr"],
                            g["compared"],
                        )
                        for g in attribute["groups"]
                    ],
                    (
                        "group",
                        "rows",
                        "fraud",
                        "flag rate",
                        "TPR",
                        "FPR",
                        "decline rate",
                        "TPR at DECLINE",
                        "FPR at DECLINE",
                        "compared",
                    ),
                )
            )
    parts.append("</div>")
    return "".join(parts)


def _validation(report: ValidationReport) -> str:
    options = report.options
    verdict = "pass" if report.passed else "fail"
    head = (
        f"<p>Gates run {_e(report.validated_at)}: {_badge(verdict)} "
        f"(latency budget p99 {options.latency_budget_ms:g} ms, DI &ge; {DI_MIN:g}, "
        f"EO &le; {options.eo_bound:g}, groups of &ge; {options.min_group_size} rows compared)</p>"
    )
    summary = _table(
        [(c.name, c.status.upper(), c.summary) for c in report.checks], ("gate", "status", "result")
    )
    order = (CARD_SCHEMA, ONNX_INPUTS, GOLDEN_VECTORS, LATENCY, FAIRNESS)
    blocks = [_check_block(c) for c in sorted(report.checks, key=lambda c: order.index(c.name))]
    return head + summary + "".join(blocks)


def _approval(report: ValidationReport, audit: AuditEvidence) -> str:
    card = report.card
    if card is None:
        return '<p class="warn">The card does not load: approval unknown.</p>'
    approval = card.approval
    parts = [
        _pairs(
            [
                ("status", approval.status),
                ("approver", approval.approver),
                ("date", approval.date),
            ]
        )
    ]
    if approval.status == "approved" and not report.passed:
        failed = ", ".join(c.name for c in report.failed)
        parts.append(
            '<p class="warn">The card says approved, but the gates do not pass now '
            f"({_e(failed)}). Live traffic is allowed by the card alone: review the "
            "approval.</p>"
        )
    elif approval.status != "approved":
        can = "every gate passes: it may be approved" if report.passed else "gates fail"
        parts.append(
            f'<p class="note">Not approved: the gateway refuses it as a live arm and runs it '
            f"only as a shadow; {_e(can)}.</p>"
        )
    records = [
        r for r in audit.about(report.model, report.version) if r["kind"] == "model_approval"
    ]
    if audit.directory is not None:
        if records:
            parts.append("<h3>Approval records in the audit log</h3>")
            parts.append(_audit_records(records))
        else:
            parts.append(
                '<p class="note">No model_approval record for this version in the audit log.</p>'
            )
    return "".join(parts)


def _audit_records(records: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        [
            (
                r["kind"],
                _iso(r["ts_ms"]),
                f"w{r['worker']} seq {r['seq']}",
                r["payload"].get("status") or (r["payload"].get("approval") or {}).get("status"),
                r["payload"].get("approver"),
                r["payload"].get("actor"),
            )
            for r in records
        ],
        ("record", "time", "chain", "status", "approver", "actor"),
    )


def _monitoring(card: ModelCard | None, live: LiveFigures | None, live_error: str | None) -> str:
    parts = ["<h3>Live</h3>"]
    if live_error is not None:
        parts.append(f'<p class="warn">No live data: the live source failed: {_e(live_error)}</p>')
    elif live is None:
        parts.append(
            '<p class="note" id="no-live-data">No live data: no live source was given '
            "(--metrics-url or --metrics-file). The figures below are the card's "
            "training-time figures, the baseline live monitoring is judged against.</p>"
        )
    elif live.empty:
        parts.append(
            f'<p class="note" id="no-live-data">No live data for this version in '
            f"{_e(live.source)}: it has not served (or the scrape is of another gateway).</p>"
        )
    else:
        parts.append(f"<p>From <code>{_e(live.source)}</code>.</p>")
        if live.stages:
            parts.append("<h4>Latency</h4>")
            parts.append(_live_latency_plot(live.stages))
            parts.append(
                _table(
                    [
                        (
                            stage,
                            int(h.count),
                            _ms(h.quantile(0.5)),
                            _ms(h.quantile(0.99)),
                        )
                        for stage, h in live.stages.items()
                    ],
                    ("stage", "calls", "p50 ms", "p99 ms"),
                )
            )
        if live.psi:
            parts.append("<h4>Drift</h4>")
            parts.append(f"<p>Window: {_e(_fmt(live.window_samples))} rows.</p>")
            parts.append(_psi_plot(live.psi))
        else:
            parts.append("<h4>Drift</h4><p>No PSI yet (the window is below its minimum).</p>")
        parts.append("<h4>Performance (labelled outcomes)</h4>")
        if live.performance:
            baseline = card.metrics.auc if card is not None else None
            parts.append(
                _table(
                    [
                        (
                            r["route"],
                            r["arm"],
                            r.get("labels"),
                            r.get("precision"),
                            r.get("recall"),
                            r.get("auc"),
                            baseline,
                            bool(r.get("degraded")),
                        )
                        for r in live.performance
                    ],
                    (
                        "route",
                        "arm",
                        "labels",
                        "precision",
                        "recall",
                        "AUC",
                        "card AUC",
                        "degraded",
                    ),
                )
            )
        else:
            parts.append("<p>No labelled outcomes reported yet.</p>")
        parts.append("<h4>Fairness (live, at DECLINE)</h4>")
        if live.fairness:
            parts.append(
                _table(
                    [
                        (
                            r["route"],
                            r["arm"],
                            r["attribute"],
                            r.get("disparate_impact"),
                            r.get("demographic_parity"),
                            r.get("equalized_odds"),
                        )
                        for r in live.fairness
                    ],
                    ("route", "arm", "attribute", "DI ratio", "parity diff", "EO diff"),
                )
            )
        else:
            parts.append("<p>No fairness figures yet (too few decisions per group).</p>")
        if live.score is not None and live.score.count > 0:
            parts.append(
                f"<p>Scores answered: {int(live.score.count)}, mean "
                f"{_fmt(live.score.total / live.score.count)}.</p>"
            )
    parts.append("<h3>Training-time baseline (model card)</h3>")
    if card is None:
        parts.append('<p class="warn">The card does not load.</p>')
        return "".join(parts)
    m = card.metrics
    parts.append(
        _pairs(
            [
                ("held-out rows", m.rows),
                ("fraud rows", m.positives),
                ("AUC", m.auc),
                (f"baseline AUC ({m.baseline_feature})", m.baseline_auc),
                ("precision / recall at REVIEW", f"{m.precision_at_review} / {m.recall_at_review}"),
                (
                    "precision / recall at DECLINE",
                    f"{m.precision_at_decline} / {m.recall_at_decline}",
                ),
                ("review / decline rate", f"{m.review_rate} / {m.decline_rate}"),
                ("Brier score", m.brier),
            ]
        )
    )
    parts.append(_calibration_plot(card))
    parts.append(_score_plot(card))
    return "".join(parts)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.3f}"


def _audit(report: ValidationReport, audit: AuditEvidence) -> str:
    if audit.directory is None:
        return (
            '<p class="note" id="audit-not-configured">Audit verification: not configured '
            "(give --audit-dir to verify the hash chains).</p>"
        )
    if audit.error is not None:
        return (
            f'<p class="warn">Audit verification of {_e(audit.directory)} failed to run: '
            f"{_e(audit.error)}</p>"
        )
    verification = audit.verification
    ok = bool(verification is not None and verification.ok)
    parts = [
        f"<p>{_badge('pass' if ok else 'fail')} <code>{_e(audit.directory)}</code>: "
        f"{len(verification.chains) if verification is not None else 0} chain(s)</p>",
        f"<pre>{_e(verification.render() if verification is not None else '')}</pre>",
    ]
    records = audit.about(report.model, report.version)
    if records:
        parts.append("<h3>Records about this version</h3>")
        parts.append(_audit_records(records))
    return "".join(parts)


def render_report(
    report: ValidationReport,
    live: LiveFigures | None = None,
    live_error: str | None = None,
    audit: AuditEvidence | None = None,
) -> str:
    """One version's report as a self-contained HTML document."""
    audit = audit if audit is not None else AuditEvidence(None)
    card = report.card
    title = f"{report.model} v{report.version}: model-risk report"
    bodies = {
        "inventory": _inventory(report, card),
        "lineage": _lineage(card),
        "validation": _validation(report),
        "approval": _approval(report, audit),
        "monitoring": _monitoring(card, live, live_error),
        "audit": _audit(report, audit),
    }
    sections = "".join(
        f'<section id="{key}"><h2>{_e(heading)}</h2>{bodies[key]}</section>'
        for key, heading in SECTIONS
    )
    nav = "".join(f'<a href="#{key}">{_e(heading)}</a>' for key, heading in SECTIONS)
    status = card.approval.status if card is not None else "unknown"
    verdict = "pass" if report.passed else "fail"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div>gates {_badge(verdict)} &middot; approval "
        f"<strong>{_e(status)}</strong> &middot; generated {_e(report.validated_at)} by "
        "riskwire governance report</div></header>"
        f"<nav>{nav}</nav><main>{sections}</main></body></html>\n"
    )


def _index(entries: Sequence[tuple[ValidationReport, str]]) -> str:
    rows = "".join(
        f'<tr><td><a href="{_e(file)}">{_e(r.model)} v{r.version}</a></td>'
        f"<td>{_e(r.card.owner if r.card else 'n/a')}</td>"
        f"<td>{_e(r.card.approval.status if r.card else 'unknown')}</td>"
        f"<td>{_badge('pass' if r.passed else 'fail')}</td>"
        f"<td>{_e(', '.join(c.name for c in r.failed) or '-')}</td></tr>"
        for r, file in entries
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Model inventory</title><style>{_STYLE}</style></head><body>"
        '<header><h1>Model inventory</h1></header><main><section id="inventory">'
        "<table><tr><th>version</th><th>owner</th><th>approval</th><th>gates</th>"
        f"<th>failed</th></tr>{rows}</table></section></main></body></html>\n"
    )


def report_file_name(name: str, version: int) -> str:
    return f"{name}-v{version}.html"


def write_reports(
    models_dir: Path,
    out_dir: Path,
    options: ValidationOptions | None = None,
    live: LiveSource | None = None,
    audit_dir: Path | None = None,
) -> list[Path]:
    """Validate every version under ``models_dir`` and write its report to ``out_dir``,
    plus ``index.html`` listing them.

    Returns:
        The reports written, one per version, then the index.

    Raises:
        FileNotFoundError: ``models_dir`` holds no model version.
    """
    options = options if options is not None else ValidationOptions()
    versions = repository_versions(models_dir)
    if not versions:
        raise FileNotFoundError(f"no model versions (<name>/<version>/card.yaml) in {models_dir}")
    text: str | None = None
    source = ""
    live_error: str | None = None
    if live is not None:
        try:
            text, source = live.fetch()
        except OSError as exc:
            live_error = str(exc)
    audit = audit_evidence(audit_dir)
    held_out = HeldOutData(options.data)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries = []
    for name, version in versions:
        report = validate(models_dir, name, version, options, held_out)
        figures: LiveFigures | None = None
        error = live_error
        if text is not None:
            try:
                figures = live_figures(text, source, name, version)
            except ValueError as exc:
                error = f"{source} is not Prometheus text: {exc}"
        path = out_dir / report_file_name(name, version)
        path.write_text(render_report(report, figures, error, audit), encoding="utf-8")
        written.append(path)
        entries.append((report, path.name))
    index = out_dir / "index.html"
    index.write_text(_index(entries), encoding="utf-8")
    return [*written, index]
