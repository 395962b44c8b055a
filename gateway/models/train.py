"""Train the demo models: a LightGBM champion and an MLP challenger, exported to ONNX.

Both are encoded through ``gateway.features`` (``columns_from_table`` and the reference
encoder), the very code serving runs, so there is no training/serving skew. The data
is split by time: the first days train, the next ones choose thresholds, the last ones
are held out for the card's metrics. Every step is seeded and single-threaded, and the
ONNX files are normalized, so the same data, seed and commit give byte-identical
``model.onnx`` and ``card.yaml`` files. The card also keeps golden vectors, a few
held-out rows with their scores, which ``riskwire models validate`` reruns before a
version may be approved (gateway/models/governance.py).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

import gateway
from gateway.data.synth import ENTRY_MODES, read_dataset_meta, write_dataset
from gateway.data.table import Table, data_digest, table_from_csv_bytes
from gateway.features import reference
from gateway.features.columns import columns_from_table
from gateway.features.spec import FeatureSpec, parse_feature_spec
from gateway.models.card import (
    CARD_FILE,
    DEMO_APPROVAL,
    MODEL_FILE,
    CalibrationBin,
    GoldenVectors,
    GroupMetrics,
    Histogram,
    Lineage,
    Metrics,
    ModelCard,
    Outputs,
    ReasonCode,
    Reference,
    ScoreOutput,
    Split,
    TensorSpec,
    Thresholds,
)

if TYPE_CHECKING:
    import onnx

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

GBDT_NAME = "fraud-gbdt"
MLP_NAME = "fraud-mlp"
DEMO_VERSION = 1
DEMO_OWNER = "fraud-ml@riskwire.example"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
SCORE_COLUMN = 1

# Shares of the period: validation, then held-out, at the end (by days).
VALIDATION_SHARE = 0.15
HELD_OUT_SHARE = 0.15
# Thresholds flag about this share of validation traffic.
REVIEW_TOP = 0.025
DECLINE_TOP = 0.0075
# A model must beat the best single feature by at least this much held-out AUC.
MIN_AUC_LIFT = 0.05
ONNX_TOLERANCE = 1e-5
# Held-out rows recorded in the card with their scores (governance: golden vectors).
GOLDEN_ROWS = 16
DAY_MS = 86_400_000

CHANNEL_VOCABULARY = ("ECOMMERCE", "CARD_PRESENT", "CARD_NOT_PRESENT", "ATM", "TRANSFER", "WALLET")
ENTRY_MODE_VOCABULARY = ENTRY_MODES  # every entry mode the generator emits
# MCCs that carry risk on their own; every other category shares the OOV slot, which
# keeps the width stable when processors send categories the training data lacked.
MCC_VOCABULARY = (
    "7995", "5967", "4829", "6051", "5732", "5944",
    "5815", "5816", "5999", "4899", "4511", "6011",
)  # fmt: skip
CARD_TYPE_VOCABULARY = ("DEBIT", "CREDIT", "PREPAID")

REASON_DESCRIPTIONS: dict[str, str] = {
    "amount_log": "Transaction amount (USD) is unusual",
    "amount_ratio": "Amount is far above the account's usual spend",
    "velocity_1h": "Many transactions on this card in the last hour",
    "velocity_24h": "Many transactions on this card in the last 24 hours",
    "tenure": "Customer relationship is new",
    "device_age": "Device is new to this account",
    "device_age_band": "Device is new to this account",
    "distance": "Transaction is far from the customer's home",
    "distance_band": "Transaction is far from the customer's home",
    "merchant_age": "Merchant is new",
    "merchant_risk": "Merchant has a high risk score",
    "channel": "Channel of the transaction",
    "entry_mode": "Card entry mode (magstripe fallback, manual key entry)",
    "mcc": "Merchant category is high risk",
    "card_type": "Card type",
    "geo_mismatch": "Transaction country differs from IP country",
    "ip_abroad": "IP country differs from the customer's home country",
    "country_abroad": "Transaction country differs from the customer's home country",
    "hour": "Unusual time of day",
    "weekday": "Day of week",
}


# --------------------------------------------------------------------------- specs


def _categorical_features() -> list[dict[str, Any]]:
    return [
        {"name": "channel", "transform": "one_hot", "source": "channel",
         "vocabulary": list(CHANNEL_VOCABULARY)},
        {"name": "entry_mode", "transform": "one_hot", "source": "entry_mode",
         "vocabulary": list(ENTRY_MODE_VOCABULARY)},
        {"name": "mcc", "transform": "one_hot", "source": "merchant_category_code",
         "vocabulary": list(MCC_VOCABULARY)},
        {"name": "card_type", "transform": "one_hot", "source": "categorical_extras.card_type",
         "vocabulary": list(CARD_TYPE_VOCABULARY)},
        {"name": "geo_mismatch", "transform": "differs", "sources": ["country", "ip_country"]},
        {"name": "ip_abroad", "transform": "differs",
         "sources": ["ip_country", "categorical_extras.home_country"]},
        {"name": "country_abroad", "transform": "differs",
         "sources": ["country", "categorical_extras.home_country"]},
        {"name": "hour", "transform": "cyclical", "source": "timestamp_ms",
         "period": "hour_of_day"},
        {"name": "weekday", "transform": "cyclical", "source": "timestamp_ms",
         "period": "day_of_week"},
    ]  # fmt: skip


def gbdt_feature_spec() -> FeatureSpec:
    """The champion's spec: raw numeric values (trees need no scaling), -1 for missing."""
    numeric = [
        {"name": "amount_log", "transform": "log1p", "source": "amount_usd"},
        ("amount_ratio", "numeric_extras.amount_to_avg_ratio"),
        ("velocity_1h", "numeric_extras.txn_count_1h"),
        ("velocity_24h", "numeric_extras.txn_count_24h"),
        ("tenure", "customer_tenure_days"),
        ("device_age", "numeric_extras.device_age_days"),
        ("distance", "numeric_extras.distance_from_home_km"),
        ("merchant_age", "numeric_extras.merchant_age_days"),
        ("merchant_risk", "numeric_extras.merchant_risk_score"),
    ]
    features: list[dict[str, Any]] = []
    for item in numeric:
        if isinstance(item, dict):
            features.append(item)
        else:
            # -1 is outside every source's range, so a tree can tell missing apart.
            name, source = item
            features.append(
                {"name": name, "transform": "identity", "source": source, "default": -1.0}
            )
    return parse_feature_spec(
        {"version": "fraud-features-gbdt-1", "features": features + _categorical_features()}
    )


def _mean_std(values: FloatArray) -> tuple[float, float]:
    present = values[~np.isnan(values)]
    mean = float(np.mean(present)) if present.size else 0.0
    std = float(np.std(present)) if present.size else 0.0
    # Rounded so that card.yaml reads well; the trainer encodes with the rounded values.
    return round(mean, 6), (round(std, 6) if std > 1e-6 else 1.0)


def mlp_feature_spec(table: Table, rows: BoolArray) -> FeatureSpec:
    """The challenger's spec: inputs on comparable scales for a neural network.

    Light-tailed values are standardized with mean and std fitted on ``rows`` (the
    training split); heavy-tailed ones take log1p or bands.
    """
    columns = columns_from_table(
        table,
        {
            "customer_tenure_days",
            "numeric_extras.merchant_age_days",
            "numeric_extras.merchant_risk_score",
        },
    )
    standardized = []
    for name, source in (
        ("tenure", "customer_tenure_days"),
        ("merchant_age", "numeric_extras.merchant_age_days"),
        ("merchant_risk", "numeric_extras.merchant_risk_score"),
    ):
        mean, std = _mean_std(columns[source][rows])
        standardized.append(
            {"name": name, "transform": "standardize", "source": source, "mean": mean, "std": std}
        )
    features: list[dict[str, Any]] = [
        {"name": "amount_log", "transform": "log1p", "source": "amount_usd"},
        {"name": "amount_ratio", "transform": "log1p",
         "source": "numeric_extras.amount_to_avg_ratio"},
        {"name": "velocity_1h", "transform": "log1p", "source": "numeric_extras.txn_count_1h"},
        {"name": "velocity_24h", "transform": "log1p", "source": "numeric_extras.txn_count_24h"},
        *standardized,
        {"name": "device_age_band", "transform": "bucketize",
         "source": "numeric_extras.device_age_days", "edges": [1.0, 3.0, 7.0, 30.0, 180.0],
         "default": -1.0},
        {"name": "distance_band", "transform": "bucketize",
         "source": "numeric_extras.distance_from_home_km",
         "edges": [50.0, 300.0, 1000.0, 3000.0, 8000.0], "default": -1.0},
        *_categorical_features(),
    ]  # fmt: skip
    return parse_feature_spec({"version": "fraud-features-mlp-1", "features": features})


def encode_table(spec: FeatureSpec, table: Table) -> npt.NDArray[np.float32]:
    """Encode a table with the serving code path: Columns, then the reference encoder."""
    return reference.encode(spec, columns_from_table(table, spec.sources))


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class TimeSplit:
    """Row masks for training, validation (thresholds) and held-out (metrics) data."""

    train: BoolArray
    validation: BoolArray
    held_out: BoolArray
    validation_start_ms: int
    held_out_start_ms: int


def split_by_time(timestamp_ms: npt.NDArray[np.int64]) -> TimeSplit:
    """Split on whole UTC days: the last days are held out, the days before validate.

    Raises:
        ValueError: the data spans fewer than 3 days.
    """
    first_day = int(timestamp_ms.min()) // DAY_MS
    days = int(timestamp_ms.max()) // DAY_MS - first_day + 1
    if days < 3:
        raise ValueError(f"training data must span at least 3 days, got {days}")
    held = max(1, round(days * HELD_OUT_SHARE))
    val = max(1, round(days * VALIDATION_SHARE))
    validation_start = (first_day + days - held - val) * DAY_MS
    held_out_start = (first_day + days - held) * DAY_MS
    return TimeSplit(
        train=timestamp_ms < validation_start,
        validation=(timestamp_ms >= validation_start) & (timestamp_ms < held_out_start),
        held_out=timestamp_ms >= held_out_start,
        validation_start_ms=validation_start,
        held_out_start_ms=held_out_start,
    )


# --------------------------------------------------------------------------- metrics


def auc(labels: npt.NDArray[Any], scores: npt.NDArray[Any]) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted as half.

    Raises:
        ValueError: labels hold only one class.
    """
    y = np.asarray(labels) == 1
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # Average ranks over ties: each run of equal scores shares its mean rank.
    _, starts, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mean_rank = starts + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _rate(num: float, den: float) -> float | None:
    return None if den == 0 else round(num / den, 6)


def _top_threshold(scores: FloatArray, share: float) -> float:
    """The score above which about ``share`` of ``scores`` lie, rounded for the card."""
    k = max(1, math.ceil(len(scores) * share))
    return round(float(np.sort(scores)[::-1][k - 1]), 6)


def choose_thresholds(validation_scores: FloatArray) -> Thresholds:
    """review_at flags the top REVIEW_TOP of validation traffic, decline_at DECLINE_TOP.

    Raises:
        ValueError: the scores are too tied to give two ordered thresholds in (0, 1).
    """
    review_at = _top_threshold(validation_scores, REVIEW_TOP)
    decline_at = _top_threshold(validation_scores, DECLINE_TOP)
    if not 0.0 < review_at < decline_at < 1.0:
        raise ValueError(
            f"validation scores give review_at={review_at}, decline_at={decline_at}: "
            "not ordered in (0, 1); the model does not rank the validation data"
        )
    return Thresholds(review_at=review_at, decline_at=decline_at)


def _calibration(labels: npt.NDArray[Any], scores: FloatArray) -> tuple[CalibrationBin, ...]:
    index = np.minimum((scores * 10).astype(np.int64), 9)
    bins = []
    for i in range(10):
        mask = index == i
        count = int(mask.sum())
        bins.append(
            CalibrationBin(
                lower=i / 10,
                upper=(i + 1) / 10,
                count=count,
                mean_predicted=round(float(scores[mask].mean()), 6) if count else None,
                observed_rate=round(float(labels[mask].mean()), 6) if count else None,
            )
        )
    return tuple(bins)


def _best_single_feature(
    names: tuple[str, ...], x_val: npt.NDArray[np.float32], y_val: npt.NDArray[Any]
) -> tuple[int, float]:
    """The output column with the best validation AUC, and its sign (+1 or -1)."""
    best = (0, 1.0, -1.0)
    for j in range(len(names)):
        a = auc(y_val, x_val[:, j])
        sign, value = (1.0, a) if a >= 0.5 else (-1.0, 1.0 - a)
        if value > best[2]:
            best = (j, sign, value)
    return best[0], best[1]


def evaluate(
    labels: npt.NDArray[Any],
    scores: FloatArray,
    thresholds: Thresholds,
    baseline_feature: str,
    baseline_scores: FloatArray,
) -> Metrics:
    """Held-out metrics of a model at its thresholds, beside a one-feature baseline."""
    y = np.asarray(labels) == 1
    positives = int(y.sum())
    flagged = scores >= thresholds.review_at
    declined = scores >= thresholds.decline_at
    return Metrics(
        rows=len(y),
        positives=positives,
        auc=round(auc(y, scores), 6),
        baseline_auc=round(auc(y, baseline_scores), 6),
        baseline_feature=baseline_feature,
        # No flagged rows means no false alarms either: report precision 0, not undefined.
        precision_at_review=_rate(int((flagged & y).sum()), int(flagged.sum())) or 0.0,
        recall_at_review=_rate(int((flagged & y).sum()), positives) or 0.0,
        precision_at_decline=_rate(int((declined & y).sum()), int(declined.sum())) or 0.0,
        recall_at_decline=_rate(int((declined & y).sum()), positives) or 0.0,
        review_rate=round(float((flagged & ~declined).mean()), 6),
        decline_rate=round(float(declined.mean()), 6),
        brier=round(float(np.mean((scores - y) ** 2)), 6),
        calibration=_calibration(y.astype(np.float64), scores),
    )


def fairness(
    table: Table, rows: BoolArray, scores: FloatArray, thresholds: Thresholds
) -> dict[str, dict[str, GroupMetrics]]:
    """Per monitoring attribute (``m_<key>`` columns) and group, outcomes at review_at."""
    y = table["label"][rows] == 1
    flagged = scores >= thresholds.review_at
    report: dict[str, dict[str, GroupMetrics]] = {}
    for column in sorted(c for c in table if c.startswith("m_")):
        values = table[column][rows]
        groups: dict[str, GroupMetrics] = {}
        for group in sorted(set(values.tolist())):
            g = values == group
            pos, neg = int((g & y).sum()), int((g & ~y).sum())
            groups[str(group) or "<missing>"] = GroupMetrics(
                count=int(g.sum()),
                positive_rate=_rate(pos, int(g.sum())),
                flag_rate=_rate(int((g & flagged).sum()), int(g.sum())),
                tpr=_rate(int((g & y & flagged).sum()), pos),
                fpr=_rate(int((g & ~y & flagged).sum()), neg),
            )
        report[column[2:]] = groups
    return report


def histogram(values: npt.NDArray[Any]) -> Histogram:
    """Reference bins: 10 quantile bins (one per value when there are at most 10
    distinct values), with underflow and overflow bins on either side."""
    x = np.asarray(values, dtype=np.float64)
    # Infinite values (if a source ever overflows) count in the outer bins, not the edges.
    distinct = np.unique(x[np.isfinite(x)])
    if distinct.size == 0:
        raise ValueError("histogram needs at least one finite value")
    # The last edge sits just above the maximum, so that the maximum falls in the last
    # real bin and only values beyond the training range land in overflow.
    top = np.nextafter(distinct[-1], np.inf)
    if len(distinct) <= 10:
        edges_arr = np.append(distinct, top)
    else:
        inner = np.unique(np.quantile(x, np.linspace(0.0, 1.0, 11)))
        edges_arr = np.append(inner[:-1], top)
    counts = np.bincount(np.searchsorted(edges_arr, x, side="right"), minlength=len(edges_arr) + 1)
    proportions = [round(float(c) / len(x), 8) for c in counts]
    # Rounding may leave the sum a hair off 1: give the difference to the largest bin.
    proportions[int(np.argmax(counts))] += round(1.0 - sum(proportions), 8)
    return Histogram(edges=tuple(float(e) for e in edges_arr), proportions=tuple(proportions))


def golden_vectors(x: npt.NDArray[np.float32], scores: FloatArray) -> GoldenVectors:
    """Up to GOLDEN_ROWS rows of ``x`` (held-out, encoded) with their ONNX scores.

    Half are picked at evenly spaced score ranks (typical traffic, mostly low scores),
    half at or just above evenly spaced score values (the rare high scores, where a
    runtime difference would change a decision); duplicates count once. Deterministic:
    the same scores give the same rows.
    """
    n = len(scores)
    half = GOLDEN_ROWS // 2
    order = np.argsort(scores, kind="stable")
    by_rank = order[np.linspace(0, n - 1, half).round().astype(np.int64)]
    targets = np.linspace(float(scores.min()), float(scores.max()), half)
    sorted_scores = scores[order]
    nearest = np.clip(np.searchsorted(sorted_scores, targets), 0, n - 1)
    by_value = order[nearest]
    picked = np.unique(np.concatenate([by_rank, by_value]))
    return GoldenVectors(
        rows=tuple(tuple(float(v) for v in x[i]) for i in picked),
        scores=tuple(float(scores[i]) for i in picked),
        tolerance=ONNX_TOLERANCE,
    )


def reason_codes(spec: FeatureSpec) -> dict[str, ReasonCode]:
    """R01, R02, ... in spec order, with a description per feature."""
    return {
        f.name: ReasonCode(code=f"R{i:02d}", description=REASON_DESCRIPTIONS.get(f.name, f.name))
        for i, f in enumerate(spec.features, start=1)
    }


def code_version() -> str:
    """``riskwire <version>`` plus the git commit of the source tree when there is one.

    Only the commit (not the dirty state or a time) goes in, so reruns of the same
    commit give identical cards.
    """
    version = f"riskwire {gateway.__version__}"
    root = Path(gateway.__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    commit = done.stdout.strip()
    return f"{version} (git {commit})" if done.returncode == 0 and commit else version


# --------------------------------------------------------------------------- onnx


def normalize_onnx(model: onnx.ModelProto, graph_name: str) -> bytes:
    """Keep only the ``probabilities`` output, drop dead nodes and the converters'
    random graph name, so the same model always serializes to the same bytes."""
    graph = model.graph
    keep = [o for o in graph.output if o.name == OUTPUT_NAME]
    if len(keep) != 1:
        raise RuntimeError(
            f"ONNX export has outputs {[o.name for o in graph.output]}, none {OUTPUT_NAME!r}"
        )
    del graph.output[:]
    graph.output.extend(keep)
    needed = {OUTPUT_NAME}
    live = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            live.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))
    used = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)
    graph.name = graph_name
    model.doc_string = ""
    import onnx  # the [train] extra; serving never imports it

    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def onnx_scores(model_bytes: bytes, x: npt.NDArray[np.float32]) -> FloatArray:
    """Fraud probabilities from ONNX Runtime (one thread, CPU), as serving computes them."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    out = np.asarray(probabilities)
    if out.dtype != np.float32 or out.shape != (len(x), 2):
        raise RuntimeError(f"ONNX output is {out.dtype} {out.shape}, expected float32 [N, 2]")
    return out[:, SCORE_COLUMN].astype(np.float64)


def check_onnx(
    name: str, model_bytes: bytes, x: npt.NDArray[np.float32], native: FloatArray
) -> FloatArray:
    """ONNX Runtime scores of ``x``; raise unless they match the native model's.

    Raises:
        RuntimeError: any score differs by more than ONNX_TOLERANCE.
    """
    scores = onnx_scores(model_bytes, x)
    diff = np.abs(scores - native)
    worst = int(np.argmax(diff)) if len(diff) else 0
    if len(diff) and diff[worst] > ONNX_TOLERANCE:
        raise RuntimeError(
            f"{name}: ONNX Runtime disagrees with the native model by {diff[worst]:.3g} "
            f"(row {worst}: onnx {scores[worst]!r}, native {native[worst]!r}); "
            f"tolerance {ONNX_TOLERANCE}"
        )
    return scores


# --------------------------------------------------------------------------- models


def _float32_thresholds(booster: Any) -> Any:
    """The same trees with every split threshold rounded down to a float32.

    LightGBM splits on ``x <= t`` with t a double; ONNX's TreeEnsemble stores t as
    float32, rounded to nearest, which flips the split for a float32 x just above t.
    For float32 inputs ``x <= t`` holds exactly when ``x <= rounddown32(t)``, so this
    changes no prediction on the encoder's float32 rows and makes ONNX agree.
    """
    import lightgbm as lgb

    # tree_sizes gives each tree's byte length for parallel parsing; the rewrite changes
    # them, and LightGBM parses the trees one by one without it.
    lines = [
        line for line in booster.model_to_string().split("\n") if not line.startswith("tree_sizes=")
    ]
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            t = np.array(line[len("threshold=") :].split(" "), dtype=np.float64)
            t32 = t.astype(np.float32)
            up = t32.astype(np.float64) > t
            t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in t32.tolist())
    return lgb.Booster(model_str="\n".join(lines))


@dataclass(frozen=True)
class _Fitted:
    """A trained model, exported: what the card builder needs from either kind."""

    onnx_bytes: bytes
    native_predict: Callable[[npt.NDArray[np.float32]], FloatArray]
    parameters: dict[str, Any]


def _fit_gbdt(
    x: npt.NDArray[np.float32], y: npt.NDArray[Any], seed: int, names: tuple[str, ...]
) -> _Fitted:
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    params: dict[str, Any] = {
        "objective": "binary",
        "num_leaves": 31,
        "learning_rate": 0.05,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 255,
        # Reproducible: one thread, fixed seeds, deterministic histogram building.
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "seed": seed,
        "verbosity": -1,
    }
    rounds = 200
    names_lgb = [n.replace("=", "_").replace("<", "").replace(">", "") for n in names]
    dataset = lgb.Dataset(x, label=y, feature_name=names_lgb, free_raw_data=True)
    booster = _float32_thresholds(lgb.train(params, dataset, num_boost_round=rounds))
    onnx_model = convert_lightgbm(
        booster,
        initial_types=[(INPUT_NAME, FloatTensorType([None, x.shape[1]]))],
        zipmap=False,
        target_opset=15,
    )

    def predict(rows: npt.NDArray[np.float32]) -> FloatArray:
        return np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)

    return _Fitted(
        onnx_bytes=normalize_onnx(onnx_model, GBDT_NAME),
        native_predict=predict,
        parameters={"library": "lightgbm", "num_boost_round": rounds, **params},
    )


def _fit_mlp(x: npt.NDArray[np.float32], y: npt.NDArray[Any], seed: int) -> _Fitted:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    params: dict[str, Any] = {
        "hidden_layer_sizes": [32, 16],
        "activation": "relu",
        "solver": "adam",
        "alpha": 1e-4,
        "batch_size": 256,
        "learning_rate_init": 1e-3,
        "max_iter": 20,
        "random_state": seed,
    }
    mlp = MLPClassifier(
        **{**params, "hidden_layer_sizes": tuple(params["hidden_layer_sizes"])},
        shuffle=True,
        early_stopping=False,
    )
    # One BLAS thread: threaded reductions may add in a different order run to run.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        # A fixed epoch budget is the point (time and reproducibility); not converging
        # to sklearn's tolerance within it is expected.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x, y)
    onnx_model = convert_sklearn(
        mlp,
        initial_types=[(INPUT_NAME, FloatTensorType([None, x.shape[1]]))],
        options={id(mlp): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )

    def predict(rows: npt.NDArray[np.float32]) -> FloatArray:
        with threadpool_limits(limits=1):
            return np.asarray(mlp.predict_proba(rows)[:, 1], dtype=np.float64)

    return _Fitted(
        onnx_bytes=normalize_onnx(onnx_model, MLP_NAME),
        native_predict=predict,
        parameters={"library": "scikit-learn", "model": "MLPClassifier", **params},
    )


def _build_card(
    *,
    name: str,
    kind: str,
    description: str,
    spec: FeatureSpec,
    fitted: _Fitted,
    x: npt.NDArray[np.float32],
    table: Table,
    split: TimeSplit,
    digest: str,
    seed: int,
    generator: Mapping[str, Any] | None,
) -> ModelCard:
    y = table["label"]
    held = split.held_out
    native_held = fitted.native_predict(x[held])
    held_scores = check_onnx(name, fitted.onnx_bytes, x[held], native_held)
    val_scores = onnx_scores(fitted.onnx_bytes, x[split.validation])
    train_scores = onnx_scores(fitted.onnx_bytes, x[split.train])
    thresholds = choose_thresholds(val_scores)

    j, sign = _best_single_feature(spec.output_names, x[split.validation], y[split.validation])
    baseline = sign * x[held][:, j].astype(np.float64)
    metrics = evaluate(y[held], held_scores, thresholds, spec.output_names[j], baseline)
    if metrics.auc < metrics.baseline_auc + MIN_AUC_LIFT:
        raise RuntimeError(
            f"{name}: held-out AUC {metrics.auc} does not beat the one-feature baseline "
            f"{metrics.baseline_feature!r} (AUC {metrics.baseline_auc}) by {MIN_AUC_LIFT}"
        )
    x_train = x[split.train]
    return ModelCard(
        name=name,
        version=DEMO_VERSION,
        kind=kind,
        description=description,
        owner=DEMO_OWNER,
        inputs=TensorSpec(name=INPUT_NAME, dtype="float32", width=spec.width),
        outputs=Outputs(score=ScoreOutput(name=OUTPUT_NAME, column=SCORE_COLUMN)),
        feature_spec=spec.to_dict(),
        feature_names=spec.output_names,
        thresholds=thresholds,
        lineage=Lineage(
            training_data_digest=digest,
            rows=len(y),
            seed=seed,
            code_version=code_version(),
            parameters=fitted.parameters,
            generator=dict(generator) if generator is not None else None,
            split=Split(
                train_rows=int(split.train.sum()),
                validation_rows=int(split.validation.sum()),
                held_out_rows=int(held.sum()),
                validation_start_ms=split.validation_start_ms,
                held_out_start_ms=split.held_out_start_ms,
            ),
        ),
        metrics=metrics,
        fairness=fairness(table, held, held_scores, thresholds),
        reference=Reference(
            features={n: histogram(x_train[:, i]) for i, n in enumerate(spec.output_names)},
            score=histogram(train_scores),
        ),
        reason_codes=reason_codes(spec),
        golden=golden_vectors(x[held], held_scores),
        approval=DEMO_APPROVAL,
    )


def _write_version(out_dir: Path, card: ModelCard, onnx_bytes: bytes) -> Path:
    """Write ``<out>/<name>/<version>/`` whole or not at all (staged, then renamed)."""
    final = out_dir / card.name / str(card.version)
    staging = out_dir / card.name / f".{card.version}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / MODEL_FILE).write_bytes(onnx_bytes)
    card.dump(staging / CARD_FILE)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    return final


def train_demo_models(data: Path, out_dir: Path, seed: int) -> list[Path]:
    """Train fraud-gbdt v1 and fraud-mlp v1 on a generator CSV and write them.

    Args:
        data: the transactions CSV (``gateway.data.table`` layout, with labels).
        out_dir: the model repository root; writes ``<name>/1/{model.onnx, card.yaml}``.
        seed: seeds every random step; the same data, seed and commit give
            byte-identical files.

    Returns:
        The two version directories, champion first.

    Raises:
        RuntimeError: ONNX disagrees with the native model, or a model does not beat
            the one-feature baseline.
    """
    raw = Path(data).read_bytes()
    digest = data_digest(raw)
    table = table_from_csv_bytes(raw)
    if "label" not in table:
        raise ValueError(f"{data}: training data needs a label column")
    meta = read_dataset_meta(data, digest)
    generator = None if meta is None else {k: v for k, v in meta.items() if k != "digest"}
    split = split_by_time(table["timestamp_ms"])
    y = table["label"]
    for part in ("train", "validation", "held_out"):
        labels = y[getattr(split, part)]
        if labels.min(initial=1) == labels.max(initial=0):
            raise ValueError(f"{data}: the {part} split needs both fraud and legit rows")

    written: list[Path] = []

    def publish(
        name: str,
        kind: str,
        description: str,
        spec: FeatureSpec,
        x: npt.NDArray[np.float32],
        fitted: _Fitted,
    ) -> None:
        card = _build_card(
            name=name,
            kind=kind,
            description=description,
            spec=spec,
            fitted=fitted,
            x=x,
            table=table,
            split=split,
            digest=digest,
            seed=seed,
            generator=generator,
        )
        written.append(_write_version(Path(out_dir), card, fitted.onnx_bytes))

    gbdt_spec = gbdt_feature_spec()
    x = encode_table(gbdt_spec, table)
    gbdt = _fit_gbdt(x[split.train], y[split.train], seed, gbdt_spec.output_names)
    publish(
        GBDT_NAME,
        "lightgbm-gbdt",
        "Champion card-fraud model: gradient-boosted trees (200 x 31 leaves).",
        gbdt_spec,
        x,
        gbdt,
    )

    mlp_spec = mlp_feature_spec(table, split.train)
    x = encode_table(mlp_spec, table)
    mlp = _fit_mlp(x[split.train], y[split.train], seed)
    publish(
        MLP_NAME,
        "sklearn-mlp",
        "Challenger card-fraud model: a small multilayer perceptron (32-16).",
        mlp_spec,
        x,
        mlp,
    )
    return written


def demo_models_present(models_dir: Path) -> bool:
    """Whether both demo models have their model.onnx and card.yaml."""
    return all(
        (Path(models_dir) / name / str(DEMO_VERSION) / f).is_file()
        for name in (GBDT_NAME, MLP_NAME)
        for f in (MODEL_FILE, CARD_FILE)
    )


def prepare_demo_repository(models_dir: Path, data_dir: Path, rows: int, seed: int) -> None:
    """Generate data and train the demo models unless ``models_dir`` has them already.

    The data goes to ``<data_dir>/transactions-<rows>-<seed>.csv`` (reused when it is
    there and matches its sidecar).
    """
    if demo_models_present(models_dir):
        return
    data = Path(data_dir) / f"transactions-{rows}-{seed}.csv"
    if not (data.is_file() and read_dataset_meta(data, data_digest(data.read_bytes()))):
        write_dataset(data, rows, seed)
    train_demo_models(data, Path(models_dir), seed)
