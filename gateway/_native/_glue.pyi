"""Type stubs for gateway._native._glue (native/cython/glue.pyx)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, final

import numpy as np
import numpy.typing as npt

def stable_hash64(data: bytes | bytearray | memoryview) -> int: ...
def bucket(salt: str, key: str) -> int: ...
def hash_column(
    values: npt.NDArray[Any] | Sequence[str], prefix: bytes = b""
) -> npt.NDArray[np.uint64]: ...

class TransactionReader:
    """Reads protobuf Transactions into an encoder's input matrices, in one pass."""

    def __init__(
        self,
        numeric: Iterable[tuple[str, str]],
        hashed: Iterable[tuple[str, str, bytes]],
        currencies: Mapping[str, tuple[float, float]],
        channel_names: Mapping[int, str],
        unknown_currency: type[Exception],
    ) -> None: ...
    @property
    def numeric_inputs(self) -> int: ...
    @property
    def hash_inputs(self) -> int: ...
    def read(self, txns: Sequence[Any]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """Returns (numeric float64 [numeric_inputs, n], hashes uint64 [hash_inputs, n])."""

class _ReasonCode(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def feature(self) -> str: ...
    @property
    def contribution(self) -> float: ...
    @property
    def description(self) -> str: ...

@final
class ResponseWriter:
    """Writes riskwire.v1.ScoreResponse / ScoreBatchResponse wire bytes directly."""

    implementation: Literal["native"]
    def score_response(
        self,
        transaction_id: str,
        score: float,
        decision: int,
        model_name: str,
        model_version: str,
        arm: int,
        decision_source: int,
        route: str,
        config_version: int,
        audit_id: str,
        server_latency_us: int,
        fallback_reason: str,
        reason_codes: Sequence[_ReasonCode] = (),
    ) -> bytes: ...
    def score_batch_response(self, responses: Sequence[bytes]) -> bytes: ...

@final
class Histogram:
    """A fixed-bucket histogram with Prometheus `le` buckets, recorded per request."""

    implementation: Literal["native"]
    def __init__(self, edges: Iterable[float]) -> None: ...
    def record(self, value: float) -> None: ...
    def record_many(self, values: npt.ArrayLike) -> None: ...
    def counts(self) -> npt.NDArray[np.uint64]: ...
    def reset(self) -> None: ...
    @property
    def edges(self) -> tuple[float, ...]: ...
    @property
    def count(self) -> int: ...
    @property
    def sum(self) -> float: ...
    @property
    def nan_count(self) -> int: ...
