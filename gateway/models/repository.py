"""The model repository: ``<root>/<name>/<version>/{model.onnx, card.yaml}``.

Loading a version reads and validates its card, opens an ONNX Runtime session
with explicit options, compiles the card's feature spec into an encoder once,
warms the session at every batch size it will see, and starts its batcher. Only
then is the version ready.
"""

from __future__ import annotations

import asyncio
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


class ModelRepository:
    """Loads, serves and unloads model versions from a directory."""

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

    async def load(self, name: str, version: int | None = None) -> LoadedModel:
        """Load (or return the already loaded) version; the newest on disk when None."""
        if not _NAME.match(name):
            raise GatewayError(ErrorKind.INVALID_ARGUMENT, f"model name {name!r} is not valid")
        async with self._lock:
            if version is None:
                version = self.latest_on_disk(name)
            existing = self._loaded.get((name, version))
            if existing is not None:
                return existing
            path = self.root / name / str(version)
            if not (path / "card.yaml").is_file() or not (path / "model.onnx").is_file():
                raise not_found(f"model {name!r} version {version} is not in {self.root}")
            loop = asyncio.get_running_loop()
            # Session creation and warm-up take tens of ms: keep them off the loop.
            model = await loop.run_in_executor(None, self._open, path)
            if (model.card.name, model.card.version) != (name, version):
                raise GatewayError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"{path}/card.yaml names {model.card.name} v{model.card.version}, "
                    f"not {name} v{version}",
                )
            model.batcher.start()
            self._loaded[(name, version)] = model
            return model

    async def unload(self, name: str, version: int | None = None) -> list[LoadedModel]:
        """Unload one version, or every loaded version of ``name``; queued rows finish."""
        async with self._lock:
            keys = [
                key
                for key in self._loaded
                if key[0] == name and (version is None or key[1] == version)
            ]
            if not keys:
                raise not_found(f"model {name!r} is not loaded")
            removed = [self._loaded.pop(key) for key in keys]
        for model in removed:
            await model.batcher.close()
        return removed

    async def close(self) -> None:
        for model in list(self._loaded.values()):
            await model.batcher.close()
        self._loaded.clear()

    def _open(self, path: Path) -> LoadedModel:
        card = ModelCard.load(path / "card.yaml")
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
        )
        return LoadedModel(card, spec, runtime, encoder, batcher, path)
