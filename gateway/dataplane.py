"""The one data plane behind every transport: route, encode, batch, decide.

The gRPC servicers convert wire messages into a :class:`TransactionBatch` and call
:meth:`DataPlane.score`; they never decide anything themselves.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, get_args

import numpy as np
import numpy.typing as npt
from opentelemetry.metrics import Meter, Observation

from gateway.audit.writer import AuditUnavailable
from gateway.decisions import DecisionSource as DecisionSource  # re-exported
from gateway.errors import (
    BackendFailure,
    DeadlineExpired,
    ErrorKind,
    GatewayError,
    Overloaded,
    invalid,
)
from gateway.explain import Explainers, Reason
from gateway.features.transactions import TransactionSource
from gateway.models.repository import LoadedModel, ModelRepository
from gateway.telemetry.outcomes import PredictionRecord
from router.routes import (
    ArmRole,
    Assignment,
    Decision,
    RouteSpec,
    RouteTable,
    StickyKey,
    decide,
)
from router.store import RouteStore, VersionedTable

if TYPE_CHECKING:
    from gateway.audit.sink import ChainAuditSink
    from gateway.canary import CanaryController
    from gateway.shadow import ShadowRunner
    from gateway.telemetry.drift import DriftMonitors
    from gateway.telemetry.outcomes import OutcomeStore

log = logging.getLogger("riskwire.dataplane")

DRAIN_TIMEOUT_S = 30.0
"""How long ``unload_model`` waits for a version's in-flight calls before it stops
the version's batcher anyway (rows already queued still run)."""

STICKY_KEYS: tuple[StickyKey, ...] = get_args(StickyKey)
"""Transaction fields a route may name as its sticky key."""


class FallbackReason(enum.StrEnum):
    TIMEOUT = "TIMEOUT"
    OVERLOAD = "OVERLOAD"
    BACKEND_ERROR = "BACKEND_ERROR"
    AUDIT_BACKLOG = "AUDIT_BACKLOG"
    """The audit queue stayed full for ``audit.block_ms``: the decision could not be
    recorded, so the route's fallback answers (audit.on_full: block_then_fallback)."""


_TRIGGER = {
    FallbackReason.TIMEOUT: "timeout",
    FallbackReason.OVERLOAD: "overload",
    FallbackReason.BACKEND_ERROR: "backend_error",
}


@dataclass(frozen=True, slots=True)
class TransactionBatch:
    """Validated transactions: what the router reads, and what the encoders read."""

    transaction_ids: Sequence[str]
    routing_keys: Sequence[Mapping[str, str]]
    """Per transaction, what the router reads: `channel` (the enum name, "" when unset)
    and STICKY_KEYS, as plain strings."""
    transactions: TransactionSource
    """The transactions as the request parser left them (protobuf Transactions or the
    native ParsedBatch), opaque to the data plane: they become features in one place
    only, `Encoder.encode_transactions`."""
    amounts_usd: Callable[[], Sequence[float]] = lambda: ()
    """Each transaction's amount in USD, for routes that match on it; computed only when
    the table in force has such a route (a call, so that others never pay for it)."""
    monitoring_attributes: Callable[[], Sequence[Mapping[str, str]]] = lambda: ()
    """Each transaction's monitoring_attributes (fairness groups), for the outcome store
    only: they never reach a model."""

    def __len__(self) -> int:
        return len(self.transaction_ids)


@dataclass(frozen=True, slots=True)
class ScoreOptions:
    explain: bool = False
    route: str = ""
    """Force a route by name; empty: the first route that matches."""
    realtime: bool = True
    """Apply the route's ``deadline_ms`` budget (Score, ScoreStream). Bulk ScoreBatch
    calls are bounded by the caller's own gRPC deadline alone: a per-authorization
    budget of a few ms means nothing for 1,000 transactions."""


class ScoreResult(NamedTuple):
    """The answer for one transaction, transport-neutral.

    A NamedTuple, not a frozen dataclass: one is built per transaction on the serving
    path, and a frozen dataclass's ``__init__`` (an ``object.__setattr__`` per field)
    costs ~3 us against ~1 us here (benchmarks/micro/handler.py --batch-size).
    """

    transaction_id: str
    score: float
    decision: Decision
    model_name: str
    model_version: int
    arm: ArmRole
    source: DecisionSource
    route: str
    config_version: int
    fallback_reason: FallbackReason | None = None
    reason_codes: tuple[Reason, ...] = ()
    """Why the score is what it is (gateway/explain.py), when the request or the route
    asks; fallback answers carry none."""


def parse_version(version: str) -> int | None:
    """``""`` means the newest loaded version; otherwise a positive integer."""
    if not version:
        return None
    if not version.isdigit() or int(version) < 1:
        raise invalid(f"model_version must be a positive integer or empty, got {version!r}")
    return int(version)


@dataclass(frozen=True, slots=True)
class GroupStages:
    """Where one (route, model version) group of a call spent its time.

    ``perf_counter_ns`` stamps: encoding ran from ``encode_start`` to ``encode_end``;
    the rows then waited in the batcher until ``infer_start`` and the model call ended
    at ``infer_end``. Both infer stamps are 0 when the model never ran (the queue was
    full, the deadline passed, or the call was refused).
    """

    route: str
    model: str
    version: int
    arm: str
    rows: int
    encode_start: int
    encode_end: int
    infer_start: int
    infer_end: int


class HasThresholds(Protocol):
    """Thresholds from a route or from a model card."""

    @property
    def review_at(self) -> float: ...

    @property
    def decline_at(self) -> float: ...


def decide_threshold(score: float, thresholds: HasThresholds) -> Decision:
    """APPROVE below review_at, DECLINE at or above decline_at, REVIEW between."""
    if score >= thresholds.decline_at:
        return Decision.DECLINE
    if score >= thresholds.review_at:
        return Decision.REVIEW
    return Decision.APPROVE


class DataPlane:
    """Scores transactions against the route table in force."""

    def __init__(
        self,
        repository: ModelRepository,
        routes: RouteStore,
        bucket_of: Callable[[str, str], int],
        shadows: ShadowRunner | None = None,
        canary: CanaryController | None = None,
        drift: DriftMonitors | None = None,
        audit: ChainAuditSink | None = None,
        audit_fails_calls: bool = False,
        outcomes: OutcomeStore | None = None,
    ) -> None:
        self.repository = repository
        self.routes = routes
        self._bucket_of = bucket_of
        self.shadows = shadows
        """Queues the shadow arms after the primary results (never awaited); None: off."""
        self.canary = canary
        """Counts the canary routes' answers for the canary controller; None: off."""
        self.drift = drift
        self.audit = audit
        """Records every answered call's decisions before the answer goes out; None: off."""
        self._audit_fails_calls = audit_fails_calls
        """When the audit queue stays full: True answers the call with the error
        (RESOURCE_EXHAUSTED), False with the route's fallback (AUDIT_BACKLOG)."""
        """Drift monitors of the loaded versions (fed with each batch's rows and scores);
        None: off."""
        self.outcomes = outcomes
        """Logged predictions for the delayed-label join (ReportOutcome), performance and
        fairness reports; None: off."""
        self.explainers = Explainers()
        self.explain_shed = 0
        """Transactions answered without the reason codes asked for: work was queued
        for their model (load sheds explanations before live scores)."""
        self.explain_failures = 0
        """Transactions whose explanation raised (answered without reason codes)."""
        """Reason codes: one explainer per model version, built on first use."""
        self._in_flight: dict[int, int] = {}
        """id(LoadedModel) -> calls holding it (see ``hold``); absent when none."""
        self._drained: dict[int, asyncio.Event] = {}
        """id(LoadedModel) -> set when its last call ends; only while an unload waits."""
        self._unloads: set[asyncio.Task[None]] = set()

    def register_metrics(self, meter: Meter) -> None:
        """The data plane's own counters as OpenTelemetry observable instruments."""
        meter.create_observable_counter(
            "riskwire.explanations.skipped",
            [
                lambda _: [
                    Observation(self.explain_shed, {"reason": "load"}),
                    Observation(self.explain_failures, {"reason": "error"}),
                ]
            ],
            unit="",
            description="Transactions answered without the reason codes asked for: shed "
            "under load (work queued for their model) or the explanation failed",
        )

    async def score(
        self,
        batch: TransactionBatch,
        options: ScoreOptions,
        caller_deadline: float | None = None,
        stages: list[GroupStages] | None = None,
    ) -> list[ScoreResult]:
        """Score every transaction of ``batch``, in order.

        Args:
            batch: validated transactions.
            options: explain / forced route.
            caller_deadline: the gRPC deadline as ``time.monotonic()`` seconds.
            stages: when given, receives one :class:`GroupStages` per group scored
                (telemetry and traces); None skips the timing altogether.

        Raises:
            GatewayError: NOT_FOUND for an unknown route or model; RESOURCE_EXHAUSTED,
                DEADLINE_EXCEEDED or INTERNAL where the route's fallback policy does
                not cover the failure.
        """
        started = time.perf_counter()
        versioned = self.routes.current
        n = len(batch)
        table = versioned.table
        if table.matches_amount and not options.route:
            amounts = batch.amounts_usd()
            assignments = [
                self._assign(table, keys, options.route, amount)
                for keys, amount in zip(batch.routing_keys, amounts, strict=True)
            ]
        else:
            assignments = [self._assign(table, keys, options.route) for keys in batch.routing_keys]
        # Group rows by route and model version: one batcher call each, under that
        # route's budget.
        groups: dict[tuple[str, str, int], list[int]] = {}
        for i, assignment in enumerate(assignments):
            arm = assignment.arm
            groups.setdefault((assignment.route.name, arm.model, arm.version), []).append(i)
        now = time.monotonic()
        results: list[ScoreResult | None] = [None] * n
        models = []
        waits = []
        timings: list[list[int]] = []
        explained: list[list[tuple[Reason, ...]] | None] = []
        for (_, name, version), rows in groups.items():
            model = self.repository.get(name, version)
            route = assignments[rows[0]].route
            budget = now + route.deadline_ms / 1000.0 if options.realtime else math.inf
            deadline = budget if caller_deadline is None else min(budget, caller_deadline)
            models.append(model)
            timing: list[int] | None = None
            if stages is not None:
                timing = []
                timings.append(timing)
            reasons: list[tuple[Reason, ...]] | None = None
            if options.explain or route.explain:
                reasons = []  # filled by _score_group once the scores are in
            explained.append(reasons)
            waits.append(
                self._score_group(
                    model, batch, rows, assignments, deadline, budget, timing, reasons
                )
            )
        # Held from here, in the step that resolved them (no await since), to the end:
        # an unload started meanwhile waits for this call (see unload_model).
        for model in models:
            self.hold(model)
        try:
            # One group per call is the common case: no gather task for it.
            outcomes = [await waits[0]] if len(waits) == 1 else await asyncio.gather(*waits)
        except GatewayError:
            if self.canary is not None:
                # A failure the route's fallback policy does not cover: an error of
                # each row's arm, for the canary guards.
                self.canary.record_failure(
                    versioned, [(a.route.name, a.arm.role) for a in assignments]
                )
            raise
        finally:
            for model in models:
                self.release(model)
        for model, rows, (scores, failure), reasons in zip(
            models, groups.values(), outcomes, explained, strict=True
        ):
            for j, i in enumerate(rows):
                assignment = assignments[i]
                if failure is not None:
                    results[i] = self._fallback(
                        batch, i, assignment, failure, versioned.config_version
                    )
                    continue
                assert scores is not None
                score = float(scores[j])
                thresholds = assignment.route.decision or model.card.thresholds
                results[i] = ScoreResult(
                    transaction_id=batch.transaction_ids[i],
                    score=score,
                    decision=decide_threshold(score, thresholds),
                    model_name=model.name,
                    model_version=model.version,
                    arm=assignment.arm.role,
                    source=DecisionSource.MODEL,
                    route=assignment.route.name,
                    config_version=versioned.config_version,
                    reason_codes=reasons[j] if reasons else (),
                )
        answered = [r for r in results if r is not None]
        if stages is not None:
            for (route_name, name, version), rows, timing in zip(
                groups, groups.values(), timings, strict=True
            ):
                encode_start, encode_end, *ran = timing
                infer_start, infer_end = (ran[0], ran[1]) if ran else (0, 0)
                stages.append(
                    GroupStages(
                        route_name,
                        name,
                        version,
                        assignments[rows[0]].arm.role,
                        len(rows),
                        encode_start,
                        encode_end,
                        infer_start,
                        infer_end,
                    )
                )
        if self.canary is not None:
            self.canary.record_results(versioned, answered, time.perf_counter() - started)
        if self.shadows is not None:
            # Queued, never awaited: the shadows run after this call has answered.
            self.shadows.offer(batch, assignments, answered)
        if self.audit is not None:
            answered = await self._audit(batch, assignments, answered, versioned, started)
        if self.outcomes is not None:
            self._log_predictions(batch, answered)
        return answered

    async def _audit(
        self,
        batch: TransactionBatch,
        assignments: list[Assignment],
        answered: list[ScoreResult],
        versioned: VersionedTable,
        started: float,
    ) -> list[ScoreResult]:
        """Queue the call's decision records; nothing is answered that is not queued.

        A full queue is waited on for ``audit.block_ms``; then, by policy, the call
        fails (RESOURCE_EXHAUSTED) or every transaction gets its route's fallback
        (reason AUDIT_BACKLOG), counted in riskwire_audit_queue_full_total.
        """
        assert self.audit is not None
        latency_us = int((time.perf_counter() - started) * 1e6)
        item = self.audit.decisions_item(batch, answered, latency_us)
        if self.audit.offer_decisions(item):
            return answered
        try:
            await self.audit.record_decisions(item)
        except AuditUnavailable:
            if self._audit_fails_calls:
                raise
            return [
                self._fallback(batch, i, a, FallbackReason.AUDIT_BACKLOG, versioned.config_version)
                for i, a in enumerate(assignments)
            ]
        return answered

    def _log_predictions(self, batch: TransactionBatch, answered: list[ScoreResult]) -> None:
        """Queue the answers for the outcome store (labels join them later); O(n), no I/O."""
        assert self.outcomes is not None
        now = time.time()
        amounts = batch.amounts_usd()
        attributes = batch.monitoring_attributes()
        record = PredictionRecord.from_result
        self.outcomes.log_predictions(
            [
                record(r, amount, attrs, now)
                for r, amount, attrs in zip(answered, amounts, attributes, strict=False)
            ]
        )

    async def load_model(
        self, name: str, version: int | None = None, actor: str = ""
    ) -> LoadedModel:
        """Load, warm and start a model version; the newest on disk when ``version`` is None.

        The version is visible to routing and to the route check only once warm, so
        the first call routed to it never pays the warm-up. Loading a version that is
        already loaded returns it.

        Raises:
            GatewayError: NOT_FOUND (no such model or version on disk),
                INVALID_ARGUMENT (a malformed name or version), FAILED_PRECONDITION
                (a card or graph that does not load, with the reason), UNAVAILABLE
                (that version is unloading).
        """
        loaded = {m.key for m in self.repository.loaded()}
        model = await self.repository.load(name, version)
        if self.drift is not None:
            self.drift.get_or_create(model.card)  # GetDrift lists it before traffic does
        if self.audit is not None and model.key not in loaded:
            self.audit.model_loaded(model, actor=actor, reason="LoadModel")
        return model

    async def unload_model(
        self,
        name: str,
        version: int | None = None,
        *,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        actor: str = "",
    ) -> None:
        """Unload one version, or every loaded version of ``name`` when None, draining it.

        Ordering, all on the event loop: (1) refuse while the route table in force
        sends traffic to it (an arm or a shadow); (2) in the same step, with no await
        between, hide it from ``repository.get``: from then on the route check
        (``Server._route_problems``) refuses any table naming it, and no new call can
        resolve it; (3) check the table in force again (a no-op on one loop; it
        guards against a writer on another thread) and put the model back if a
        table now uses it; (4) wait up to ``drain_timeout_s`` for the calls that
        resolved it earlier to end; (5) stop its batcher (queued rows still run) and
        drop the session. Steps 4-5 finish even if the caller goes away.

        Raises:
            GatewayError: NOT_FOUND (not loaded); FAILED_PRECONDITION naming the
                routes that use it.
        """
        self._refuse_if_routed(name, version)
        models = self.repository.begin_unload(name, version)
        try:
            self._refuse_if_routed(name, version)
        except GatewayError:
            self.repository.restore(models)
            raise
        task = asyncio.get_running_loop().create_task(
            self._drain_and_close(models, drain_timeout_s), name=f"unload-{name}"
        )
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)
        await asyncio.shield(task)
        if self.audit is not None:
            for model in models:
                self.audit.model_unloaded(
                    model.name, model.version, actor=actor, reason="UnloadModel"
                )

    def hold(self, model: LoadedModel) -> None:
        """Count a call that resolved ``model``; pair with :meth:`release`.

        Call it in the same step as ``repository.get`` (no await between), so that an
        unload starting later waits for the call.
        """
        key = id(model)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def release(self, model: LoadedModel) -> None:
        """The end of a call that :meth:`hold` counted."""
        key = id(model)
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
            return
        # Dropped at zero: the id stays ours while a caller holds the model, no longer.
        del self._in_flight[key]
        drained = self._drained.get(key)
        if drained is not None:
            drained.set()

    def in_flight(self, model: LoadedModel) -> int:
        """Calls now holding ``model``."""
        return self._in_flight.get(id(model), 0)

    def _refuse_if_routed(self, name: str, version: int | None) -> None:
        table = self.routes.current.table
        users = sorted(
            route.name
            for route in table.routes
            if any(m == name and version in (None, v) for m, v in route.targets())
        )
        if users:
            what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
            raise GatewayError(
                ErrorKind.FAILED_PRECONDITION,
                f"{what} serves route(s) {users} (as an arm or a shadow) in config_version "
                f"{self.routes.current.config_version}: change the routes before unloading it",
            )

    async def _drain_and_close(self, models: Sequence[LoadedModel], timeout_s: float) -> None:
        waiting = {id(m): m for m in models if id(m) in self._in_flight}
        events = {key: self._drained.setdefault(key, asyncio.Event()) for key in waiting}
        try:
            async with asyncio.timeout(timeout_s):
                for event in events.values():
                    await event.wait()
        except TimeoutError:
            log.warning(
                "unload: %s still had calls in flight after %.1f s; stopping anyway",
                [m.key for key, m in waiting.items() if key in self._in_flight],
                timeout_s,
            )
        finally:
            for key in events:
                self._drained.pop(key, None)
        await self.repository.finish_unload(models)
        if self.drift is not None:
            for model in models:
                self.drift.remove(model.name, model.version)  # its series leave /metrics

    async def infer_tensors(
        self,
        name: str,
        version: str,
        inputs: Sequence[Tensor],
        outputs: Sequence[str],
        caller_deadline: float | None,
    ) -> tuple[LoadedModel, list[Tensor]]:
        """Run a loaded model on raw tensors (the Open Inference Protocol's ModelInfer).

        The model's input must be FP32 [N, width]; outputs default to all of them.
        """
        model = self.repository.get(name, parse_version(version))
        expected = {t.name: t for t in model.runtime.inputs}
        given = {t.name: t for t in inputs}
        missing = sorted(set(expected) - set(given))
        if missing:
            raise invalid(f"model {model.key}: missing input(s) {missing}")
        unknown = sorted(set(given) - set(expected))
        if unknown:
            raise invalid(
                f"model {model.key}: no input named {unknown}; inputs are {sorted(expected)}"
            )
        feeds = {}
        for tensor in inputs:
            spec = expected[tensor.name]
            if tensor.datatype != spec.dtype:
                raise invalid(
                    f"input {tensor.name!r}: datatype {tensor.datatype}, model expects {spec.dtype}"
                )
            if tensor.data.ndim != len(spec.shape) or any(
                want not in (-1, got)
                for want, got in zip(spec.shape, tensor.data.shape, strict=True)
            ):
                raise invalid(
                    f"input {tensor.name!r}: shape {list(tensor.data.shape)} does not fit "
                    f"the model's {list(spec.shape)}"
                )
            feeds[tensor.name] = tensor.data
        known_outputs = {t.name: t for t in model.runtime.outputs}
        for out in outputs:
            if out not in known_outputs:
                names = sorted(known_outputs)
                raise invalid(f"model {model.key}: no output named {out!r}; outputs are {names}")
        if caller_deadline is not None and caller_deadline <= time.monotonic():
            raise DeadlineExpired("the call's deadline passed before the model ran")
        self.hold(model)  # no await since `get`: an unload waits for this call
        try:
            values = await model.batcher.run_in_worker(model.runtime.run, feeds, outputs)
        except Exception as exc:  # ONNX Runtime's own errors carry the model's reason
            raise BackendFailure(f"model {model.key} failed: {exc}") from exc
        finally:
            self.release(model)
        return model, [
            Tensor(out, known_outputs[out].dtype, value) for out, value in values.items()
        ]

    def _assign(
        self,
        table: RouteTable,
        keys: Mapping[str, str],
        route_name: str,
        amount_usd: float = math.nan,
    ) -> Assignment:
        try:
            return decide(table, keys, self._bucket_of, route_name, amount_usd=amount_usd)
        except LookupError as exc:
            raise GatewayError(ErrorKind.NOT_FOUND, str(exc)) from exc

    async def _score_group(
        self,
        model: LoadedModel,
        batch: TransactionBatch,
        rows: list[int],
        assignments: list[Assignment],
        deadline: float,
        budget: float,
        timing: list[int] | None,
        reasons: list[tuple[Reason, ...]] | None = None,
    ) -> tuple[npt.NDArray[np.float64] | None, FallbackReason | None]:
        selected = None if len(rows) == len(batch) else rows
        if timing is not None:
            timing.append(time.perf_counter_ns())
        features = model.encoder.encode_transactions(batch.transactions, rows=selected)
        if timing is not None:
            timing.append(time.perf_counter_ns())
        try:
            # The batcher arms the deadline as a loop timer: the future fails with
            # DeadlineExpired when it passes, and a row still queued then never runs.
            # It appends the model call's start and end to `timing`.
            future = model.batcher.submit(features, deadline, timing)
        except Overloaded:
            return None, self._covered(assignments[rows[0]].route, FallbackReason.OVERLOAD)
        try:
            scores = await future
        except DeadlineExpired as exc:
            if deadline < budget:
                # The caller's own deadline passed: nobody is waiting for a fallback.
                raise DeadlineExpired(
                    f"the call's deadline passed before model {model.key} answered"
                ) from exc
            return None, self._covered(assignments[rows[0]].route, FallbackReason.TIMEOUT)
        except BackendFailure:
            return None, self._covered(assignments[rows[0]].route, FallbackReason.BACKEND_ERROR)
        if self.drift is not None:
            self.drift.observe(model.card, features, scores)  # O(1): binned off this path
        if reasons is not None:
            if model.batcher.queued_rows:
                # Under load explanations go before live scores do (after shadows):
                # the answer goes out without reason codes, counted.
                self.explain_shed += len(rows)
            else:
                # One more model call for this group's rows (gateway/explain.py).
                top_k = assignments[rows[0]].route.explain_top_k
                try:
                    reasons += await self.explainers.explain(model, features, top_k)
                except Exception:  # the score stands; its explanation is lost, logged
                    log.exception("explaining %s failed; answered without reasons", model.key)
                    self.explain_failures += len(rows)
        return scores, None

    @staticmethod
    def _covered(route: RouteSpec, reason: FallbackReason) -> FallbackReason:
        """Return ``reason`` when the route answers it with a fallback, else raise."""
        if _TRIGGER[reason] in route.fallback.on:
            return reason
        if reason is FallbackReason.OVERLOAD:
            raise Overloaded(f"route {route.name!r}: the model's queue is full")
        if reason is FallbackReason.TIMEOUT:
            raise DeadlineExpired(
                f"route {route.name!r}: no model answer within {route.deadline_ms} ms"
            )
        raise BackendFailure(f"route {route.name!r}: the model failed")

    @staticmethod
    def _fallback(
        batch: TransactionBatch,
        i: int,
        assignment: Assignment,
        reason: FallbackReason,
        config_version: int,
    ) -> ScoreResult:
        return ScoreResult(
            transaction_id=batch.transaction_ids[i],
            score=0.0,
            decision=assignment.route.fallback.decision,
            model_name=assignment.arm.model,
            model_version=assignment.arm.version,
            arm=assignment.arm.role,
            source=DecisionSource.FALLBACK,
            route=assignment.route.name,
            config_version=config_version,
            fallback_reason=reason,
        )


_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named tensor of the Open Inference Protocol, decoded."""

    name: str
    datatype: str
    data: npt.NDArray[np.generic]


def decode_tensor(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """Build a tensor from little-endian row-major bytes, checking size against shape."""
    dtype = _DTYPES.get(datatype)
    if dtype is None:
        raise invalid(f"input {name!r}: datatype {datatype!r} is not supported; use FP32")
    if any(d < 0 for d in shape):
        raise invalid(f"input {name!r}: shape {list(shape)} has a negative dimension")
    count = int(np.prod(shape)) if shape else 1
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise invalid(
            f"input {name!r}: {len(raw)} bytes do not hold shape {list(shape)} of {datatype} "
            f"({count * itemsize} bytes)"
        )
    data = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    return Tensor(name, datatype, data.astype(dtype, copy=False))


def check_batch_size(n: int, limit: int) -> None:
    """Refuse empty batches and batches over the server's limit."""
    if n == 0:
        raise invalid("transactions is empty: send at least one transaction")
    if n > limit:
        raise GatewayError(
            ErrorKind.INVALID_ARGUMENT,
            f"transactions has {n} entries, more than max_batch_transactions={limit}",
        )
