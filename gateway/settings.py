"""Server settings: documented, validated, from defaults, a YAML file and RISKWIRE_* env.

Precedence, highest first: command-line flags (applied by ``gateway.cli``), the
environment (``RISKWIRE_GRPC__PORT=50061``: nested sections use ``__``), the YAML
file given with ``--config``, then the embedded defaults below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.audit.settings import AuditSettings
from gateway.telemetry.drift import DriftSettings
from gateway.telemetry.fairness import FairnessSettings
from gateway.telemetry.outcomes import OutcomeSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GrpcSettings(_Section):
    """The data plane (riskwire.v1.Scoring, Open Inference Protocol, health, reflection)."""

    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 in a container."""
    port: int = Field(50051, ge=0, le=65535)
    """Data-plane port; 0 picks a free port (tests), printed as ``PORT <n>`` when serving."""
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request or response frame accepted, in bytes."""
    max_batch_transactions: int = Field(1024, ge=1)
    """Most transactions one ScoreBatch call may carry."""
    max_concurrent_streams: int = Field(1024, ge=1)
    """HTTP/2 streams per connection."""
    max_concurrent_calls: int = Field(0, ge=0)
    """Calls in progress at once on the data plane (each stream counts once); more are
    answered RESOURCE_EXHAUSTED by the gRPC server before any riskwire code runs. It
    counts the calls the event loop has taken; when the loop itself is the bottleneck
    calls wait before it, which ``max_pending_calls`` bounds. Size it from capacity x
    deadline (e.g. 1,000 calls/s x 10 ms = 10 in service, with headroom for bursts:
    64). 0: no limit."""
    max_pending_calls: int = Field(64, ge=0)
    """Calls gRPC's core has received that the event loop has not yet taken. Under a
    spike past what the loop can take, this is where calls wait, first in first out,
    before any riskwire code sees them: unbounded, every call ends up late. Past this
    many, the core refuses a growing share of new calls at once, and every one at
    ``max_pending_calls_hard``: the caller gets CANCELLED (gRPC's own status for it,
    not riskwire's) within milliseconds and can take its fallback, while the calls
    taken wait less. Each pending call ahead costs a call about one call's loop time
    (~1 ms on the 2-core VM): a bound of 2-4 keeps answered calls within 20-40 ms
    under a 10x spike, 1-2 within 15-20 ms but refuses ordinary traffic as well
    (benchmarks/load/spike.py's MAX_PENDING_CALLS has the measurements). The default
    passes bursts of dozens of calls at once and bounds the wait to ~0.1-0.3 s.
    gRPC's own default is 1000."""
    max_pending_calls_hard: int = Field(256, ge=1)
    """Pending calls past which gRPC's core refuses every new one (its default: 3000)."""
    keepalive_time_ms: int = Field(30_000, ge=1000)
    """Interval of server keepalive pings on idle connections."""
    reflection: bool = True
    """Serve gRPC server reflection (grpcurl, grpcui)."""

    @model_validator(mode="after")
    def _pending_bounds_ordered(self) -> GrpcSettings:
        if self.max_pending_calls_hard < self.max_pending_calls:
            raise ValueError(
                f"grpc.max_pending_calls_hard ({self.max_pending_calls_hard}) must be at "
                f"least grpc.max_pending_calls ({self.max_pending_calls})"
            )
        return self


class AdminSettings(_Section):
    """The admin plane (riskwire.admin.v1.Admin): its own port, bearer-token auth."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(50052, ge=0, le=65535)
    """Admin port; never the data-plane port."""
    token_file: Path | None = None
    """File holding the bearer token. Unset (and no ``token``): a random token is made
    at start and written to ``<state_dir>/admin.token`` (mode 0600)."""
    token: SecretStr | None = None
    """The bearer token itself, for secret stores that inject environment variables
    (``RISKWIRE_ADMIN__TOKEN``); wins over ``token_file``. Never logged."""
    tls_cert_file: Path | None = None
    """PEM certificate chain of the admin port. With ``tls_key_file`` and
    ``tls_client_ca_file``: mutual TLS, where a client certificate signed by that CA
    authenticates a call instead of the bearer token (a client without one fails the
    TLS handshake: UNAVAILABLE, before any call)."""
    tls_key_file: Path | None = None
    """PEM private key for ``tls_cert_file``."""
    tls_client_ca_file: Path | None = None
    """PEM CA certificates that client certificates must chain to."""

    @model_validator(mode="after")
    def _tls_whole(self) -> AdminSettings:
        given = [self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file]
        if any(given) and not all(given):
            raise ValueError(
                "admin mTLS needs tls_cert_file, tls_key_file and tls_client_ca_file together"
            )
        return self

    @property
    def mtls(self) -> bool:
        return self.tls_cert_file is not None


class MetricsSettings(_Section):
    """HTTP endpoint for /metrics, /healthz and /readyz."""

    enabled: bool = True
    """Serve the endpoint. Off: no port, and nothing to scrape (recording may still be
    on for traces: see ``record``)."""
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    record: bool = True
    """Record per-stage latencies and the request, error and fallback counters on the
    serving path. Off is the "telemetry off" side of the cost measurement
    (benchmarks/load/compare.py --variant off:RISKWIRE_METRICS__RECORD=false)."""


class BatchingSettings(_Section):
    """Per-model dynamic batcher defaults (a model card may not override these yet)."""

    max_batch: int = Field(16, ge=1, le=4096)
    """Rows per ONNX Runtime call. Trees are cheapest per row near 16 on this class of
    machine (benchmarks/micro/ort_batch.py); past 32-48 rows the per-row cost triples."""
    max_delay_us: int = Field(0, ge=0, le=1_000_000)
    """How long a partial batch waits for more rows. 0: dispatch at once when the
    model is idle; rows that arrive while it is busy still batch together."""
    inline_max_rows: int = Field(4096, ge=0)
    """Batches up to this many rows run on the event-loop thread (in max_batch chunks,
    yielding between them), larger ones on the model's worker thread. A thread
    hand-off waits for the GIL, up to 5 ms under load, far longer than a tree batch
    takes; lower it for models whose one call is long (GPU, large networks). 0 sends
    every batch to the thread."""
    score_idle_now: bool = True
    """With ``max_delay_us`` 0, score a call that finds its model idle at once, on its
    own loop step, rather than through the queue and the dispatcher task (whose hop
    cost a one-row call ~20 us of loop time on the 2-core VM and batched nothing:
    behind gRPC, calls reach the batcher one loop step apart). Calls submitted in the
    same step, or while the model is busy, still queue and batch. Off: every call
    through the queue (benchmarks/micro/batcher.py compares the two)."""
    queue_rows: int = Field(4096, ge=1)
    """Most rows waiting per model; beyond it requests are shed by route policy."""
    intra_op_threads: int = Field(1, ge=1)
    """ONNX Runtime intra-op threads per session; 1 avoids spinning OpenMP-style pools."""
    warmup_batches: int = Field(8, ge=0)
    """Batches of each size run at load so the first live call is not the slow one."""


class ShadowSettings(_Section):
    """Shadow arms (a route's ``shadows``): scored after the primary answer is sent,
    from a bounded queue that is shed first under load, and compared with the primary
    (gateway/shadow.py; counters on /metrics and the Admin API)."""

    enabled: bool = True
    """Score the routes' shadow arms; false: they are neither scored nor counted."""
    queue_rows: int = Field(4096, ge=1)
    """Most shadow scorings (one transaction for one shadow model) waiting; one that
    finds the queue full is dropped and counted as shed, never waited for. Room for a
    few full ScoreBatch calls (``grpc.max_batch_transactions``) beside unary traffic."""
    round_rows: int = Field(64, ge=1)
    """Most queued scorings taken at once; each shadow model gets them as one encoder
    call per request and one batcher submission."""
    max_delay_ms: float = Field(10.0, ge=0.0, le=1000.0)
    """How long the consumer, woken by new work, lets a round gather before taking it
    (shadow answers are not urgent): fewer, larger model calls, and the primary answers
    long out first. 0: take what is queued at the next turn of the event loop."""
    shed_above_fraction: float = Field(0.5, gt=0.0, le=1.0)
    """Shed (drop, counted) a shadow model's rows while its batcher holds more than
    this fraction of ``batching.queue_rows``: its primary traffic comes first."""
    deadline_ms: float = Field(1000.0, gt=0.0)
    """How long a shadow scoring may wait in its model's batcher; past it, an error."""
    drain_grace_s: float = Field(1.0, ge=0.0)
    """On shutdown, after the data plane has drained: how long queued shadow work may
    still run; what is left is dropped and counted as shed."""


class CanarySettings(_Section):
    """The canary controller (gateway/canary.py): it walks each route's canary up its
    ``canary.steps`` while the guards hold and rolls it back to 0 when one fails, each
    move a new config_version with its reason and figures."""

    enabled: bool = True
    """Run the controller; false: canary arms keep the weight written in the routes
    until an operator changes it (PromoteCanary, ApplyRoutes)."""
    tick_s: float = Field(1.0, gt=0.0, le=60.0)
    """How often each canary route's windows are evaluated. A route's ``interval_s``
    and ``min_requests`` decide when it steps; this bounds how late that is noticed,
    and how long a failing canary serves before its rollback."""


class ModelSettings(_Section):
    repository: Path = Path("var/models")
    """Model repository: ``<name>/<version>/{model.onnx, card.yaml}``."""
    require_approval: bool = True
    """Refuse to route live traffic to a model whose card is not approved."""
    load_all: bool = True
    """Load every model in the repository at start; otherwise only those the routes use."""
    champion: str = "fraud-gbdt"
    """The model (newest version) the embedded default route sends all traffic to when
    no routes_file is set."""
    use_gpu: bool = False
    """Ask ONNX Runtime for TensorRT / CUDA providers first when this build has them."""


class Settings(BaseSettings):
    """Everything ``riskwire serve`` needs, with embedded defaults that run the demo."""

    model_config = SettingsConfigDict(
        env_prefix="RISKWIRE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    grpc: GrpcSettings = GrpcSettings()
    admin: AdminSettings = AdminSettings()
    metrics: MetricsSettings = MetricsSettings()
    batching: BatchingSettings = BatchingSettings()
    models: ModelSettings = ModelSettings()
    shadow: ShadowSettings = ShadowSettings()
    canary: CanarySettings = CanarySettings()
    drift: DriftSettings = DriftSettings()
    outcomes: OutcomeSettings = OutcomeSettings()
    fairness: FairnessSettings = FairnessSettings()
    audit: AuditSettings = AuditSettings()
    routes_file: Path | None = None
    """Routes YAML; unset: one default route to the repository's champion."""
    routes_poll_s: float = Field(1.0, ge=0.0)
    """How often the routes file is checked for changes (mtime, size, content hash); a
    changed file is validated and applied like an Admin ApplyRoutes. 0: not watched."""
    state_dir: Path = Path("var/state")
    """Where the server keeps files it writes (admin token)."""
    encoder: Literal["auto", "native", "python"] = "auto"
    """Feature encoder: native C++, the Python reference, or native when built.
    RISKWIRE_PURE_PYTHON=1 forces python."""
    wire: Literal["auto", "native", "python"] = "auto"
    """Scoring request parser and response writer: the native wire parser and Cython
    writer, or protobuf's (the reference), or native when built. RISKWIRE_PURE_PYTHON=1
    forces python."""
    workers: int = Field(1, ge=1, le=256)
    """Server processes sharing the data port with SO_REUSEPORT."""
    drain_grace_s: float = Field(10.0, ge=0.0)
    """On SIGTERM: stop accepting, then let in-flight calls finish for this long."""
    uvloop: bool = True
    """Run the event loop on uvloop (11-13% more throughput, MEASURED.md)."""
    gc_freeze: bool = True
    """Once started, move every object built so far (model sessions, routes, modules)
    out of the garbage collector's reach (``gc.freeze()``): a full collection then
    walks only what calls create. Without it, one took ~47 ms here, every call
    arriving meanwhile waiting before its handler (benchmarks/micro/gc_pause.py)."""

    @model_validator(mode="after")
    def _ports_distinct(self) -> Settings:
        ports = [self.grpc.port]
        if self.admin.enabled:
            ports.append(self.admin.port)
        if self.metrics.enabled:
            ports.append(self.metrics.port)
        fixed = [p for p in ports if p != 0]
        if len(fixed) != len(set(fixed)):
            raise ValueError(f"grpc, admin and metrics ports must differ, got {ports}")
        return self


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file, the environment and explicit overrides.

    Args:
        config_file: YAML with the same sections as :class:`Settings`.
        overrides: dotted keys (``grpc.port``) or top-level names, from the CLI; the
            highest precedence.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        loaded = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping at the top level")
        data = loaded
    env_view = Settings.model_validate(data) if data else Settings()
    merged = env_view.model_dump()
    # The environment wins over the file: re-read it on top of the file's values.
    env_only = Settings().model_dump(exclude_defaults=True)
    _deep_update(merged, env_only)
    for key, value in overrides.items():
        if value is None:
            continue
        target = merged
        *parents, leaf = key.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return Settings.model_validate(merged)


def _deep_update(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
