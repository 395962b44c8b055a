"""riskwire.admin.v1.Admin: status, route changes, canaries, models, shadows.

Thin: each method converts the request, calls ``gateway.operations.Operations`` and
converts back; ``unary_errors`` maps every GatewayError kind to its status.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import grpc

import gateway
from gateway.dataplane import DataPlane
from gateway.grpc.auth import actor_of
from gateway.grpc.errors import unary_errors
from gateway.operations import Change, HistoryRecord, ModelInfo, Operations
from gateway.shadow import ShadowComparison
from gateway.telemetry.drift import DriftOverview
from gateway.telemetry.fairness import FairnessReport, FairnessSettings
from gateway.telemetry.outcomes import Confusion, PerformanceReport
from riskwire.admin.v1 import admin_pb2 as pb
from riskwire.admin.v1 import admin_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _expected(version: int) -> int | None:
    """0 on the wire means "no compare-and-swap check"."""
    return version or None


def _actor(context: Context) -> str:
    return actor_of(context.invocation_metadata(), context.auth_context())


def history_entry(record: HistoryRecord) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        config_version=record.config_version,
        applied_at=record.applied_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        actor=record.actor,
        reason=record.reason,
        kind=str(record.kind),
        diff=record.diff,
        figures=record.figures,
    )


def model_entry(model: ModelInfo) -> pb.ModelEntry:
    return pb.ModelEntry(
        name=model.name,
        version=model.version,
        ready=model.ready,
        approval_status=model.approval_status,
        in_use=bool(model.routes),
        routes=model.routes,
    )


def shadow_comparison(record: ShadowComparison) -> pb.ShadowComparison:
    return pb.ShadowComparison(
        route=record.route,
        shadow_model=record.shadow_model,
        shadow_version=record.shadow_version,
        compared=record.compared,
        agreements=record.agreements,
        agreement_rate=record.agreement_rate,
        flips=record.flips,
        score_diff_mean=record.score_diff_mean,
        score_diff_quantiles=record.score_diff_quantiles,
        shed=record.shed,
        errors=record.errors,
    )


def drift_response(overview: DriftOverview) -> pb.GetDriftResponse:
    settings = overview.settings
    return pb.GetDriftResponse(
        models=[
            pb.ModelDrift(
                model=r.model,
                version=r.version,
                samples=r.samples,
                level=str(r.level),
                dropped_rows=r.dropped_rows,
                features=[
                    pb.FeatureDrift(
                        feature=d.name,
                        psi=d.psi or 0.0,
                        has_psi=d.psi is not None,
                        samples=d.samples,
                        level=str(d.level),
                        edges=d.edges,
                        reference_proportions=d.reference_proportions,
                        live_proportions=d.live_proportions,
                    )
                    for d in r.distributions
                ],
            )
            for r in overview.reports
        ],
        watch_psi=settings.watch_psi,
        act_psi=settings.act_psi,
        min_samples=settings.min_samples,
    )


def confusion_matrix(confusion: Confusion) -> pb.ConfusionMatrix:
    return pb.ConfusionMatrix(
        true_positives=confusion.tp,
        false_positives=confusion.fp,
        true_negatives=confusion.tn,
        false_negatives=confusion.fn,
    )


def performance(report: PerformanceReport) -> pb.Performance:
    card = report.card
    return pb.Performance(
        route=report.route,
        model=report.model,
        version=report.version,
        arm=report.arm,
        labelled=report.labelled,
        positives=report.positives,
        decline=confusion_matrix(report.decline),
        flagged=confusion_matrix(report.flagged),
        precision=report.precision,
        recall=report.recall,
        auc=report.auc,
        fraud_caught_usd=report.fraud_caught_usd,
        fraud_missed_usd=report.fraud_missed_usd,
        degraded=report.degraded,
        degraded_reasons=report.reasons,
        card_precision=None if card is None else card.precision_at_decline,
        card_recall=None if card is None else card.recall_at_decline,
        card_auc=None if card is None else card.auc,
        window_start=datetime.fromtimestamp(report.window_start, UTC).isoformat(
            timespec="milliseconds"
        ),
    )


def fairness_response(
    settings: FairnessSettings, reports: list[FairnessReport]
) -> pb.GetFairnessResponse:
    return pb.GetFairnessResponse(
        reports=[
            pb.FairnessReport(
                route=r.route,
                model=r.model,
                version=r.version,
                arm=r.arm,
                attribute=r.attribute,
                groups=[
                    pb.FairnessGroup(
                        group=g.group,
                        decisions=g.decisions,
                        declines=g.declines,
                        labelled=g.labelled,
                        selection_rate=g.selection_rate,
                        tpr=g.tpr,
                        fpr=g.fpr,
                        compared=g.compared,
                    )
                    for g in r.groups
                ],
                disparate_impact_ratio=r.disparate_impact_ratio,
                demographic_parity_difference=r.demographic_parity_difference,
                equalized_odds_difference=r.equalized_odds_difference,
                four_fifths_violated=r.four_fifths_violated,
                equalized_odds_violated=r.equalized_odds_violated,
            )
            for r in reports
        ],
        min_group_size=settings.min_group_size,
        di_threshold=settings.di_threshold,
        eo_threshold=settings.eo_threshold,
    )


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(
        self, dataplane: DataPlane, encoder_implementation: str, wire_implementation: str
    ) -> None:
        self._dataplane = dataplane
        self._operations = Operations(dataplane)
        self._encoder = encoder_implementation
        self._wire = wire_implementation

    @unary_errors
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        models = [
            pb.ModelStatus(
                name=m.name,
                version=str(m.version),
                kind=m.card.kind,
                ready=True,
                approval_status=m.card.approval.status,
                feature_spec_version=m.spec.version,
                max_batch=m.batcher.max_batch,
                queue_depth=m.batcher.queued_rows,
            )
            for m in self._dataplane.repository.loaded()
        ]
        return pb.GetStatusResponse(
            server_version=gateway.__version__,
            encoder=self._encoder,
            wire=self._wire,
            config_version=self._dataplane.routes.current.config_version,
            models=models,
            worker_pid=os.getpid(),
        )

    @unary_errors
    async def GetRoutes(
        self, request: pb.GetRoutesRequest, context: Context
    ) -> pb.GetRoutesResponse:
        current = self._dataplane.routes.current
        return pb.GetRoutesResponse(
            config_version=current.config_version, routes_yaml=current.table.to_yaml()
        )

    @unary_errors
    async def ValidateRoutes(
        self, request: pb.ValidateRoutesRequest, context: Context
    ) -> pb.ValidateRoutesResponse:
        result = self._operations.validate(request.routes_yaml)
        return pb.ValidateRoutesResponse(
            valid=not result.problems,
            problems=result.problems,
            diff=result.diff,
            config_version=result.config_version,
        )

    @unary_errors
    async def ApplyRoutes(
        self, request: pb.ApplyRoutesRequest, context: Context
    ) -> pb.ApplyRoutesResponse:
        change = self._operations.apply(
            request.routes_yaml,
            _expected(request.expected_config_version),
            _actor(context),
            request.reason,
        )
        return pb.ApplyRoutesResponse(config_version=change.config_version, diff=change.diff)

    @unary_errors
    async def GetHistory(
        self, request: pb.GetHistoryRequest, context: Context
    ) -> pb.GetHistoryResponse:
        records = self._operations.history(request.limit)
        return pb.GetHistoryResponse(entries=[history_entry(r) for r in records])

    @unary_errors
    async def RollbackRoutes(
        self, request: pb.RollbackRoutesRequest, context: Context
    ) -> pb.RollbackRoutesResponse:
        change: Change = self._operations.rollback(
            request.to_config_version,
            _expected(request.expected_config_version),
            _actor(context),
            request.reason,
        )
        return pb.RollbackRoutesResponse(config_version=change.config_version, diff=change.diff)

    @unary_errors
    async def PromoteCanary(
        self, request: pb.PromoteCanaryRequest, context: Context
    ) -> pb.PromoteCanaryResponse:
        change = self._operations.promote(
            request.route,
            _expected(request.expected_config_version),
            _actor(context),
            request.reason,
        )
        return pb.PromoteCanaryResponse(config_version=change.config_version, diff=change.diff)

    @unary_errors
    async def GetCanaryStatus(
        self, request: pb.GetCanaryStatusRequest, context: Context
    ) -> pb.GetCanaryStatusResponse:
        config_version, states = self._operations.canary_status(request.route or None)
        canaries = []
        for state in states:
            guards = state.guards
            canary = pb.CanaryStatus(
                route=state.route,
                model=state.model,
                version=state.version,
                weight=state.weight,
                steps=state.steps,
                next_step=state.next_step or 0.0,
                next_is_promote=state.next_step is None,
                interval_s=state.interval_s,
                min_requests=state.min_requests,
                guards=pb.CanaryGuards(
                    p99_ms=guards.p99_ms,
                    error_rate=guards.error_rate,
                    score_psi=guards.score_psi,
                    decline_rate_delta=guards.decline_rate_delta,
                ),
            )
            if state.last_change is not None:
                canary.last_change.CopyFrom(history_entry(state.last_change))
            live = state.live or {}
            canary.champion_window.update(live.get("champion", {}))
            canary.canary_window.update(live.get("canary", {}))
            canary.window_s = float(live.get("window_s", 0.0))
            if "score_psi" in live:
                canary.score_psi = float(live["score_psi"])
            verdict = live.get("last_verdict")
            if verdict is not None:
                canary.last_verdict = verdict["action"]
                canary.last_verdict_reason = verdict["reason"]
                canary.failed_guards.extend(verdict["failed_guards"])
            canaries.append(canary)
        return pb.GetCanaryStatusResponse(config_version=config_version, canaries=canaries)

    @unary_errors
    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[model_entry(m) for m in self._operations.list_models()]
        )

    @unary_errors
    async def LoadModel(
        self, request: pb.LoadModelRequest, context: Context
    ) -> pb.LoadModelResponse:
        model = await self._operations.load_model(
            request.name, request.version or None, _actor(context)
        )
        return pb.LoadModelResponse(model=model_entry(model))

    @unary_errors
    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: Context
    ) -> pb.UnloadModelResponse:
        await self._operations.unload_model(request.name, request.version or None, _actor(context))
        return pb.UnloadModelResponse()

    @unary_errors
    async def GetShadowComparison(
        self, request: pb.GetShadowComparisonRequest, context: Context
    ) -> pb.GetShadowComparisonResponse:
        records = self._operations.shadow_comparisons(request.route or None)
        return pb.GetShadowComparisonResponse(comparisons=[shadow_comparison(r) for r in records])

    @unary_errors
    async def GetPerformance(
        self, request: pb.GetPerformanceRequest, context: Context
    ) -> pb.GetPerformanceResponse:
        reports = await self._operations.performance(request.route or None)
        return pb.GetPerformanceResponse(performance=[performance(r) for r in reports])

    @unary_errors
    async def GetFairness(
        self, request: pb.GetFairnessRequest, context: Context
    ) -> pb.GetFairnessResponse:
        settings, reports = await self._operations.fairness(request.route or None)
        return fairness_response(settings, reports)

    @unary_errors
    async def GetDrift(self, request: pb.GetDriftRequest, context: Context) -> pb.GetDriftResponse:
        overview = self._operations.drift_reports(request.model or None, request.version or None)
        return drift_response(overview)
