"""Chooses the native or the pure-Python feature encoder and hash functions.

`encoder: auto|native|python` (the setting) picks the implementation, like uvicorn's
`http: auto|h11|httptools`; `RISKWIRE_PURE_PYTHON=1` forces python whatever the setting,
like msgpack's MSGPACK_PUREPYTHON, for debugging and for platforms without a compiler.
`native` fails loudly when the extension is missing; `auto` falls back to python.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from gateway.features import currency, hashing, reference, transactions
from gateway.features.columns import Transaction
from gateway.features.spec import (
    Bucketize,
    Cyclical,
    Differs,
    FeatureSpec,
    HashBucket,
    Identity,
    Log1p,
    OneHot,
    Standardize,
)
from gateway.features.transactions import TransactionSource

if TYPE_CHECKING:
    # The stubs (gateway/_native/*.pyi) type the calls below even where nothing is built.
    from gateway._native import _encoder, _glue

EncoderMode: TypeAlias = Literal["auto", "native", "python"]
Implementation: TypeAlias = Literal["native", "python"]
Columns: TypeAlias = reference.Columns

PURE_PYTHON_ENV = "RISKWIRE_PURE_PYTHON"
_FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})


class NativeExtensionMissing(ImportError):
    """`encoder: native` was asked for but gateway._native is not built or not loadable."""


def pure_python_forced() -> bool:
    """Returns True when RISKWIRE_PURE_PYTHON is set to anything but 0/false/no/off/""."""
    return os.environ.get(PURE_PYTHON_ENV, "").strip().lower() not in _FALSE_VALUES


@functools.cache
def _load_native() -> tuple[ModuleType, ModuleType] | ImportError:
    try:
        encoder = importlib.import_module("gateway._native._encoder")
        glue = importlib.import_module("gateway._native._glue")
    except ImportError as exc:
        return exc
    return encoder, glue


def native_error() -> ImportError | None:
    """Returns why the native extensions cannot be loaded, or None when they can."""
    loaded = _load_native()
    return loaded if isinstance(loaded, ImportError) else None


def resolve_implementation(mode: EncoderMode = "auto") -> Implementation:
    """Returns which implementation `mode` gets in this process.

    Raises:
        NativeExtensionMissing: `mode` is "native" and the extension cannot be loaded.
        ValueError: `mode` is not auto, native or python.
    """
    if mode not in ("auto", "native", "python"):
        raise ValueError(f"encoder must be auto, native or python, got {mode!r}")
    if mode == "python" or pure_python_forced():
        return "python"
    error = native_error()
    if error is None:
        return "native"
    if mode == "native":
        raise NativeExtensionMissing(
            f"encoder: native, but the native extension is not available ({error}); build it "
            f"with `pip install .` (or `python setup.py build_ext --inplace`), or use "
            f"encoder: auto / python"
        ) from error
    return "python"


def _native() -> tuple[ModuleType, ModuleType]:
    loaded = _load_native()
    if isinstance(loaded, ImportError):  # resolve_implementation() checked this already
        raise NativeExtensionMissing(str(loaded)) from loaded
    return loaded


class Encoder(Protocol):
    """A feature spec compiled once; encodes Columns or Transactions into float32 rows."""

    @property
    def spec(self) -> FeatureSpec:
        """The spec this encoder was compiled from."""

    @property
    def implementation(self) -> Implementation:
        """ "native" or "python": which code runs (the server reports it)."""

    def encode(
        self, columns: Columns, out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """Returns float32 [n, spec.width] (`out` when given)."""

    def encode_transactions(
        self,
        txns: TransactionSource,
        out: npt.NDArray[np.float32] | None = None,
        *,
        rows: Sequence[int] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Returns float32 [n, spec.width] (`out` when given), equal to
        `encode(columns_from_transactions(txns, spec.sources))`: the serving path.

        `txns` are protobuf Transactions or the native wire parser's ParsedBatch;
        `rows` picks which of them, in order (n = len(rows)); None takes all.

        Raises:
            UnknownCurrencyError: An amount source meets a currency the gateway lacks.
        """


class PythonEncoder:
    """The numpy reference encoder behind the Encoder interface."""

    implementation: Implementation = "python"

    def __init__(self, spec: FeatureSpec) -> None:
        self._spec = spec
        self._columns = transactions.TransactionColumns(spec.sources)

    @property
    def spec(self) -> FeatureSpec:
        """The spec this encoder was compiled from."""
        return self._spec

    def encode(
        self, columns: Columns, out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """Returns float32 [n, spec.width] (`out` when given)."""
        return reference.encode(self._spec, columns, out)

    def encode_transactions(
        self,
        txns: TransactionSource,
        out: npt.NDArray[np.float32] | None = None,
        *,
        rows: Sequence[int] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Returns float32 [n, spec.width] (`out` when given); see Encoder."""
        selected = transactions.protobuf_transactions(txns, rows)
        return reference.encode(self._spec, self._columns(selected), out)


class NativeEncoder:
    """The C++ encoder: the spec is compiled into a program of operations once.

    Its inputs are two matrices, one row per input: float64 numeric sources (NaN =
    missing) and uint64 column hashes of categorical sources (0 = missing). `encode`
    builds them from Columns (the Cython glue hashes); `encode_transactions` has the
    glue's TransactionReader read them from Transactions in one pass. The C++ loop then
    fills the whole batch (with the GIL released when the batch is large).
    """

    implementation: Implementation = "native"

    def __init__(self, spec: FeatureSpec) -> None:
        encoder_module, glue = _native()
        self._spec = spec
        self._needed = reference.needed_sources(spec)
        self._hash_column: HashColumn = glue.hash_column
        self._numeric: list[str] = []
        self._hashed: list[tuple[str, bytes]] = []
        program: _encoder.Program = encoder_module.Program()
        for f in spec.features:
            if isinstance(f, Identity):
                program.add_identity(self._num(f.source), f.default)
            elif isinstance(f, Log1p):
                program.add_log1p(self._num(f.source), f.default)
            elif isinstance(f, Standardize):
                program.add_standardize(self._num(f.source), f.mean, f.std, f.default)
            elif isinstance(f, Bucketize):
                program.add_bucketize(self._num(f.source), list(f.edges), f.default)
            elif isinstance(f, Cyclical):
                t = reference.CYCLICAL_TABLES[f.period]
                program.add_cyclical(
                    self._num(f.source), t.unit_ms, t.offset, list(t.sin), list(t.cos), f.default
                )
            elif isinstance(f, OneHot):
                vocabulary = [hashing.column_hash(v) for v in f.vocabulary]
                program.add_one_hot(self._hash(f.source), vocabulary)
            elif isinstance(f, HashBucket):
                # The bucket hashes name + "\x00" + value: the glue hashes the prefix once
                # per column and continues FNV over each value.
                prefix = f.name.encode() + b"\x00"
                program.add_hash_bucket(self._hash(f.source, prefix), f.buckets, f.default)
            elif isinstance(f, Differs):
                program.add_differs(self._hash(f.sources[0]), self._hash(f.sources[1]))
            else:  # pragma: no cover - the spec parser admits no other type
                raise TypeError(f"unsupported feature {f!r}")
        if program.width != spec.width:  # pragma: no cover - a bug, not an input error
            raise AssertionError(f"native width {program.width} != spec width {spec.width}")
        self._program = program
        self._width = spec.width
        self._reader: _glue.TransactionReader = glue.TransactionReader(
            [transactions.source_read(s) for s in self._numeric],
            [(*transactions.source_read(s), prefix) for s, prefix in self._hashed],
            transactions.CURRENCY_SCALES,
            transactions.CHANNEL_VALUES,
            currency.UnknownCurrencyError,
        )
        self._parsed_batch: type[_encoder.ParsedBatch] = encoder_module.ParsedBatch
        self._input_reader: _encoder.InputReader = encoder_module.InputReader(
            [transactions.source_read(s) for s in self._numeric],
            [(*transactions.source_read(s), prefix) for s, prefix in self._hashed],
            transactions.CURRENCY_SCALES,
            transactions.CHANNEL_VALUES,
            currency.UnknownCurrencyError,
        )

    def _num(self, source: str) -> int:
        if source not in self._numeric:
            self._numeric.append(source)
        return self._numeric.index(source)

    def _hash(self, source: str, prefix: bytes = b"") -> int:
        key = (source, prefix)
        if key not in self._hashed:
            self._hashed.append(key)
        return self._hashed.index(key)

    @property
    def spec(self) -> FeatureSpec:
        """The spec this encoder was compiled from."""
        return self._spec

    def encode(
        self, columns: Columns, out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """Returns float32 [n, spec.width] (`out` when given)."""
        n = reference.count_rows(self._needed, columns)
        result = reference.check_out(out, n, self._spec.width)
        numeric = np.empty((len(self._numeric), n), dtype=np.float64)
        for i, source in enumerate(self._numeric):
            numeric[i] = np.asarray(columns[source], dtype=np.float64)
        hashes = np.empty((len(self._hashed), n), dtype=np.uint64)
        for i, (source, prefix) in enumerate(self._hashed):
            hashes[i] = self._hash_column(np.asarray(columns[source], dtype=object), prefix)
        return self._run(numeric, hashes, result)

    def encode_transactions(
        self,
        txns: TransactionSource,
        out: npt.NDArray[np.float32] | None = None,
        *,
        rows: Sequence[int] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Returns float32 [n, spec.width] (`out` when given); see Encoder."""
        # The serving path: a few microseconds per call, so no step that can be skipped.
        if isinstance(txns, self._parsed_batch):
            # Straight from the request bytes: C++ reads the fields and encodes them.
            selected = None if rows is None else np.asarray(rows, dtype=np.int64)
            n = len(txns) if selected is None else len(selected)
            result = reference.check_out(out, n, self._width)
            dense = result if result.flags.c_contiguous else np.empty(result.shape, np.float32)
            self._program.encode_parsed(self._input_reader, txns, selected, dense)
            if dense is not result:
                result[...] = dense
            return result
        if rows is not None:
            txns = transactions.protobuf_transactions(txns, rows)
        assert isinstance(txns, Sequence)
        if out is None:
            numeric, hashes = self._reader.read(txns)
            result = np.empty((len(txns), self._width), dtype=np.float32)
            self._program.encode(numeric, hashes, result)
            return result
        result = reference.check_out(out, len(txns), self._width)
        numeric, hashes = self._reader.read(txns)
        return self._run(numeric, hashes, result)

    def read_inputs(
        self, txns: Sequence[Transaction]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """Returns the C++ loop's inputs for `txns` (numeric [k, n], hashes [m, n]).

        For tests and benchmarks: row i of each is `input_sources[i]`'s column.
        """
        return self._reader.read(txns)

    @property
    def input_sources(self) -> tuple[tuple[str, ...], tuple[tuple[str, bytes], ...]]:
        """The numeric sources and the (categorical source, hash prefix) pairs, in the
        order of the rows of the C++ loop's input matrices."""
        return tuple(self._numeric), tuple(self._hashed)

    def _run(
        self,
        numeric: npt.NDArray[np.float64],
        hashes: npt.NDArray[np.uint64],
        result: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        if result.flags.c_contiguous:
            self._program.encode(numeric, hashes, result)
        else:
            # The C++ loop writes row-major rows; a strided view gets a copy.
            dense = np.empty(result.shape, dtype=np.float32)
            self._program.encode(numeric, hashes, dense)
            result[...] = dense
        return result


def make_encoder(spec: FeatureSpec, mode: EncoderMode = "auto") -> Encoder:
    """Compiles `spec` with the implementation `mode` resolves to.

    Raises:
        NativeExtensionMissing: `mode` is "native" and the extension cannot be loaded.
    """
    if resolve_implementation(mode) == "native":
        return NativeEncoder(spec)
    return PythonEncoder(spec)


class HashColumn(Protocol):
    """`hash_column(values, prefix=b"")`: uint64 column hashes, 0 for "" (missing)."""

    def __call__(
        self, values: npt.NDArray[np.object_], prefix: bytes = b""
    ) -> npt.NDArray[np.uint64]: ...


@dataclass(frozen=True)
class Hashing:
    """stable_hash64 and the router's bucket, from one implementation."""

    implementation: Implementation
    stable_hash64: Callable[[bytes], int]
    bucket: Callable[[str, str], int]
    hash_column: HashColumn


def make_hashing(mode: EncoderMode = "auto") -> Hashing:
    """Returns the hash functions chosen like `make_encoder` chooses the encoder."""
    if resolve_implementation(mode) == "native":
        glue = _native()[1]
        return Hashing("native", glue.stable_hash64, glue.bucket, glue.hash_column)
    return Hashing("python", hashing.stable_hash64, hashing.bucket, hashing.hash_column)
