"""ISO 4217 minor-unit exponents and a static, approximate USD rate table.

The rates exist so that `amount_usd` puts amounts in different currencies on one
scale for the models. They are approximate mid-market rates (late 2025), frozen on
purpose: a model is trained and served with the same table, so a rate is part of
the feature contract. Never use them to move money. Changing a rate changes
`amount_usd` for every model that reads it: do it only together with a new
feature spec version and retrained models.

Exponents follow ISO 4217 (https://www.iso.org/iso-4217-currency-codes.html), e.g.
HUF and IDR have 2 even though cash rarely uses the minor unit; transaction
processors send `amount_minor` in these ISO units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

# code: (minor-unit exponent, approximate USD per one major unit)
_CURRENCIES: dict[str, tuple[int, float]] = {
    "USD": (2, 1.0),
    "EUR": (2, 1.16),
    "GBP": (2, 1.32),
    "JPY": (0, 0.0066),
    "CHF": (2, 1.25),
    "CAD": (2, 0.72),
    "AUD": (2, 0.65),
    "NZD": (2, 0.57),
    "SEK": (2, 0.105),
    "NOK": (2, 0.099),
    "DKK": (2, 0.155),
    "ISK": (0, 0.0079),
    "PLN": (2, 0.273),
    "CZK": (2, 0.048),
    "HUF": (2, 0.0030),
    "RON": (2, 0.228),
    "TRY": (2, 0.024),
    "ILS": (2, 0.30),
    "BRL": (2, 0.186),
    "MXN": (2, 0.054),
    "ARS": (2, 0.0007),
    "CLP": (0, 0.00106),
    "COP": (2, 0.00026),
    "PEN": (2, 0.295),
    "INR": (2, 0.0113),
    "CNY": (2, 0.140),
    "HKD": (2, 0.1286),
    "SGD": (2, 0.77),
    "KRW": (0, 0.0007),
    "THB": (2, 0.031),
    "MYR": (2, 0.24),
    "IDR": (2, 0.00006),
    "PHP": (2, 0.0171),
    "VND": (0, 0.000038),
    "ZAR": (2, 0.058),
    "EGP": (2, 0.021),
    "NGN": (2, 0.00068),
    "AED": (2, 0.2723),
    "SAR": (2, 0.2667),
    "KWD": (3, 3.26),
    "BHD": (3, 2.6596),
    "JOD": (3, 1.4104),
    "OMR": (3, 2.6008),
    "TND": (3, 0.34),
}

CURRENCIES: frozenset[str] = frozenset(_CURRENCIES)
"""The ISO 4217 codes this gateway knows."""


class UnknownCurrencyError(KeyError):
    """A currency code missing from the table."""

    def __init__(self, currency: object) -> None:
        super().__init__(currency)
        self.currency = currency

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument; give a sentence instead.
        return (
            f"unknown currency {self.currency!r}: expected an ISO 4217 code the gateway knows "
            f"({len(CURRENCIES)} codes, e.g. USD, EUR, JPY)"
        )


def _entry(currency: str) -> tuple[int, float]:
    try:
        return _CURRENCIES[currency]
    except (KeyError, TypeError):
        raise UnknownCurrencyError(currency) from None


def minor_unit_exponent(currency: str) -> int:
    """Returns the ISO 4217 minor-unit exponent (USD 2, JPY 0, BHD 3)."""
    return _entry(currency)[0]


def usd_rate(currency: str) -> float:
    """Returns the static, approximate USD value of one major unit of `currency`."""
    return _entry(currency)[1]


def amount_major(amount_minor: int, currency: str) -> float:
    """Returns the amount in major units: amount_minor / 10**exponent, in float64."""
    return float(amount_minor) / float(10 ** minor_unit_exponent(currency))


def to_usd(amount_minor: int, currency: str) -> float:
    """Returns the approximate USD value of an amount given in minor units."""
    return amount_major(amount_minor, currency) * usd_rate(currency)


def amount_major_array(
    amount_minor: npt.NDArray[Any], currencies: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """Vectorized `amount_major`, bit-identical to it element by element."""
    exponents, _ = _lookup(currencies)
    return np.asarray(amount_minor, dtype=np.int64).astype(np.float64) / exponents


def to_usd_array(
    amount_minor: npt.NDArray[Any], currencies: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """Vectorized `to_usd`, bit-identical to it element by element."""
    scales, rates = _lookup(currencies)
    return np.asarray(amount_minor, dtype=np.int64).astype(np.float64) / scales * rates


def _lookup(
    currencies: npt.NDArray[Any],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Returns per-row (10**exponent, usd rate); a table has a handful of distinct codes."""
    codes = np.asarray(currencies, dtype=object).ravel().tolist()
    per_code = {}
    for code in set(codes):
        exponent, rate = _entry(code)
        per_code[code] = (float(10**exponent), rate)
    pairs = np.array([per_code[c] for c in codes], dtype=np.float64).reshape(len(codes), 2)
    return pairs[:, 0], pairs[:, 1]
