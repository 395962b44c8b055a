"""Type stubs for gateway._native._glue (native/cython/glue.pyx)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

def stable_hash64(data: bytes | bytearray | memoryview) -> int: ...
def bucket(salt: str, key: str) -> int: ...
def hash_column(
    values: npt.NDArray[Any] | Sequence[str], prefix: bytes = b""
) -> npt.NDArray[np.uint64]: ...
