"""Type stubs for gateway._native._encoder (native/cpp/bindings.cpp)."""

from collections.abc import Iterable, Mapping, Sequence, Set
from typing import final

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
    def encode_parsed(
        self,
        reader: InputReader,
        parsed: ParsedBatch,
        rows: npt.NDArray[np.int64] | None,
        out: npt.NDArray[np.float32],
    ) -> None:
        """Encodes parsed's transactions (those `rows` selects, in order; None = all) into
        out (float32 [n, width], C-contiguous), read through `reader`.

        Releases the GIL for large batches, like encode.

        Raises:
            IndexError: A row is outside [0, len(parsed)).
            ValueError: out's shape, or reader's inputs do not match the program.
            Exception: reader's unknown_currency(code), for an amount read on a currency
                missing from its table.
        """

class WireError(ValueError):
    """A request the wire parser refuses: "<field path>: <problem> at byte <offset>"."""

@final
class WireParser:
    """Parses riskwire.v1 ScoreRequest / ScoreBatchRequest bytes (native/cpp/wire.hpp)."""

    def __init__(
        self, channel_names: Mapping[int, str], max_transactions: int, max_map_entries: int = 4096
    ) -> None: ...
    def parse_score_request(self, data: bytes | bytearray | memoryview) -> ParsedBatch:
        """A batch of exactly one transaction (all defaults when the request has none).

        Raises:
            WireError: data is not a valid ScoreRequest, or breaks a limit.
        """
    def parse_score_batch_request(self, data: bytes | bytearray | memoryview) -> ParsedBatch:
        """Raises WireError: not a valid ScoreBatchRequest, or more than max_transactions
        transactions, or a limit broken."""

@final
class ParsedBatch:
    """A parsed request; its transactions are views into the (kept alive) bytes."""

    def __len__(self) -> int: ...
    @property
    def explain(self) -> bool: ...
    @property
    def route(self) -> str: ...
    def transaction_ids(self) -> list[str]: ...
    def routing_keys(self) -> list[dict[str, str]]:
        """Per transaction: channel (its name, "" when 0 or unknown), account_id, card_id,
        merchant_id, device_id, transaction_id, country, merchant_category_code."""
    def monitoring_attributes(self) -> list[dict[str, str]]:
        """Each transaction's monitoring_attributes map, in order."""
    def transaction(self, index: int) -> dict[str, object]:
        """Every Transaction field by its proto name (converters.fields_of); maps as
        dicts, customer_tenure_days None when unset. IndexError unless
        0 <= index < len(self)."""
    def amount_and_currency(self, index: int) -> tuple[int, str]:
        """``transaction(index)``'s amount_minor and currency, without the dict."""
    def first_invalid(self, currencies: Set[str], channels: Set[int], max_id_chars: int) -> int:
        """Index of the first transaction converters.check_fields refuses, -1 if none."""

@final
class InputReader:
    """Reads ParsedBatch transactions into encoder inputs (native/cpp/reader.hpp); takes
    what gateway._native._glue.TransactionReader takes."""

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
    def read(
        self, parsed: ParsedBatch, rows: npt.NDArray[np.int64] | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint64]]:
        """Returns (numeric float64 [numeric_inputs, n], hashes uint64 [hash_inputs, n])."""
