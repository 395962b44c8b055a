"""The model repository: ``<root>/<name>/<version>/{model.onnx, card.yaml}``.

Loading a version reads and validates its card, opens an ONNX Runtime session
with explicit options, compiles the card's feature spec into an encoder once,
warms the session at every batch size it will see, and starts its batcher. Only
then is the version ready: visible to :meth:`ModelRepository.get`, so the route
check (``Server._route_problems``) and the first routed call see it warm or not at
all.

Unloading is two-phase so that the data plane can drain a version without a failed
call (``DataPlane.unload_model``): :meth:`~ModelRepository.begin_unload` makes it
invisible to new lookups (``get`` raises NOT_FOUND, so a route table naming it is
refused from then on), callers that resolved it earlier keep using it, and
:meth:`~ModelRepository.finish_unload` stops its batcher (queued rows finish) and
drops the session. :meth:`~ModelRepository.restore` undoes the first phase.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.backends.batching import DynamicBatcher
from gateway.backends.onnxruntime import OrtModel
from gateway.errors import ErrorKind, GatewayError, not_found
from gateway.features.dispatch import Encoder, EncoderMode, make_encoder
from gateway.features.spec import FeatureSpec, parse_feature_spec
from gateway.models.card import ModelCard
from gateway.settings import BatchingSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(slots=True)
class LoadedModel:
    """A model version that is ready to score."""

    card: ModelCard
    spec: FeatureSpec
    runtime: OrtModel
    encoder: Encoder
    batcher: DynamicBatcher
    path: Path

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    @property
    def key(self) -> str:
        return f"{self.card.name}/{self.card.version}"


class ModelState(enum.StrEnum):
    """A version's state, as the Open Inference repository extension names them."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One version on disk or in memory, and why it is (not) ready."""

    name: str
    version: int
    state: ModelState
    reason: str
    """Empty when READY; else e.g. "not loaded", "unloaded", "load failed: ..."."""


class ModelRepository:
    """Loads, serves and unloads model versions from a directory.

    Every method runs on the event loop; the synchronous ones (``get``,
    ``begin_unload``, ``restore``) change state in one step, which is what
    ``DataPlane.unload_model`` relies on to order itself against route changes.
    """

    def __init__(
        self,
        root: Path,
        batching: BatchingSettings,
        encoder_mode: EncoderMode,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.root = root
        self._providers = tuple(providers)
        self._batching = batching
        self._encoder_mode = encoder_mode
        self._loaded: dict[tuple[str, int], LoadedModel] = {}
        """Ready versions: the only ones ``get`` returns."""
        self._loading: set[tuple[str, int]] = set()
        self._unloading: dict[tuple[str, int], LoadedModel] = {}
        """Invisible to ``get``; still serving the calls that resolved them earlier."""
        self._unavailable: dict[tuple[str, int], str] = {}
        """Why a version that was loaded, or failed to load, is not ready now."""
        self._lock = asyncio.Lock()

    def available(self) -> list[tuple[str, int]]:
        """Every ``(name, version)`` on disk with both files, sorted."""
        found = []
        if self.root.is_dir():
            for card in self.root.glob("*/*/card.yaml"):
                version_dir = card.parent
                if (version_dir / "model.onnx").is_file() and version_dir.name.isdigit():
                    found.append((version_dir.parent.name, int(version_dir.name)))
        return sorted(found)

    def loaded(self) -> list[LoadedModel]:
        return [self._loaded[key] for key in sorted(self._loaded)]

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """A loaded model; the newest loaded version when ``version`` is None.

        Raises:
            GatewayError(NOT_FOUND): no such model or version is loaded.
        """
        if version is not None:
            model = self._loaded.get((name, version))
            if model is None:
                raise not_found(f"model {name!r} version {version} is not loaded")
            return model
        versions = [v for (n, v) in self._loaded if n == name]
        if not versions:
            raise not_found(f"model {name!r} is not loaded")
        return self._loaded[(name, max(versions))]

    def latest_on_disk(self, name: str) -> int:
        versions = [v for (n, v) in self.available() if n == name]
        if not versions:
            raise not_found(f"model {name!r} is not in the repository {self.root}")
        return max(versions)

    def status(self, name: str, version: int) -> ModelStatus:
        """The state of one version (UNAVAILABLE "not loaded" for one never seen)."""
        key = (name, version)
        if key in self._loaded:
            return ModelStatus(name, version, ModelState.READY, "")
        if key in self._unloading:
            reason = "unloading: new calls refused, in-flight calls finishing"
            return ModelStatus(name, version, ModelState.UNLOADING, reason)
        if key in self._loading:
            return ModelStatus(name, version, ModelState.LOADING, "loading and warming up")
        reason = self._unavailable.get(key, "not loaded")
        return ModelStatus(name, version, ModelState.UNAVAILABLE, reason)

    def statuses(self) -> list[ModelStatus]:
        """Every version on disk or in memory, sorted by (name, version)."""
        keys = {*self.available(), *self._loaded, *self._loading, *self._unloading}
        return [self.status(name, version) for name, version in sorted(keys)]

    async def load(self, name: str, version: int | None = None) -> LoadedModel:
        """Load, warm and start a version; the newest on disk when ``version`` is None.

        The version becomes visible to :meth:`get` only once its session is warm and
        its batcher runs. Loading a version that is already loaded returns it.

        Raises:
            GatewayError: INVALID_ARGUMENT for a malformed name; NOT_FOUND when the
                version directory (or any version of ``name``) is missing;
                FAILED_PRECONDITION for a card or graph that does not load (the
                message says why); UNAVAILABLE while that version is unloading.
        """
        if not _NAME.match(name):
            raise GatewayError(ErrorKind.INVALID_ARGUMENT, f"model name {name!r} is not valid")
        if version is not None and version < 1:
            raise GatewayError(
                ErrorKind.INVALID_ARGUMENT, f"model version must be >= 1, got {version}"
            )
        async with self._lock:
            if version is None:
                version = self.latest_on_disk(name)
            key = (name, version)
            existing = self._loaded.get(key)
            if existing is not None:
                return existing
            if key in self._unloading:
                raise GatewayError(
                    ErrorKind.UNAVAILABLE,
                    f"model {name!r} version {version} is unloading: load it again once "
                    f"the repository index no longer lists it as UNLOADING",
                )
            path = self.root / name / str(version)
            if not (path / "card.yaml").is_file() or not (path / "model.onnx").is_file():
                raise not_found(f"model {name!r} version {version} is not in {self.root}")
            loop = asyncio.get_running_loop()
            self._loading.add(key)
            try:
                # Session creation and warm-up take tens of ms: keep them off the loop.
                model = await loop.run_in_executor(None, self._open, path, name, version)
            except GatewayError as error:
                self._unavailable[key] = f"load failed: {error.message}"
                raise
            except Exception as exc:  # the card parser's and ONNX Runtime's own errors
                message = f"{path}: cannot load: {exc}"
                self._unavailable[key] = f"load failed: {message}"
                raise GatewayError(ErrorKind.FAILED_PRECONDITION, message) from exc
            finally:
                self._loading.discard(key)
            model.batcher.start()
            self._unavailable.pop(key, None)
            self._loaded[key] = model
            return model

    def begin_unload(self, name: str, version: int | None = None) -> list[LoadedModel]:
        """Make one version, or every loaded version of ``name``, invisible to ``get``.

        Calls that resolved them before keep them; they stay UNLOADING until
        :meth:`finish_unload` (or :meth:`restore`).

        Raises:
            GatewayError(NOT_FOUND): nothing to unload.
        """
        keys = [
            key
            for key in sorted(self._loaded)
            if key[0] == name and (version is None or key[1] == version)
        ]
        if not keys:
            what = f"model {name!r}" if version is None else f"model {name!r} version {version}"
            busy = [k for k in self._unloading if k[0] == name and version in (None, k[1])]
            raise not_found(f"{what} is not loaded" + (" (it is unloading)" if busy else ""))
        removed = []
        for key in keys:
            model = self._loaded.pop(key)
            self._unloading[key] = model
            removed.append(model)
        return removed

    def restore(self, models: Sequence[LoadedModel]) -> None:
        """Undo :meth:`begin_unload`: the versions serve new lookups again."""
        for model in models:
            key = (model.name, model.version)
            if self._unloading.get(key) is model:
                del self._unloading[key]
                self._loaded[key] = model

    async def finish_unload(self, models: Sequence[LoadedModel]) -> None:
        """Stop the batchers of versions :meth:`begin_unload` took (queued rows finish)."""
        for model in models:
            try:
                await model.batcher.close()
            finally:
                key = (model.name, model.version)
                if self._unloading.get(key) is model:
                    del self._unloading[key]
                    self._unavailable[key] = "unloaded"

    async def unload(self, name: str, version: int | None = None) -> list[LoadedModel]:
        """Unload one version, or every loaded version of ``name``, without draining.

        Queued rows finish; calls that resolved the model but have not queued yet
        fail. ``DataPlane.unload_model`` is the draining, route-checked way.
        """
        removed = self.begin_unload(name, version)
        await self.finish_unload(removed)
        return removed

    async def close(self) -> None:
        models = [*self._loaded.values(), *self._unloading.values()]
        self._loaded.clear()
        self._unloading.clear()
        for model in models:
            await model.batcher.close()

    def _open(self, path: Path, name: str, version: int) -> LoadedModel:
        card = ModelCard.load(path / "card.yaml")
        if (card.name, card.version) != (name, version):
            raise GatewayError(
                ErrorKind.FAILED_PRECONDITION,
                f"{path}/card.yaml names {card.name} v{card.version}, not {name} v{version}",
            )
        spec = parse_feature_spec(card.feature_spec)
        if spec.width != card.inputs.width:
            raise GatewayError(
                ErrorKind.FAILED_PRECONDITION,
                f"{path}: feature spec gives {spec.width} columns, card input says "
                f"{card.inputs.width}",
            )
        runtime = OrtModel(
            path / "model.onnx",
            input_name=card.inputs.name,
            score_output=card.outputs.score.name,
            score_column=card.outputs.score.column,
            intra_op_threads=self._batching.intra_op_threads,
            providers=self._providers,
        )
        encoder = make_encoder(spec, self._encoder_mode)
        batching = self._batching
        for size in sorted({1, 2, 4, 8, batching.max_batch}):
            if size > batching.max_batch:
                continue
            rows = np.zeros((size, spec.width), dtype=np.float32)
            for _ in range(batching.warmup_batches):
                runtime.score(rows)
        batcher = DynamicBatcher(
            f"{card.name}/{card.version}",
            runtime.score,
            max_batch=batching.max_batch,
            max_delay_us=batching.max_delay_us,
            queue_rows=batching.queue_rows,
            inline_max_rows=batching.inline_max_rows,
            score_idle_now=batching.score_idle_now,
        )
        return LoadedModel(card, spec, runtime, encoder, batcher, path)
