"""The model card: ``models/<name>/<version>/card.yaml``, loaded, validated and written.

A card is everything the gateway and a model-risk reviewer need besides the ONNX file:
the feature spec the model was trained on, its input and output tensors, decision
thresholds, lineage, held-out metrics, fairness by monitoring attribute, reference
histograms for drift (bin edges frozen at training time), reason codes and approval.

Cards hold no wall-clock time: training the same data with the same seed at the same
commit gives a byte-identical card.yaml. The demo trainer approves its models itself
with a fixed approver and date (``DEMO_APPROVAL``); a real model is approved by
``riskwire models approve`` once its validation gates pass (gateway/models/governance.py),
never by the trainer.

The models are pydantic v2, frozen, and reject unknown keys, so a typo in a card fails
at load with the path of the key (``metrics.auc``) in the message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.features.spec import FeatureSpec, FeatureSpecError, parse_feature_spec

CARD_FILE = "card.yaml"
MODEL_FILE = "model.onnx"

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REASON_CODE = re.compile(r"^R\d{2,3}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class CardError(ValueError):
    """A card.yaml that cannot be loaded; the message names the file and the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """The model's one input: a float32 [N, width] tensor of encoded features."""

    name: str = Field(min_length=1)
    dtype: Literal["float32"]
    width: int = Field(ge=1)


class ScoreOutput(_Frozen):
    """Where the fraud probability is: column ``column`` of output ``name``."""

    name: str = Field(min_length=1)
    column: int = Field(ge=0)


class Outputs(_Frozen):
    """The model's outputs the gateway reads."""

    score: ScoreOutput


class Thresholds(_Frozen):
    """Decision thresholds on the score: REVIEW at ``review_at``, DECLINE at ``decline_at``."""

    review_at: float = Field(gt=0.0, lt=1.0, allow_inf_nan=False)
    decline_at: float = Field(gt=0.0, lt=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.review_at < self.decline_at:
            raise ValueError(
                f"review_at ({self.review_at}) must be below decline_at ({self.decline_at})"
            )
        return self


class Split(_Frozen):
    """How the training data was split by time (not at random)."""

    train_rows: Count
    validation_rows: Count
    held_out_rows: Count
    validation_start_ms: int
    held_out_start_ms: int


class Lineage(_Frozen):
    """Where the model came from: enough to retrain it bit for bit."""

    training_data_digest: str
    rows: Count
    seed: int = Field(ge=0)
    code_version: str = Field(min_length=1)
    parameters: dict[str, Any]
    generator: dict[str, Any] | None = None
    split: Split

    @field_validator("training_data_digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _DIGEST.match(value):
            raise ValueError(f"must be 'sha256:' and 64 lowercase hex digits, got {value!r}")
        return value


class CalibrationBin(_Frozen):
    """One of 10 equal-width score bins: mean predicted score against observed fraud rate."""

    lower: Probability
    upper: Probability
    count: Count
    mean_predicted: Probability | None
    observed_rate: Probability | None


class Metrics(_Frozen):
    """Held-out performance (the last days of the data, never seen in training)."""

    rows: Count
    positives: Count
    auc: Probability
    baseline_auc: Probability
    baseline_feature: str = Field(min_length=1)
    precision_at_review: Probability
    recall_at_review: Probability
    precision_at_decline: Probability
    recall_at_decline: Probability
    review_rate: Probability
    decline_rate: Probability
    brier: Probability
    calibration: tuple[CalibrationBin, ...] = Field(min_length=10, max_length=10)


class GroupMetrics(_Frozen):
    """Outcomes for one group of one monitoring attribute at ``review_at``."""

    count: Count
    positive_rate: Probability | None
    flag_rate: Probability | None  # REVIEW or DECLINE
    tpr: Probability | None  # None when the group has no positives
    fpr: Probability | None  # None when the group has no negatives


class Histogram(_Frozen):
    """Bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``: len(proportions) = len(edges) + 1."""

    edges: tuple[float, ...] = Field(min_length=1)
    proportions: tuple[float, ...]

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        if any(not math.isfinite(e) for e in self.edges):
            raise ValueError("edges must be finite")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges must be strictly increasing, got {list(self.edges)}")
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError(
                f"proportions must have len(edges) + 1 = {len(self.edges) + 1} entries "
                f"(underflow, bins, overflow), got {len(self.proportions)}"
            )
        if any(not (0.0 <= p <= 1.0) for p in self.proportions):
            raise ValueError("proportions must be in [0, 1]")
        if abs(sum(self.proportions) - 1.0) > 1e-6:
            raise ValueError(f"proportions must sum to 1, got {sum(self.proportions)}")
        return self


class Reference(_Frozen):
    """Training-time distributions the drift monitor compares live traffic with."""

    features: dict[str, Histogram]
    score: Histogram


class ReasonCode(_Frozen):
    """The code and wording an explanation uses for one feature."""

    code: str
    description: str = Field(min_length=1)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not _REASON_CODE.match(value):
            raise ValueError(f"must look like R01, got {value!r}")
        return value


class Approval(_Frozen):
    """Governance status; only ``approved`` models may take live traffic."""

    status: Literal["approved", "pending", "rejected"]
    approver: str | None = None
    date: str | None = None  # ISO 8601 date, YYYY-MM-DD

    @model_validator(mode="after")
    def _complete(self) -> Approval:
        if self.date is not None and not _DATE.match(self.date):
            raise ValueError(f"date must be YYYY-MM-DD, got {self.date!r}")
        if self.status != "pending" and not (self.approver and self.date):
            raise ValueError(f"status {self.status} needs an approver and a date")
        return self


class GoldenVectors(_Frozen):
    """Encoded held-out rows and the scores ONNX Runtime gave them at training.

    ``riskwire models validate`` scores the rows again and compares: a model file
    swapped, re-exported or run by a runtime that computes differently shows up as a
    difference beyond ``tolerance`` before the version takes traffic.
    """

    rows: tuple[tuple[float, ...], ...] = Field(min_length=1)
    scores: tuple[Probability, ...]
    tolerance: float = Field(gt=0.0, le=0.01, allow_inf_nan=False)
    """Largest absolute score difference accepted."""

    @model_validator(mode="after")
    def _shape(self) -> GoldenVectors:
        if len(self.scores) != len(self.rows):
            raise ValueError(f"{len(self.rows)} rows but {len(self.scores)} scores")
        widths = sorted({len(row) for row in self.rows})
        if len(widths) != 1:
            raise ValueError(f"rows must all have one width, got widths {widths}")
        if any(not math.isfinite(v) for row in self.rows for v in row):
            raise ValueError("rows must hold finite values")
        return self


DEMO_APPROVAL = Approval(status="approved", approver="riskwire-demo-trainer", date="2026-11-01")
"""Fixed for the demo models so that reruns give identical cards; not a real sign-off."""


class ModelCard(_Frozen):
    """card.yaml of one model version."""

    name: str
    version: int = Field(ge=1)
    kind: str = Field(min_length=1)
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    inputs: TensorSpec
    outputs: Outputs
    feature_spec: dict[str, Any]
    feature_names: tuple[str, ...]
    thresholds: Thresholds
    lineage: Lineage
    metrics: Metrics
    fairness: dict[str, dict[str, GroupMetrics]]
    reference: Reference
    reason_codes: dict[str, ReasonCode]
    golden: GoldenVectors | None = None
    """Absent from cards written before golden vectors were recorded."""
    approval: Approval

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"must be lowercase letters, digits, '.', '_' or '-' (at most 63), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        try:
            spec = parse_feature_spec(self.feature_spec)
        except FeatureSpecError as exc:
            raise ValueError(f"feature_spec: {exc}") from None
        if self.feature_names != spec.output_names:
            raise ValueError(
                "feature_names must equal the feature spec's output names in order; "
                f"spec gives {list(spec.output_names)}"
            )
        if self.inputs.width != spec.width:
            raise ValueError(
                f"inputs.width is {self.inputs.width} but the feature spec is {spec.width} wide"
            )
        unknown = sorted(set(self.reference.features) - set(spec.output_names))
        if unknown:
            raise ValueError(f"reference.features names unknown outputs {unknown}")
        spec_names = {f.name for f in spec.features}
        unknown = sorted(set(self.reason_codes) - spec_names)
        if unknown:
            raise ValueError(f"reason_codes name features not in the spec: {unknown}")
        codes = [r.code for r in self.reason_codes.values()]
        if len(set(codes)) != len(codes):
            raise ValueError(f"reason_codes reuse a code: {sorted(codes)}")
        if self.golden is not None and len(self.golden.rows[0]) != self.inputs.width:
            raise ValueError(
                f"golden.rows are {len(self.golden.rows[0])} wide, inputs.width is "
                f"{self.inputs.width}"
            )
        return self

    @property
    def spec(self) -> FeatureSpec:
        """The parsed feature spec (validated when the card was built)."""
        return parse_feature_spec(self.feature_spec)

    @property
    def approved(self) -> bool:
        """Whether the model may take live traffic."""
        return self.approval.status == "approved"

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-ready values in field order."""
        data: dict[str, Any] = self.model_dump(mode="json")
        if data.get("golden") is None:
            # A card without golden vectors dumps as it was written: no ``golden: null``.
            data.pop("golden", None)
        return data

    def to_yaml(self) -> str:
        """The card as YAML text; the same card always gives the same text."""
        text: str = yaml.safe_dump(
            self.to_dict(), sort_keys=False, default_flow_style=None, width=100, allow_unicode=True
        )
        return text

    def dump(self, path: str | Path) -> None:
        """Write the card to ``path`` (a card.yaml file)."""
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "card") -> ModelCard:
        """Validate a mapping as a card.

        Raises:
            CardError: naming ``source`` and each offending key.
        """
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise CardError(f"{source}: {_describe(exc)}") from None

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Load and validate a card.yaml.

        Raises:
            CardError: the file is missing, not YAML, or not a valid card.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CardError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise CardError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, Mapping):
            raise CardError(f"{path}: must be a mapping, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "card"
        message = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
