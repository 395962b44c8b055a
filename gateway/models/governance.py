"""Governance gates: what a model version must show before it may take live traffic.

The gateway routes live traffic only to versions whose card says ``approved``
(``models.require_approval``); this module decides when a card may say so. An
approval is a claim that somebody checked the version *as it sits on disk*, so every
gate runs the files themselves rather than trusting the card's own figures:

- ``card_schema``: card.yaml loads as a :class:`ModelCard` and names this directory's
  model and version (a card copied into the wrong version directory fails here);
- ``onnx_inputs``: the ONNX graph's input is the card's (name, float32, ``[N, width]``
  with a free batch dimension) and ``width`` is what the compiled feature spec encodes,
  and the score output is there: a model exported against another spec fails here
  rather than scoring shifted columns;
- ``golden_vectors``: the held-out rows recorded at training score as they did then,
  within the card's tolerance (a swapped or re-exported file, or a runtime that
  computes differently);
- ``latency``: median and p99 of single-row ONNX Runtime calls on this machine, with
  serving's session options, against a budget: a measurement used as a gate;
- ``fairness``: the held-out split rebuilt from the card's lineage (the generator's
  options and seed, checked against the training-data digest, then the split's
  start), encoded by the serving encoder and scored; per monitoring attribute, the
  disparate-impact ratio of flag rates must be at least 0.8 (the four-fifths rule) and
  the equalized-odds difference (the larger of the TPR and FPR gaps, fairlearn's
  definition) at most a configurable bound, both at ``review_at`` (REVIEW or DECLINE,
  as the card's own fairness figures) and at ``decline_at`` (DECLINE, as the live
  fairness monitor, gateway/telemetry/fairness.py, whose defaults these are). Groups
  smaller than ``min_group_size`` are reported but not compared, as the monitor does.

Each gate gives a :class:`CheckResult`: a status, a one-line summary, figures, and the
evidence behind them (per-row golden differences, latency samples, per-group rates)
for ``riskwire governance report``. A gate that cannot run because an earlier one
failed is ``skipped``, which is not a pass.

:func:`approve` writes ``approval: {status: approved, approver, date}`` into card.yaml
only when every gate passes and the files are still those that were validated; the
approval is recorded (the audit log, through ``record``) *before* the card changes,
so no card is ever approved without its record. A loaded model keeps the card it was
loaded with: load the version again for the gateway to see the approval.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from gateway.backends.onnxruntime import OrtModel
from gateway.data.synth import SynthOptions, generate
from gateway.data.table import Table, data_digest, table_from_csv_bytes, table_to_csv_bytes
from gateway.features.columns import columns_from_table
from gateway.features.dispatch import make_encoder
from gateway.models.card import CARD_FILE, MODEL_FILE, Approval, CardError, ModelCard
from gateway.models.train import auc
from gateway.telemetry.fairness import FairnessSettings
from riskwire.v1 import scoring_pb2

CheckStatus = Literal["pass", "fail", "skipped"]
Figure = float | int | str | bool | None

CARD_SCHEMA = "card_schema"
ONNX_INPUTS = "onnx_inputs"
GOLDEN_VECTORS = "golden_vectors"
LATENCY = "latency"
FAIRNESS = "fairness"
CHECKS = (CARD_SCHEMA, ONNX_INPUTS, GOLDEN_VECTORS, LATENCY, FAIRNESS)
"""Every gate, in the order it runs."""

DEFAULT_LATENCY_BUDGET_MS = 2.0
"""p99 of one single-row model call: a quarter of a route's default 8 ms deadline,
leaving the rest for parsing, encoding, queueing and the response."""
DEFAULT_LATENCY_CALLS = 200
WARMUP_CALLS = 20
_FAIRNESS = FairnessSettings()
DI_MIN = _FAIRNESS.di_threshold
"""The four-fifths rule (US EEOC, 29 CFR 1607.4(D)): a fixed policy, not an option."""
DEFAULT_EO_BOUND = _FAIRNESS.eo_threshold
DEFAULT_MIN_GROUP_SIZE = _FAIRNESS.min_group_size
_ORT_FLOAT = "tensor(float)"


class HeldOutUnavailable(ValueError):
    """The held-out split cannot be rebuilt as the card's lineage describes it."""


@dataclass(frozen=True)
class ValidationOptions:
    """Budgets and bounds of the gates, and where the held-out data comes from."""

    latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS
    """The p99 a single-row call may take on this machine."""
    latency_calls: int = DEFAULT_LATENCY_CALLS
    """Single-row calls timed (after WARMUP_CALLS untimed ones)."""
    eo_bound: float = DEFAULT_EO_BOUND
    """Largest equalized-odds difference accepted per monitoring attribute."""
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE
    """Rows a group needs in the held-out split to enter the comparisons."""
    data: Path | None = None
    """The training CSV; None: regenerate it from the card's lineage. Either way its
    digest must equal the lineage's ``training_data_digest``."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_budget_ms) and self.latency_budget_ms > 0):
            raise ValueError(f"latency budget must be > 0 ms, got {self.latency_budget_ms}")
        if self.latency_calls < 10:
            raise ValueError(f"latency calls must be >= 10, got {self.latency_calls}")
        if not 0.0 <= self.eo_bound <= 1.0:
            raise ValueError(f"equalized-odds bound must be in [0, 1], got {self.eo_bound}")
        if self.min_group_size < 1:
            raise ValueError(f"min group size must be >= 1, got {self.min_group_size}")

    def to_json(self) -> dict[str, Figure]:
        return {
            "latency_budget_ms": self.latency_budget_ms,
            "latency_calls": self.latency_calls,
            "di_min": DI_MIN,
            "eo_bound": self.eo_bound,
            "min_group_size": self.min_group_size,
            "data": str(self.data) if self.data is not None else None,
        }


@dataclass(frozen=True)
class CheckResult:
    """One gate's outcome.

    ``figures`` are the headline numbers (JSON scalars); ``evidence`` holds what they
    were computed from, JSON-ready: ``golden_vectors`` has ``rows`` [{expected, got,
    diff}]; ``latency`` has ``samples_us``; ``fairness`` has ``attributes``
    [{attribute, review_at and decline_at {disparate_impact, equalized_odds, tpr_gap,
    fpr_gap}, disparate_impact and equalized_odds (the worse of the two), passed,
    problems, verdict, groups [{group, count, positives, flag_rate, tpr, fpr,
    decline_rate, decline_tpr, decline_fpr, compared}]}].
    """

    name: str
    status: CheckStatus
    summary: str
    figures: Mapping[str, Figure] = field(default_factory=dict)
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "figures": dict(self.figures),
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every gate's result for one version, and the digests of the files checked."""

    model: str
    version: int
    path: Path
    options: ValidationOptions
    checks: tuple[CheckResult, ...]
    card: ModelCard | None
    """The card as validated; None when it does not load."""
    card_sha256: str | None
    model_sha256: str | None
    validated_at: str
    """UTC, ISO 8601, seconds."""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        """The gates that did not pass (failed or skipped)."""
        return tuple(check for check in self.checks if not check.passed)

    def check(self, name: str) -> CheckResult:
        """The result of gate ``name``.

        Raises:
            KeyError: no such gate.
        """
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_json(self, evidence: bool = True) -> dict[str, Any]:
        checks = []
        for check in self.checks:
            data = check.to_json()
            if not evidence:
                data.pop("evidence")
            checks.append(data)
        return {
            "model": self.model,
            "version": self.version,
            "path": str(self.path),
            "passed": self.passed,
            "validated_at": self.validated_at,
            "card_sha256": self.card_sha256,
            "model_sha256": self.model_sha256,
            "options": self.options.to_json(),
            "checks": checks,
        }

    def render(self) -> str:
        """A few lines for a terminal: the verdict, then one line per gate."""
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{self.model} v{self.version} ({self.path}): {verdict}"]
        width = max(len(name) for name in CHECKS)
        for check in self.checks:
            lines.append(f"  {check.status.upper():7} {check.name:{width}}  {check.summary}")
        return "\n".join(lines)


class ApprovalRefused(Exception):
    """Validation did not pass (or the files changed since): nothing was approved."""

    def __init__(self, report: ValidationReport, reason: str = "") -> None:
        self.report = report
        failed = ", ".join(f"{c.name} ({c.status}): {c.summary}" for c in report.failed)
        detail = reason or f"validation failed: {failed}"
        super().__init__(f"{report.model} v{report.version} not approved: {detail}")


@dataclass(frozen=True)
class ApprovalRecord:
    """What the audit log keeps of an approval."""

    model: str
    version: int
    approver: str
    date: str
    reason: str
    """The gates' summaries, the bounds used and the digests of the files approved."""
    card_sha256: str
    """card.yaml as validated, before the approval was written into it."""
    model_sha256: str


ApprovalRecorder = Callable[[ApprovalRecord], None]
"""Makes an approval record durable; raises when it cannot (nothing is approved then)."""


# --------------------------------------------------------------------------- held-out


class HeldOutData:
    """Training tables rebuilt from lineages, kept by digest: several versions trained
    on one data set (a champion and its challenger) rebuild it once."""

    def __init__(self, data: Path | None = None) -> None:
        self._data = data
        self._tables: dict[str, tuple[Table, str]] = {}

    def held_out(self, card: ModelCard) -> tuple[Table, str]:
        """The card's held-out rows, and where the data came from.

        Raises:
            HeldOutUnavailable: no generator in the lineage and no data file, a digest
                that differs from the lineage's, or a split that does not match.
        """
        lineage = card.lineage
        digest = lineage.training_data_digest
        if digest not in self._tables:
            self._tables[digest] = self._load(card)
        table, source = self._tables[digest]
        held = table["timestamp_ms"] >= lineage.split.held_out_start_ms
        if int(held.sum()) != lineage.split.held_out_rows:
            raise HeldOutUnavailable(
                f"{int(held.sum())} rows from held_out_start_ms "
                f"{lineage.split.held_out_start_ms}, but the card's lineage says "
                f"{lineage.split.held_out_rows}"
            )
        return {name: column[held] for name, column in table.items()}, source

    def _load(self, card: ModelCard) -> tuple[Table, str]:
        lineage = card.lineage
        if self._data is not None:
            try:
                raw = self._data.read_bytes()
            except OSError as exc:
                raise HeldOutUnavailable(f"cannot read {self._data}: {exc}") from None
            source = str(self._data)
        else:
            raw, source = _regenerate(card)
        digest = data_digest(raw)
        if digest != lineage.training_data_digest:
            raise HeldOutUnavailable(
                f"{source} has digest {digest}, the card's training data was "
                f"{lineage.training_data_digest}"
            )
        try:
            return table_from_csv_bytes(raw), source
        except ValueError as exc:
            raise HeldOutUnavailable(f"{source} is not a transactions table: {exc}") from None


def _regenerate(card: ModelCard) -> tuple[bytes, str]:
    generator = card.lineage.generator
    if generator is None or generator.get("generator") != "gateway.data.synth":
        raise HeldOutUnavailable(
            "the card's lineage names no generator this gateway can rerun; "
            "pass the training CSV (--data)"
        )
    try:
        options = SynthOptions(**generator.get("options", {}))
        rows, seed = int(generator["rows"]), int(generator["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HeldOutUnavailable(f"the lineage's generator record is unusable: {exc}") from None
    source = f"gateway.data.synth rows={rows} seed={seed} (regenerated from the lineage)"
    return table_to_csv_bytes(generate(rows, seed, options)), source


# --------------------------------------------------------------------------- gates


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _skipped(name: str, why: str) -> CheckResult:
    return CheckResult(name, "skipped", f"not run: {why}")


def check_card(path: Path, name: str, version: int) -> tuple[CheckResult, ModelCard | None]:
    """Gate ``card_schema``: card.yaml loads and names this model and version."""
    try:
        card = ModelCard.load(path / CARD_FILE)
    except CardError as exc:
        return CheckResult(CARD_SCHEMA, "fail", str(exc)), None
    figures: dict[str, Figure] = {
        "name": card.name,
        "version": card.version,
        "owner": card.owner,
        "approval": card.approval.status,
        "golden_rows": len(card.golden.rows) if card.golden is not None else 0,
    }
    if (card.name, card.version) != (name, version):
        summary = (
            f"card.yaml describes {card.name} v{card.version}, but it sits in the "
            f"directory of {name} v{version}"
        )
        return CheckResult(CARD_SCHEMA, "fail", summary, figures), None
    summary = f"card.yaml is a valid card of {name} v{version} (owner {card.owner})"
    return CheckResult(CARD_SCHEMA, "pass", summary, figures), card


def _shape(arg: Any) -> list[int | str]:
    return [d if isinstance(d, int) else "N" for d in arg.shape]


def encoded_width(card: ModelCard) -> tuple[int, str]:
    """Columns the compiled feature spec encodes one transaction into, and which
    encoder (native or python) compiled it."""
    encoder = make_encoder(card.spec)
    row = encoder.encode_transactions([scoring_pb2.Transaction(currency="USD")])
    return int(row.shape[1]), encoder.implementation


def check_onnx_inputs(path: Path, card: ModelCard) -> CheckResult:
    """Gate ``onnx_inputs``: graph input = card input = encoded width; score output there."""
    try:
        session = ort.InferenceSession(str(path / MODEL_FILE), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        return CheckResult(ONNX_INPUTS, "fail", f"{MODEL_FILE} does not load: {exc}")
    inputs = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    width, implementation = encoded_width(card)
    expected = card.inputs
    figures: dict[str, Figure] = {
        "graph_inputs": ", ".join(f"{i.name} {i.type} {_shape(i)}" for i in inputs),
        "card_input": f"{expected.name} {expected.dtype} [N, {expected.width}]",
        "encoded_width": width,
        "encoder": implementation,
        "score_output": f"{card.outputs.score.name}[:, {card.outputs.score.column}]",
    }
    problems = []
    if len(inputs) != 1:
        problems.append(f"the graph has {len(inputs)} inputs, serving feeds exactly one")
    graph = next((i for i in inputs if i.name == expected.name), None)
    if graph is None:
        problems.append(f"no graph input named {expected.name!r}")
    else:
        if graph.type != _ORT_FLOAT:
            problems.append(f"input {graph.name!r} is {graph.type}, the card says float32")
        shape = _shape(graph)
        if len(shape) != 2:
            problems.append(f"input {graph.name!r} has shape {shape}, expected [N, width]")
        else:
            if isinstance(shape[0], int):
                problems.append(f"input batch dimension is fixed at {shape[0]}; batching needs N")
            if shape[1] != expected.width:
                problems.append(f"input is {shape[1]} wide, the card says {expected.width}")
    if width != expected.width:
        problems.append(f"the feature spec encodes {width} columns, the card says {expected.width}")
    score = outputs.get(card.outputs.score.name)
    if score is None:
        problems.append(f"no output named {card.outputs.score.name!r}; outputs are {list(outputs)}")
    else:
        last = _shape(score)[-1] if score.shape else None
        if isinstance(last, int) and last <= card.outputs.score.column:
            problems.append(
                f"output {score.name!r} has {last} columns, the card reads column "
                f"{card.outputs.score.column}"
            )
    if problems:
        return CheckResult(ONNX_INPUTS, "fail", "; ".join(problems), figures)
    summary = (
        f"{expected.name} float32 [N, {expected.width}] in the graph, the card and the "
        f"{implementation} encoder; score from {figures['score_output']}"
    )
    return CheckResult(ONNX_INPUTS, "pass", summary, figures)


def _session(path: Path, card: ModelCard) -> OrtModel:
    """The model as serving runs it (gateway.backends.onnxruntime's options)."""
    return OrtModel(
        path / MODEL_FILE,
        input_name=card.inputs.name,
        score_output=card.outputs.score.name,
        score_column=card.outputs.score.column,
    )


def check_golden(model: OrtModel, card: ModelCard) -> CheckResult:
    """Gate ``golden_vectors``: the recorded rows score as they did at training."""
    golden = card.golden
    if golden is None:
        return CheckResult(
            GOLDEN_VECTORS,
            "fail",
            "the card records no golden vectors (trained before they were recorded): "
            "retrain with `riskwire models train`",
        )
    rows = np.asarray(golden.rows, dtype=np.float32)
    expected = np.asarray(golden.scores, dtype=np.float64)
    got = model.score(rows)
    diff = np.abs(got - expected)
    worst = float(diff.max())
    figures: dict[str, Figure] = {
        "rows": len(rows),
        "max_abs_diff": worst,
        "tolerance": golden.tolerance,
    }
    evidence = {
        "rows": [
            {"expected": float(e), "got": float(g), "diff": float(d)}
            for e, g, d in zip(expected, got, diff, strict=True)
        ]
    }
    if not worst <= golden.tolerance:  # NaN fails too
        over = int((diff > golden.tolerance).sum())
        summary = (
            f"{over} of {len(rows)} golden rows differ by more than {golden.tolerance:g} "
            f"(max |diff| {worst:.3g})"
        )
        return CheckResult(GOLDEN_VECTORS, "fail", summary, figures, evidence)
    summary = f"{len(rows)} golden rows reproduce: max |diff| {worst:.3g} <= {golden.tolerance:g}"
    return CheckResult(GOLDEN_VECTORS, "pass", summary, figures, evidence)


def check_latency(model: OrtModel, card: ModelCard, options: ValidationOptions) -> CheckResult:
    """Gate ``latency``: p99 of single-row calls on this machine within the budget."""
    if card.golden is not None:
        pool = np.asarray(card.golden.rows, dtype=np.float32)
    else:
        pool = np.zeros((1, card.inputs.width), dtype=np.float32)
    rows = [pool[i : i + 1].copy() for i in range(len(pool))]
    for i in range(WARMUP_CALLS):
        model.score(rows[i % len(rows)])
    samples = np.empty(options.latency_calls, dtype=np.int64)
    for i in range(options.latency_calls):
        row = rows[i % len(rows)]
        start = time.perf_counter_ns()
        model.score(row)
        samples[i] = time.perf_counter_ns() - start
    ms = samples / 1e6
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    figures: dict[str, Figure] = {
        "calls": options.latency_calls,
        "median_ms": round(p50, 4),
        "p99_ms": round(p99, 4),
        "max_ms": round(float(ms.max()), 4),
        "budget_ms": options.latency_budget_ms,
    }
    evidence = {"samples_us": [round(int(s) / 1000, 1) for s in samples]}
    passed = p99 <= options.latency_budget_ms
    summary = (
        f"p99 {p99:.3f} ms {'<=' if passed else '>'} budget {options.latency_budget_ms:g} ms "
        f"(median {p50:.3f} ms, {options.latency_calls} single-row calls on this machine)"
    )
    return CheckResult(LATENCY, "pass" if passed else "fail", summary, figures, evidence)


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _gap(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) - min(present) if len(present) >= 2 else None


_LEVELS = (("review_at", "REVIEW", ""), ("decline_at", "DECLINE", "decline_"))
"""(threshold, decision, prefix of the group keys): a flag is REVIEW or DECLINE."""


def _level(compared: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, float | None]:
    rates = [r[f"{prefix}rate" if prefix else "flag_rate"] for r in compared]
    di: float | None = None
    if len(compared) >= 2:
        top = max(rates)
        # No group flagged at all treats every group alike.
        di = min(rates) / top if top > 0 else 1.0
    tpr_gap = _gap([r[f"{prefix}tpr"] for r in compared])
    fpr_gap = _gap([r[f"{prefix}fpr"] for r in compared])
    gaps = [g for g in (tpr_gap, fpr_gap) if g is not None]
    return {
        "disparate_impact": di,
        "equalized_odds": max(gaps) if gaps else None,
        "tpr_gap": tpr_gap,
        "fpr_gap": fpr_gap,
    }


def attribute_fairness(
    attribute: str,
    groups: npt.NDArray[Any],
    labels: npt.NDArray[np.bool_],
    flagged: npt.NDArray[np.bool_],
    declined: npt.NDArray[np.bool_],
    options: ValidationOptions,
) -> dict[str, Any]:
    """DI ratio and equalized-odds difference of one monitoring attribute at both
    thresholds, with the per-group rates they come from (JSON-ready).

    At ``review_at`` (flagged: REVIEW or DECLINE, as the card's fairness figures) and
    at ``decline_at`` (DECLINE, as the live fairness monitor): a model passes when both
    do, so flagging everyone for review cannot hide unequal declines.
    """
    rows: list[dict[str, Any]] = []
    for group in sorted({str(g) for g in groups.tolist()}):
        g = groups.astype(str) == group
        count = int(g.sum())
        positives = int((g & labels).sum())
        negatives = count - positives
        rows.append(
            {
                "group": group or "<missing>",
                "count": count,
                "positives": positives,
                "flag_rate": _rate(int((g & flagged).sum()), count),
                "tpr": _rate(int((g & labels & flagged).sum()), positives),
                "fpr": _rate(int((g & ~labels & flagged).sum()), negatives),
                "decline_rate": _rate(int((g & declined).sum()), count),
                "decline_tpr": _rate(int((g & labels & declined).sum()), positives),
                "decline_fpr": _rate(int((g & ~labels & declined).sum()), negatives),
                "compared": count >= options.min_group_size,
            }
        )
    compared = [r for r in rows if r["compared"]]
    result: dict[str, Any] = {"attribute": attribute}
    problems = []
    if len(compared) < 2:
        problems.append(f"fewer than 2 groups of at least {options.min_group_size} rows")
    for threshold, decision, prefix in _LEVELS:
        level = result[threshold] = _level(compared, prefix)
        di, eo = level["disparate_impact"], level["equalized_odds"]
        if di is not None and di < DI_MIN:
            problems.append(f"DI {di:.3f} < {DI_MIN:g} at {decision}")
        if eo is not None and eo > options.eo_bound:
            problems.append(f"EO {eo:.3f} > {options.eo_bound:g} at {decision}")
    dis = [result[t]["disparate_impact"] for t, _, _ in _LEVELS]
    eos = [result[t]["equalized_odds"] for t, _, _ in _LEVELS]
    worst_di = min((d for d in dis if d is not None), default=None)
    worst_eo = max((e for e in eos if e is not None), default=None)
    verdict = ", ".join(problems)
    if not problems:
        shown = [f"DI {worst_di:.3f} >= {DI_MIN:g}"] if worst_di is not None else []
        if worst_eo is not None:
            shown.append(f"EO {worst_eo:.3f} <= {options.eo_bound:g}")
        verdict = ", ".join(shown) + " (worst of REVIEW and DECLINE)"
    result.update(
        disparate_impact=worst_di,
        equalized_odds=worst_eo,
        passed=not problems,
        problems=problems,
        verdict=verdict,
        groups=rows,
    )
    return result


def check_fairness(
    model: OrtModel, card: ModelCard, options: ValidationOptions, held_out: HeldOutData
) -> CheckResult:
    """Gate ``fairness`` on the held-out split rebuilt from the card's lineage."""
    try:
        table, source = held_out.held_out(card)
    except HeldOutUnavailable as exc:
        return CheckResult(FAIRNESS, "fail", f"held-out data unavailable: {exc}")
    spec = card.spec
    x = make_encoder(spec).encode(columns_from_table(table, spec.sources))
    scores = model.score(x)
    labels = np.asarray(table["label"]) == 1
    flagged = scores >= card.thresholds.review_at
    declined = scores >= card.thresholds.decline_at
    attributes = sorted(c for c in table if c.startswith("m_"))
    results = [
        attribute_fairness(c[2:], np.asarray(table[c]), labels, flagged, declined, options)
        for c in attributes
    ]
    held_auc = auc(labels, scores) if 0 < labels.sum() < len(labels) else None
    figures: dict[str, Figure] = {
        "held_out_rows": len(scores),
        "positives": int(labels.sum()),
        "flag_rate": float(flagged.mean()) if len(scores) else None,
        "held_out_auc": round(held_auc, 6) if held_auc is not None else None,
        "card_auc": card.metrics.auc,
        "di_min": DI_MIN,
        "eo_bound": options.eo_bound,
    }
    for r in results:
        figures[f"{r['attribute']}.disparate_impact"] = r["disparate_impact"]
        figures[f"{r['attribute']}.equalized_odds"] = r["equalized_odds"]
    evidence = {"source": source, "attributes": results}
    if not results:
        return CheckResult(
            FAIRNESS, "fail", "the held-out data has no monitoring attributes", figures, evidence
        )
    passed = all(r["passed"] for r in results)
    parts = [f"{r['attribute']}: {r['verdict']}" for r in results]
    summary = f"{'; '.join(parts)} ({len(scores)} held-out rows)"
    return CheckResult(FAIRNESS, "pass" if passed else "fail", summary, figures, evidence)


# --------------------------------------------------------------------------- entry points


def version_path(models_dir: Path, name: str, version: int) -> Path:
    """``<models_dir>/<name>/<version>``."""
    return Path(models_dir) / name / str(version)


def validate(
    models_dir: Path,
    name: str,
    version: int,
    options: ValidationOptions | None = None,
    held_out: HeldOutData | None = None,
) -> ValidationReport:
    """Run every gate on ``<models_dir>/<name>/<version>``.

    Args:
        models_dir: the model repository root.
        name: the model name.
        version: the version number.
        options: budgets and bounds; the defaults when None.
        held_out: rebuilt training tables to reuse across versions; a fresh cache
            (over ``options.data``) when None.
    """
    options = options if options is not None else ValidationOptions()
    held_out = held_out if held_out is not None else HeldOutData(options.data)
    path = version_path(models_dir, name, version)
    card_sha, model_sha = _sha256(path / CARD_FILE), _sha256(path / MODEL_FILE)
    checks: list[CheckResult] = []
    schema, card = check_card(path, name, version)
    checks.append(schema)
    if card is None:
        checks += [_skipped(c, "card.yaml does not validate") for c in CHECKS[1:]]
    else:
        inputs = check_onnx_inputs(path, card)
        checks.append(inputs)
        if not inputs.passed:
            checks += [_skipped(c, "the ONNX graph does not fit the card") for c in CHECKS[2:]]
        else:
            model = _session(path, card)
            checks.append(check_golden(model, card))
            checks.append(check_latency(model, card, options))
            checks.append(check_fairness(model, card, options, held_out))
    return ValidationReport(
        model=name,
        version=version,
        path=path,
        options=options,
        checks=tuple(checks),
        card=card,
        card_sha256=card_sha,
        model_sha256=model_sha,
        validated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def write_card_atomically(path: Path, card: ModelCard) -> None:
    """Replace ``path`` with ``card``: a temporary file in the same directory, fsynced,
    renamed over it, so a reader sees the old card or the new one, never a part."""
    data = card.to_yaml().encode("utf-8")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def approval_reason(report: ValidationReport) -> str:
    """The audit record's reason: each gate's summary (with the bounds it used) and the
    digests of the files validated."""
    gates = "; ".join(f"{c.name}: {c.summary}" for c in report.checks)
    return (
        f"validation passed at {report.validated_at}: {gates}; model.onnx sha256 "
        f"{report.model_sha256}, card.yaml sha256 {report.card_sha256} before approval"
    )


def approve(
    models_dir: Path,
    name: str,
    version: int,
    approver: str,
    record: ApprovalRecorder,
    options: ValidationOptions | None = None,
    held_out: HeldOutData | None = None,
    today: str | None = None,
) -> tuple[ModelCard, ValidationReport]:
    """Validate a version and, when every gate passes, approve it.

    The record goes first (``record`` must make it durable or raise), then card.yaml
    is replaced atomically with ``approval: {status: approved, approver, date}``.

    Args:
        today: the approval date, YYYY-MM-DD; today in UTC when None.

    Returns:
        The approved card and the validation behind it.

    Raises:
        ApprovalRefused: a gate did not pass, or the files changed during validation.
        ValueError: an empty approver.
    """
    approver = approver.strip()
    if not approver:
        raise ValueError("the approver (--by) must not be empty")
    report = validate(models_dir, name, version, options, held_out)
    if not report.passed or report.card is None:
        raise ApprovalRefused(report)
    path = report.path
    if (_sha256(path / CARD_FILE), _sha256(path / MODEL_FILE)) != (
        report.card_sha256,
        report.model_sha256,
    ):
        raise ApprovalRefused(report, "card.yaml or model.onnx changed during validation")
    assert report.card_sha256 is not None and report.model_sha256 is not None
    date = today if today is not None else datetime.now(UTC).date().isoformat()
    approval = Approval(status="approved", approver=approver, date=date)
    approved = ModelCard.from_dict(
        {**report.card.to_dict(), "approval": approval.model_dump(mode="json")},
        source=str(path / CARD_FILE),
    )
    record(
        ApprovalRecord(
            model=name,
            version=version,
            approver=approver,
            date=date,
            reason=approval_reason(report),
            card_sha256=report.card_sha256,
            model_sha256=report.model_sha256,
        )
    )
    write_card_atomically(path / CARD_FILE, approved)
    return approved, replace(report, card=approved)


def repository_versions(models_dir: Path) -> list[tuple[str, int]]:
    """Every ``(name, version)`` directory under ``models_dir`` that has a card.yaml,
    by name then version (the repository's layout; unloadable cards included)."""
    found = []
    root = Path(models_dir)
    for card in root.glob(f"*/*/{CARD_FILE}"):
        version_dir = card.parent
        if version_dir.name.isdigit() and not version_dir.parent.name.startswith("."):
            found.append((version_dir.parent.name, int(version_dir.name)))
    return sorted(found)
