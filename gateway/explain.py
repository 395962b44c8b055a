"""Reason codes: which features moved a score, signed, named by the model card's codes.

Why occlusion against a reference, not TreeSHAP. Exact path-dependent TreeSHAP needs
each node's cover (the training rows that reached it). The demo champion's ONNX
TreeEnsembleClassifier carries ``nodes_hitrates``, but onnxmltools' LightGBM
converter writes 1.0 for every node (onnxmltools/convert/lightgbm/operator_converters/
LightGbm.py; all 12,200 nodes of fraud-gbdt v1 read 1.0) and the ONNX spec calls the
attribute an optional performance hint, so no cover survives conversion, and the
gateway serves the ONNX file alone, not the booster. The MLP has no trees at all.
One method for every model also means one meaning for ``contribution`` everywhere.
(Interventional TreeSHAP against a single reference point needs no cover and could be
computed from the ONNX trees, on the log-odds margin: a possible refinement for trees.)

The attribution, for one row ``x`` and one feature ``g`` of the card's spec::

    contribution_g = f(x) - f(x with g's columns set to the reference values)

in the model's score units (fraud probability), computed for a whole group of rows in
ONE ONNX Runtime call: the ``n`` rows themselves, then one copy per (row, feature)
where the row's value differs from the reference. A feature already at its reference
value contributes exactly 0 and costs no row, so a card-present transaction in the
modal channel and merchant category is cheaper to explain than an unusual one.
Unlike Shapley values, the contributions need not add up to f(x) - f(reference): an
interaction between two unusual features counts in each of them.

A "feature" is one entry of the feature spec, which is also what the card's
``reason_codes`` are keyed by: a one-hot feature's columns (``mcc=5411``, ...,
``mcc=<OOV>``) move together, replaced by the reference category's one-hot vector, and
a reason names ``mcc``, never one of its columns; a cyclical feature's sin and cos
move together too. Features without a reason code in the card are neither perturbed
nor reported.

Reference values, derived once per card from its reference histograms (the training
distribution, frozen in card.yaml), so that an explanation needs no training data:

- a numeric column: the lower edge of the histogram bin in which the cumulative share
  passes one half. The trainer's edges are the deciles for features with many values,
  so this is the median (up to ties), and one bin per value for features with at most
  10 distinct values, so this is the median value itself, one that actually occurs
  (a count of 0 transactions in the last hour, not 0.56 as interpolation would give);
- a one-hot feature: the category with the largest share of ones (the OOV slot when no
  column has any);
- a cyclical feature: the medians of sin and of cos, projected onto the unit circle,
  so that the reference is an hour that exists;
- a column without a histogram: what the encoder writes for a missing value.

Sign and order: a positive contribution raises the fraud score. Reasons answer "why is
this score as high as it is", the question a declined or reviewed transaction raises:
the positive contributions come first, largest first, then the negative ones, largest
magnitude first; zeros are left out; at most ``top_k``. Ties keep spec order.

Cost (``benchmarks/micro/explain.py``, 2-core VM shared with other work, p50 / p99):
a Score row needs ~12 occlusion rows on the demo models and explaining it adds
0.21 / 0.39 ms on the tree model and 0.14 / 0.28 ms on the MLP, inline: well inside an
8 ms route budget, so ``explain`` can stay on for every decision. A 64-row ScoreBatch
(~800 occlusion rows) adds ~6 ms on the tree model and ~1.1 ms on the MLP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from gateway.features.spec import (
    Cyclical,
    Differs,
    FeatureSpec,
    OneHot,
    feature_output_names,
    parse_feature_spec,
)
from gateway.models.card import Histogram, ModelCard, ReasonCode

if TYPE_CHECKING:
    from gateway.models.repository import LoadedModel

FloatRows = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float64]
ScoreFn = Callable[[FloatRows], Scores]

INLINE_MAX_ROWS = 128
"""Occlusion batches up to this many rows run on the event-loop thread, larger ones on
the model's worker thread. A Score row is at most 19 rows for the demo models (~12 on
average): inline it costs 0.14-0.21 ms at p50, and the hand-off to the worker thread
alone added 0.15-0.4 ms on an idle loop (benchmarks/micro/explain.py), more under load
(the batcher's note: up to 5 ms waiting for the GIL). A 64-row ScoreBatch is ~800 rows,
~6 ms on the tree model: too long to hold the loop that serves every other call, so it
goes to the worker thread, where ONNX Runtime releases the GIL. 128 rows hold the loop
for about 1 ms on the tree model."""


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason code of one decision: riskwire.v1.ReasonCode's fields.

    ``contribution`` is in score units: positive raises the fraud score.
    """

    code: str
    feature: str
    contribution: float
    description: str


def histogram_median(histogram: Histogram) -> float:
    """The lower edge of the bin in which the cumulative share passes one half.

    The underflow bin gives the first edge and the overflow bin the last (the nearest
    finite values).
    """
    cumulative = np.cumsum(histogram.proportions)
    # A share of one half at a bin's end is not "passed" (the median is the next edge):
    # card.yaml rounds proportions to 8 digits, so "one half" is 0.5 give or take 1e-6.
    k = int(np.searchsorted(cumulative, 0.5 + 1e-6, side="right"))
    k = min(k, len(histogram.proportions) - 1)
    edges = histogram.edges
    return float(edges[0] if k == 0 else edges[k - 1])


def share_of_ones(histogram: Histogram) -> float:
    """The share of values >= 0.5 in a 0/1 column: the bins whose lower edge is >= 0.5."""
    return float(
        sum(
            p
            for k, p in enumerate(histogram.proportions)
            if k > 0 and histogram.edges[k - 1] >= 0.5
        )
    )


def reference_row(spec: FeatureSpec, histograms: Mapping[str, Histogram]) -> FloatRows:
    """The reference value of every model input column (see the module docstring)."""
    values: list[float] = []
    for feature in spec.features:
        names = feature_output_names(feature)
        found = [histograms.get(name) for name in names]
        if isinstance(feature, OneHot):
            shares = [share_of_ones(h) if h is not None else 0.0 for h in found]
            best = int(np.argmax(shares)) if max(shares) > 0.0 else len(names) - 1
            values += [1.0 if i == best else 0.0 for i in range(len(names))]
            continue
        missing = 0.0 if isinstance(feature, Differs) else feature.default
        column = [histogram_median(h) if h is not None else missing for h in found]
        if isinstance(feature, Cyclical) and None not in found:
            norm = float(np.hypot(column[0], column[1]))
            if norm > 0.0:
                column = [column[0] / norm, column[1] / norm]
        values += column
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _Feature:
    name: str
    code: str
    description: str
    start: int
    stop: int


class Explainer:
    """Reason codes for one model card: its features, reference values and codes.

    Built once per loaded model version (``Explainers``); stateless after that, so
    calls may share it.

    Args:
        spec: the card's feature spec (the model's input columns, in order).
        histograms: reference histograms by output column name (``card.reference``).
        reason_codes: code and description by spec feature name (``card.reason_codes``).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        histograms: Mapping[str, Histogram],
        reason_codes: Mapping[str, ReasonCode],
    ) -> None:
        self.reference = reference_row(spec, histograms)
        features = []
        start = 0
        for feature in spec.features:
            stop = start + len(feature_output_names(feature))
            rc = reason_codes.get(feature.name)
            if rc is not None:
                features.append(_Feature(feature.name, rc.code, rc.description, start, stop))
            start = stop
        self.width = start
        self._features = tuple(features)
        mask = np.zeros((len(features), start), dtype=bool)
        for g, f in enumerate(features):
            mask[g, f.start : f.stop] = True
        self._mask = mask
        """[G, width]: which columns each explained feature owns."""
        self._columns = np.ascontiguousarray(mask.T, dtype=np.float32)
        """[width, G]: the same, for counting differing columns per feature."""

    @classmethod
    def from_card(cls, card: ModelCard) -> Explainer:
        return cls(
            parse_feature_spec(card.feature_spec), card.reference.features, card.reason_codes
        )

    @property
    def features(self) -> tuple[str, ...]:
        """The explained features (those with a reason code), in spec order."""
        return tuple(f.name for f in self._features)

    def occlusion_rows(
        self, features: FloatRows
    ) -> tuple[FloatRows, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """The rows of the one model call that explains ``features`` (float32 [n, width]).

        Returns:
            ``(rows, row_of, feature_of)``: ``rows[:n]`` are ``features`` themselves;
            ``rows[n + p]`` is row ``row_of[p]`` with feature ``feature_of[p]`` at its
            reference values, for every (row, feature) whose value differs from them.
        """
        n = features.shape[0]
        if features.ndim != 2 or features.shape[1] != self.width:
            raise ValueError(f"features must be [n, {self.width}], got {list(features.shape)}")
        # [n, width] @ [width, G]: how many of each feature's columns differ. A float32
        # product goes through BLAS, several times faster than a bool one at 64 rows.
        differs = (features != self.reference).astype(np.float32)
        row_of, feature_of = np.nonzero(differs @ self._columns)
        rows = np.empty((n + row_of.size, self.width), dtype=np.float32)
        rows[:n] = features
        rows[n:] = np.where(self._mask[feature_of], self.reference, features[row_of])
        return rows, row_of, feature_of

    def contributions_from(
        self,
        scores: Scores,
        n: int,
        row_of: npt.NDArray[np.intp],
        feature_of: npt.NDArray[np.intp],
    ) -> Scores:
        """float64 [n, G] contributions from the scores of ``occlusion_rows``' rows."""
        out = np.zeros((n, len(self._features)), dtype=np.float64)
        out[row_of, feature_of] = scores[row_of] - scores[n:]
        return out

    def contributions(self, score: ScoreFn, features: FloatRows) -> Scores:
        """float64 [n, G] contributions, in one call of ``score`` (the model's runtime)."""
        rows, row_of, feature_of = self.occlusion_rows(features)
        return self.contributions_from(score(rows), features.shape[0], row_of, feature_of)

    def reasons(self, contributions: Scores, top_k: int) -> list[tuple[Reason, ...]]:
        """Per row, at most ``top_k`` reasons: positive first, then negative, zeros left out."""
        n = contributions.shape[0]
        if top_k <= 0 or not self._features:
            return [() for _ in range(n)]
        kind = np.where(contributions > 0, 0, np.where(contributions < 0, 1, 2))
        # lexsort sorts by the last key first and is stable: spec order breaks ties.
        order = np.lexsort((-np.abs(contributions), kind), axis=-1)[:, :top_k]
        out = []
        for i in range(n):
            picked = []
            for g in order[i].tolist():
                if kind[i, g] == 2:
                    break  # zeros sort last: the rest are zeros too
                f = self._features[g]
                picked.append(Reason(f.code, f.name, float(contributions[i, g]), f.description))
            out.append(tuple(picked))
        return out

    def explain(self, score: ScoreFn, features: FloatRows, top_k: int) -> list[tuple[Reason, ...]]:
        """Reasons for each row of ``features``, in one call of ``score``."""
        return self.reasons(self.contributions(score, features), top_k)


class Explainers:
    """One :class:`Explainer` per loaded model version, built from its card on first use.

    Keyed by (name, version) and checked against the card object, so a version that is
    unloaded and loaded again gets a fresh one; an entry holds the card-derived values
    only (a few KB), never the session.
    """

    def __init__(self, inline_max_rows: int = INLINE_MAX_ROWS) -> None:
        self.inline_max_rows = inline_max_rows
        self._by_version: dict[tuple[str, int], tuple[ModelCard, Explainer]] = {}

    def get(self, card: ModelCard) -> Explainer:
        key = (card.name, card.version)
        entry = self._by_version.get(key)
        if entry is None or entry[0] is not card:
            entry = (card, Explainer.from_card(card))
            self._by_version[key] = entry
        return entry[1]

    async def explain(
        self, model: LoadedModel, features: FloatRows, top_k: int
    ) -> list[tuple[Reason, ...]]:
        """Reasons for ``features`` (the rows ``model`` just scored), one model call.

        The call runs on the event loop up to ``inline_max_rows`` occlusion rows, on the
        model's worker thread beyond (see INLINE_MAX_ROWS).
        """
        explainer = self.get(model.card)
        rows, row_of, feature_of = explainer.occlusion_rows(features)
        if rows.shape[0] <= self.inline_max_rows:
            scores = model.runtime.score(rows)
        else:
            scores = await model.batcher.run_in_worker(model.runtime.score, rows)
        n = features.shape[0]
        return explainer.reasons(explainer.contributions_from(scores, n, row_of, feature_of), top_k)
