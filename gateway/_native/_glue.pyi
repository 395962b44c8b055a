"""Type stubs for gateway._native._glue (native/cython/glue.pyx)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
