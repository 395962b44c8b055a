"""Server assembly and lifecycle: data plane, admin plane, health, metrics, workers.

``Server`` is the unit tests start: ``await server.start()`` binds (port 0 picks a
free one, see ``bound_port``), loads and warms the models, then reports SERVING on
grpc.health.v1; ``await server.stop(grace)`` drains. ``run`` adds signal handling
and ``serve`` adds worker processes sharing the port with SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import secrets
import signal
import socket
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# grpc-stubs does not know the asyncio health servicer.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.registry import Collector

from gateway.audit.sink import ChainAuditSink
from gateway.audit.writer import AuditWriter, open_writer
from gateway.audit_sink import AuditSink, LoggingAuditSink, TeeAuditSink
from gateway.backends.onnxruntime import preferred_providers
from gateway.canary import CanaryController
from gateway.dataplane import DataPlane
from gateway.features.dispatch import make_hashing
from gateway.grpc.admin import AdminServicer
from gateway.grpc.auth import BearerTokenInterceptor
from gateway.grpc.inference import InferenceServicer
from gateway.grpc.requests import make_request_parser
from gateway.grpc.responses import make_response_writer
from gateway.grpc.scoring import ScoringService
from gateway.http import HttpEndpoint
from gateway.models.repository import ModelRepository
from gateway.routes_watch import RoutesFileWatcher
from gateway.settings import Settings
from gateway.shadow import ShadowRunner
from gateway.telemetry.drift import DriftMonitors
from gateway.telemetry.gc_pause import GcMonitor
from gateway.telemetry.metrics import BatcherMetrics, make_meter_provider, meter_of
from gateway.telemetry.outcomes import OutcomeStore, card_figures_from
from gateway.telemetry.serving import ScoringTelemetry
from gateway.telemetry.tracing import CallTracer, make_tracer_provider
from inference import grpc_service_pb2, grpc_service_pb2_grpc
from riskwire.admin.v1 import admin_pb2_grpc
from riskwire.v1 import scoring_pb2
from router.routes import RouteTable, default_table, load_table_file
from router.store import RouteStore

log = logging.getLogger("riskwire.server")

DATA_SERVICES = (
    scoring_pb2.DESCRIPTOR.services_by_name["Scoring"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


class Server:
    """One riskwire worker: its own event loop, model sessions and ports."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repository = ModelRepository(
            settings.models.repository,
            settings.batching,
            settings.encoder,
            preferred_providers(settings.models.use_gpu),
        )
        self.dataplane: DataPlane | None = None
        self.health = health_aio.HealthServicer()
        self._data_server: grpc.aio.Server | None = None
        self._admin_server: grpc.aio.Server | None = None
        self._http: HttpEndpoint | None = None
        self._ready = False
        self.bound_port = 0
        self.admin_port = 0
        self.metrics_port = 0
        self.admin_token = ""
        self.encoder_implementation = ""
        self.wire_implementation = ""
        self.telemetry = ScoringTelemetry(settings.encoder, enabled=settings.metrics.record)
        self.meter_provider: MeterProvider | None = None
        self.tracer_provider = make_tracer_provider()
        """Set when the OTEL_* environment asks for traces (gateway/telemetry/tracing.py)."""
        self.audit: AuditSink = LoggingAuditSink()
        """Admin refusals and accepted config changes: the hash-chained audit log when
        ``audit.enabled`` (``chain``), else the server log."""
        self.audit_writer: AuditWriter | None = None
        self.chain: ChainAuditSink | None = None
        self._routes_watch: RoutesFileWatcher | None = None
        self.shadows = ShadowRunner(self.repository, settings.shadow, settings.encoder)
        self.drift = DriftMonitors(settings.drift) if settings.drift.enabled else None
        """Drift of every loaded version against its card's reference; None: off."""
        self._drift_task: asyncio.Task[None] | None = None
        self.outcomes: OutcomeStore | None = None
        """Predictions kept for ReportOutcome's label join; made at start when enabled."""
        self.canary: CanaryController | None = None
        """Walks the canary arms' ramps; made once the routes are in force."""
        self.gc_monitor = GcMonitor()
        """Times the garbage collector's pauses (on /metrics)."""

    @property
    def ready(self) -> bool:
        """Models loaded and warmed, and the data plane accepting calls."""
        return self._ready

    async def start(self) -> None:
        """Load the models and the routes, bind every port, then report SERVING."""
        s = self.settings
        self.gc_monitor.start()
        if s.audit.enabled:
            # First: model loads and the first config_version are recorded.
            worker = s.audit.worker_id if s.audit.worker_id is not None else 0
            self.audit_writer = open_writer(s.audit.resolved(s.state_dir), worker)
            await asyncio.to_thread(self.audit_writer.start)  # recovers a torn tail
            self.chain = ChainAuditSink(self.audit_writer)
            self.audit = TeeAuditSink(self.chain)
            self.shadows.audit = self.chain
        table = await self._load_models_and_routes()
        hashing = make_hashing(s.encoder)
        implementation = hashing.implementation
        self.encoder_implementation = implementation
        routes = RouteStore(
            table,
            self._route_problems,
            listener=self.audit.config_changed,
            actor="startup",
            reason=f"routes file {s.routes_file}" if s.routes_file else "default route",
        )
        if s.shadow.enabled:
            self.shadows.start()
        canary = self.canary = CanaryController(routes, s.canary, histogram_mode=s.encoder)
        self.dataplane = DataPlane(
            self.repository,
            routes,
            hashing.bucket,
            self.shadows if s.shadow.enabled else None,
            canary if s.canary.enabled else None,
            drift=self.drift,
            outcomes=self._start_outcomes(),
            audit=self.chain,
            audit_fails_calls=s.audit.on_full == "block_then_error",
        )
        if self.drift is not None:
            for model in self.repository.loaded():
                self.drift.get_or_create(model.card)
            self._drift_task = asyncio.get_running_loop().create_task(
                self.drift.fold_forever(), name="drift-fold"
            )

        self._data_server = grpc.aio.server(
            options=self._grpc_options(),
            maximum_concurrent_rpcs=s.grpc.max_concurrent_calls or None,
        )
        requests = make_request_parser(s.wire, s.grpc.max_batch_transactions)
        self.wire_implementation = requests.implementation
        scoring = ScoringService(
            self.dataplane,
            requests,
            make_response_writer(s.wire),
            self.telemetry,
            CallTracer(self.tracer_provider) if self.tracer_provider is not None else None,
        )
        self.scoring = scoring
        """The Scoring service's handlers (benchmarks/micro/handler.py calls them in-process)."""
        self._data_server.add_generic_rpc_handlers((scoring.handler(),))
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane, lambda: self._ready), self._data_server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._data_server)
        if s.grpc.reflection:
            reflection.enable_server_reflection(
                (
                    *DATA_SERVICES,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                self._data_server,
            )
        self.bound_port = self._data_server.add_insecure_port(f"{s.grpc.host}:{s.grpc.port}")
        if self.bound_port == 0:
            raise OSError(f"could not bind the data plane to {s.grpc.host}:{s.grpc.port}")
        await self._data_server.start()

        if s.admin.enabled:
            self.admin_token = admin_token(s)
            self._admin_server = grpc.aio.server(
                interceptors=[
                    BearerTokenInterceptor(
                        self.admin_token, self.audit, transport_authenticated=s.admin.mtls
                    )
                ],
                options=[("grpc.so_reuseport", 1 if s.workers > 1 else 0)],
            )
            admin_pb2_grpc.add_AdminServicer_to_server(
                AdminServicer(self.dataplane, implementation, self.wire_implementation),
                self._admin_server,
            )
            address = f"{s.admin.host}:{s.admin.port}"
            if s.admin.mtls:
                self.admin_port = self._admin_server.add_secure_port(
                    address, admin_tls_credentials(s)
                )
            else:
                self.admin_port = self._admin_server.add_insecure_port(address)
            if self.admin_port == 0:
                raise OSError(f"could not bind the admin plane to {address}")
            await self._admin_server.start()

        if s.metrics.enabled:
            batchers = BatcherMetrics(self.repository.loaded)
            collectors: list[Collector] = [self.telemetry, batchers, self.shadows]
            if self.audit_writer is not None:
                collectors.append(self.audit_writer)
            self._http = HttpEndpoint(lambda: self._ready, collectors)
            self.meter_provider = make_meter_provider(self._http.registry)
            meter = meter_of(self.meter_provider)
            sources = (
                self.telemetry,
                batchers,
                self.shadows,
                canary,
                self.drift,
                self.outcomes,
                self.dataplane,
                self.gc_monitor,
            )
            for source in sources:
                if source is not None:
                    source.register_metrics(meter)
            self.metrics_port = await self._http.start(
                s.metrics.host, s.metrics.port, reuse_port=s.workers > 1
            )

        if s.routes_file is not None and s.routes_poll_s > 0:
            self._routes_watch = RoutesFileWatcher(s.routes_file, routes, s.routes_poll_s)
            self._routes_watch.start()
        canary.start()

        if s.gc_freeze:
            # Models, sessions, routes and modules are built: out of the collector's
            # reach from here on, so a full collection walks only what calls create.
            gc.collect()
            gc.freeze()
        self._ready = True
        for service in ("", *DATA_SERVICES):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "riskwire serving on %s:%d (admin %d, metrics %d, encoder %s, wire %s, models %s)",
            s.grpc.host,
            self.bound_port,
            self.admin_port,
            self.metrics_port,
            implementation,
            self.wire_implementation,
            [m.key for m in self.repository.loaded()],
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish for ``grace`` s."""
        grace = self.settings.drain_grace_s if grace is None else grace
        self._ready = False
        if self._routes_watch is not None:
            await self._routes_watch.stop()
        if self.canary is not None:
            # No route change during the drain; before the repository closes.
            await self.canary.stop()
        await self.health.enter_graceful_shutdown()
        if self._data_server is not None:
            await self._data_server.stop(grace)
        if self._admin_server is not None:
            await self._admin_server.stop(0)
        if self._http is not None:
            await self._http.stop()
        # After the data plane's drain (no more offers), before the batchers close.
        await self.shadows.stop()
        await self.repository.close()
        if self.audit_writer is not None:
            await self.audit_writer.close()  # every queued record written and fsynced
        if self.outcomes is not None:
            await asyncio.to_thread(self.outcomes.close)  # flushes what is queued
        if self._drift_task is not None:
            self._drift_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drift_task
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # flushes the spans still batched
        self.gc_monitor.close()

    async def wait_for_termination(self) -> None:
        if self._data_server is not None:
            await self._data_server.wait_for_termination()

    def _grpc_options(self) -> list[tuple[str, Any]]:
        g = self.settings.grpc
        return [
            ("grpc.max_receive_message_length", g.max_message_bytes),
            ("grpc.max_send_message_length", g.max_message_bytes),
            ("grpc.max_concurrent_streams", g.max_concurrent_streams),
            ("grpc.keepalive_time_ms", g.keepalive_time_ms),
            # gRPC core's bound on received calls the loop has not taken (random early
            # refusal from the first to the second); settings.GrpcSettings says why.
            ("grpc.server.max_pending_requests", g.max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", g.max_pending_calls_hard),
            # Workers share the port; a lone server must fail loudly on a taken port.
            ("grpc.so_reuseport", 1 if self.settings.workers > 1 else 0),
        ]

    async def _load_models_and_routes(self) -> RouteTable:
        s = self.settings
        table = load_table_file(s.routes_file) if s.routes_file is not None else None
        if s.models.load_all:
            for name, version in self.repository.available():
                await self.repository.load(name, version)
        if table is None:
            model = await self.repository.load(s.models.champion)
            table = default_table(model.name, model.version)
        for route in table.routes:
            for model_name, version in route.targets():
                await self.repository.load(model_name, version)
        if self.chain is not None:
            for model in self.repository.loaded():
                self.chain.model_loaded(model, actor="startup", reason="loaded at start")
        return table

    def _start_outcomes(self) -> OutcomeStore | None:
        s = self.settings
        if not s.outcomes.enabled:
            return None
        settings = s.outcomes
        if settings.path is None:
            settings = settings.model_copy(update={"path": s.state_dir / "outcomes.sqlite3"})
        self.outcomes = OutcomeStore(
            settings, card_figures_from(s.models.repository), fairness=s.fairness
        ).start()
        return self.outcomes

    def _route_problems(self, table: RouteTable) -> list[str]:
        def available(name: str, version: int) -> str | None:
            try:
                self.repository.get(name, version)
            except Exception:
                return "not loaded"
            return None

        def live(name: str, version: int) -> str | None:
            # Shadows are exempt: their scores answer nobody (router.routes.problems_against).
            status = self.repository.get(name, version).card.approval.status
            if self.settings.models.require_approval and status != "approved":
                return (
                    f"approval is {status!r}, not 'approved': an unapproved version may "
                    "run only as a shadow (riskwire models approve)"
                )
            return None

        return table.problems_against(available, live=live)


def admin_tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    """Mutual TLS for the admin port: clients must present a certificate of the CA."""
    a = settings.admin
    assert a.tls_cert_file and a.tls_key_file and a.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(a.tls_key_file.read_bytes(), a.tls_cert_file.read_bytes())],
        root_certificates=a.tls_client_ca_file.read_bytes(),
        require_client_auth=True,
    )


def admin_token(settings: Settings) -> str:
    """The admin bearer token: from ``admin.token_file``, else ``<state_dir>/admin.token``.

    The state-dir token is made once (random, mode 0600, O_EXCL so two processes
    never write two tokens) and then reused; ``serve`` makes it before starting workers.
    """
    if settings.admin.token is not None:
        token = settings.admin.token.get_secret_value().strip()
        if not token:
            raise ValueError("admin.token is set but empty")
        return token
    token_file = settings.admin.token_file
    if token_file is None:
        token_file = settings.state_dir / "admin.token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            token = secrets.token_urlsafe(32)
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")
            return token
    token = token_file.read_text().strip()
    if not token:
        raise ValueError(f"admin token file {token_file} is empty")
    return token


async def _run(settings: Settings, announce: bool) -> None:
    server = Server(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    if announce:
        # Scripts and tests read these lines to find the ports (port 0 binds a free one).
        print(f"PORT {server.bound_port}", flush=True)
        print(f"ADMIN_PORT {server.admin_port}", flush=True)
        print(f"METRICS_PORT {server.metrics_port}", flush=True)
    await stopping.wait()
    log.info("draining for up to %.1f s", settings.drain_grace_s)
    await server.stop()


def run(settings: Settings, announce: bool = True) -> None:
    """Run one worker until SIGTERM / SIGINT, then drain."""
    if settings.uvloop:
        import uvloop

        uvloop.run(_run(settings, announce))
    else:
        asyncio.run(_run(settings, announce))


def _worker_main(settings_json: str, announce: bool) -> None:
    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{os.getpid()} %(message)s")
    run(settings, announce)


def _worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own audit chain (segments w<index>-*)."""
    if settings.audit.worker_id is not None:
        return settings
    audit = settings.audit.model_copy(update={"worker_id": index})
    return settings.model_copy(update={"audit": audit})


def _reserve_port(host: str) -> socket.socket:
    """Bind (not listen) a SO_REUSEPORT socket on a free port that workers then share.

    Holding it open until the workers have bound keeps the port ours without the
    bind-close-rebind race.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def serve(settings: Settings) -> int:
    """Run ``settings.workers`` processes on one port; forward SIGTERM; return the exit code."""
    if settings.workers == 1:
        run(settings)
        return 0
    if settings.admin.enabled:
        admin_token(settings)  # made here, once, so every worker reads the same token
    reserved = []
    overrides: dict[str, dict[str, int]] = {}
    for section in ("grpc", "admin", "metrics"):
        part = getattr(settings, section)
        if part.port == 0:
            sock = _reserve_port(part.host)
            reserved.append(sock)
            overrides[section] = {"port": sock.getsockname()[1]}
    if overrides:
        data = settings.model_dump()
        for section, values in overrides.items():
            data[section].update(values)
        settings = Settings.model_validate(data)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_worker_main,
            args=(_worker_settings(settings, i).model_dump_json(), i == 0),
            name=f"riskwire-{i}",
        )
        for i in range(settings.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()
    for sock in reserved:
        sock.close()
    failed = [w.exitcode for w in workers if w.exitcode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0
