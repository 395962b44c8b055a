"""Type stubs for gateway._native._encoder (native/cpp/bindings.cpp)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

class Program:
    """A feature spec compiled into operations; see native/cpp/encoder.hpp."""

    def __init__(self) -> None: ...
    def add_identity(self, input_index: int, default: float) -> None: ...
    def add_log1p(self, input_index: int, default: float) -> None: ...
    def add_standardize(
        self, input_index: int, mean: float, std: float, default: float
    ) -> None: ...
    def add_bucketize(self, input_index: int, edges: Sequence[float], default: float) -> None: ...
    def add_one_hot(self, input_index: int, vocabulary_hashes: Sequence[int]) -> None: ...
    def add_hash_bucket(self, input_index: int, buckets: int, default: float) -> None: ...
    def add_cyclical(
        self,
        input_index: int,
        unit_ms: float,
        offset: float,
        sin_table: Sequence[float],
        cos_table: Sequence[float],
        default: float,
    ) -> None: ...
    def add_differs(self, input_a: int, input_b: int) -> None: ...
    @property
    def width(self) -> int: ...
    @property
    def numeric_inputs(self) -> int: ...
    @property
    def hash_inputs(self) -> int: ...
    def encode(
        self,
        numeric: npt.NDArray[np.float64],
        hashes: npt.NDArray[np.uint64],
        out: npt.NDArray[np.float32],
    ) -> None:
        """Encodes len(out) rows into out (float32 [n, width], C-contiguous).

        numeric is float64 [numeric_inputs, n] and hashes uint64 [hash_inputs, n], both
        C-contiguous, one row per input. Releases the GIL for large batches.
        """
