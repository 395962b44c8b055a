"""A deterministic synthetic card-transaction generator with realistic fraud patterns.

The world: a population of accounts (home country, typical spend, tenure, one to three
usual devices, a card or two, monitoring attributes) spending at a population of
merchants (ISO 18245 MCC, country, risk, age) over ``days`` days with a daily and weekly
rhythm. Legit traffic includes look-alikes of each fraud pattern (travellers, new
phones, bursts of small purchases, big-ticket purchases) so that a good model reaches a
realistic AUC, not a perfect one. Fraud is injected as episodes on victim accounts:

- ``card_testing``: bursts of tiny online amounts on one card within minutes;
- ``account_takeover``: a new device, often a foreign IP, larger than usual amounts;
- ``high_value_risky_mcc``: large amounts at gambling, quasi-cash, money transfer,
  electronics, jewelry, direct marketing;
- ``geo_mismatch``: a counterfeit card used abroad, or an online purchase from an IP far
  from home.

The velocity and average-amount extras are computed from the generated stream itself
(exact counts of the card's earlier transactions), as a processor's feature store would.
Everything is vectorized numpy on one ``numpy.random.Generator(PCG64(seed))``: the same
rows, seed and options give a byte-identical CSV.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from gateway.data.table import FRAUD_PATTERNS, Table, data_digest, table_to_csv_bytes
from gateway.features import currency

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
DEFAULT_START_MS = 1_791_158_400_000
"""2026-10-05T00:00:00Z, a Monday."""

CHANNELS: tuple[str, ...] = (
    "ECOMMERCE",
    "CARD_PRESENT",
    "CARD_NOT_PRESENT",
    "ATM",
    "TRANSFER",
    "WALLET",
)
_ECOM, _CP, _CNP, _ATM, _TRANSFER, _WALLET = range(6)
_BASE_CHANNEL_WEIGHTS = (0.28, 0.46, 0.04, 0.07, 0.05, 0.10)
# Channels where the processor sees the customer's device and IP (app or browser).
_DIGITAL = np.array([True, False, False, False, True, True])

ENTRY_MODES: tuple[str, ...] = (
    "CHIP",
    "CONTACTLESS",
    "MAGSTRIPE",
    "MANUAL",
    "CREDENTIAL_ON_FILE",
    "TOKEN",
)
_CHIP, _CONTACTLESS, _MAGSTRIPE, _MANUAL, _COF, _TOKEN = range(6)
# P(entry mode | channel), rows in CHANNELS order, columns in ENTRY_MODES order.
_ENTRY_GIVEN_CHANNEL = np.array(
    [
        [0.0, 0.0, 0.0, 0.40, 0.45, 0.15],
        [0.55, 0.40, 0.05, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        [0.90, 0.0, 0.10, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        [0.0, 0.40, 0.0, 0.0, 0.0, 0.60],
    ]
)

CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP", "JPY", "BHD")
# Minor units and USD values from the gateway's own table, so the amount_usd the models
# see matches the USD amounts the generator meant.
_CURRENCY_EXPONENT = np.array([currency.minor_unit_exponent(c) for c in CURRENCIES])
_USD_PER_UNIT = np.array([currency.usd_rate(c) for c in CURRENCIES])


@dataclass(frozen=True)
class _Country:
    code: str
    home_weight: float
    merchant_weight: float
    currency: int
    utc_offset_h: int
    lat: float
    lon: float


_USD, _EUR, _GBP, _JPY, _BHD = range(5)
# Home countries carry the cardholder population; the rest are travel destinations,
# cross-border merchants and where fraud tends to come from. Merchants in countries
# outside the five currencies price in USD, as cross-border acquirers commonly do.
_COUNTRIES: tuple[_Country, ...] = (
    _Country("US", 0.42, 0.40, _USD, -5, 39.8, -98.6),
    _Country("GB", 0.14, 0.14, _GBP, 0, 54.0, -2.0),
    _Country("DE", 0.09, 0.09, _EUR, 1, 51.2, 10.4),
    _Country("FR", 0.08, 0.08, _EUR, 1, 46.6, 2.2),
    _Country("ES", 0.05, 0.05, _EUR, 1, 40.4, -3.7),
    _Country("IT", 0.04, 0.04, _EUR, 1, 42.8, 12.6),
    _Country("NL", 0.03, 0.03, _EUR, 1, 52.1, 5.3),
    _Country("IE", 0.02, 0.02, _EUR, 0, 53.4, -8.2),
    _Country("JP", 0.07, 0.07, _JPY, 9, 36.2, 138.3),
    _Country("BH", 0.02, 0.015, _BHD, 3, 26.0, 50.55),
    _Country("MX", 0.0, 0.010, _USD, -6, 23.6, -102.5),
    _Country("BR", 0.0, 0.005, _USD, -3, -14.2, -51.9),
    _Country("RO", 0.0, 0.005, _USD, 2, 45.9, 24.97),
    _Country("NG", 0.0, 0.003, _USD, 1, 9.1, 8.7),
    _Country("RU", 0.0, 0.002, _USD, 3, 61.5, 105.3),
    _Country("TR", 0.0, 0.005, _USD, 3, 39.0, 35.2),
    _Country("TH", 0.0, 0.006, _USD, 7, 15.9, 100.9),
    _Country("ID", 0.0, 0.003, _USD, 7, -0.8, 113.9),
    _Country("SG", 0.0, 0.005, _USD, 8, 1.35, 103.8),
    _Country("AE", 0.0, 0.006, _USD, 4, 23.4, 53.8),
    _Country("CN", 0.0, 0.003, _USD, 8, 35.9, 104.2),
    _Country("UA", 0.0, 0.002, _USD, 2, 48.4, 31.2),
)
COUNTRY_CODES: tuple[str, ...] = tuple(c.code for c in _COUNTRIES)
_CODE_INDEX = {code: i for i, code in enumerate(COUNTRY_CODES)}
_N_HOME = sum(1 for c in _COUNTRIES if c.home_weight > 0)
_FRAUD_IP_COUNTRIES = np.array(
    [_CODE_INDEX[c] for c in ("NG", "RU", "BR", "RO", "ID", "UA", "CN", "TR", "US", "NL", "GB")]
)
_FRAUD_IP_WEIGHTS = np.array([0.12, 0.12, 0.1, 0.12, 0.08, 0.08, 0.06, 0.08, 0.1, 0.08, 0.06])
_VPN_COUNTRIES = np.array([_CODE_INDEX[c] for c in ("US", "NL", "DE", "GB", "SG", "IE")])
_OFFSET_MS = np.array([c.utc_offset_h * HOUR_MS for c in _COUNTRIES], dtype=np.int64)
_COUNTRY_CURRENCY = np.array([c.currency for c in _COUNTRIES])


@dataclass(frozen=True)
class _Mcc:
    code: str
    weight: float
    amount_factor: float  # multiple of the account's typical spend
    risk: float  # base merchant risk score in [0, 1]
    store: bool  # sells card-present
    online: bool  # sells e-commerce / mail order / wallet


_MCCS: tuple[_Mcc, ...] = (
    _Mcc("5411", 0.18, 1.0, 0.05, True, True),  # grocery
    _Mcc("5812", 0.11, 0.9, 0.05, True, False),  # restaurants
    _Mcc("5814", 0.08, 0.3, 0.05, True, True),  # fast food
    _Mcc("5541", 0.07, 1.1, 0.08, True, False),  # fuel
    _Mcc("5311", 0.05, 1.6, 0.08, True, True),  # department stores
    _Mcc("5651", 0.05, 1.7, 0.08, True, True),  # clothing
    _Mcc("5912", 0.04, 0.6, 0.05, True, True),  # drug stores
    _Mcc("4111", 0.04, 0.12, 0.05, True, True),  # transit
    _Mcc("4121", 0.04, 0.6, 0.08, True, True),  # taxis, rideshare
    _Mcc("4899", 0.03, 0.5, 0.08, False, True),  # cable, streaming
    _Mcc("5999", 0.05, 1.0, 0.25, True, True),  # misc retail
    _Mcc("5815", 0.04, 0.25, 0.2, False, True),  # digital media
    _Mcc("5816", 0.02, 0.4, 0.3, False, True),  # digital games
    _Mcc("4511", 0.015, 8.0, 0.2, False, True),  # airlines
    _Mcc("7011", 0.015, 5.0, 0.15, True, True),  # hotels
    _Mcc("5732", 0.03, 4.0, 0.45, True, True),  # electronics
    _Mcc("5944", 0.008, 6.0, 0.5, True, True),  # jewelry
    _Mcc("7995", 0.01, 2.0, 0.6, True, True),  # gambling
    _Mcc("5967", 0.01, 1.2, 0.6, False, True),  # direct marketing, inbound telemarketing
    _Mcc("6051", 0.006, 3.0, 0.7, True, True),  # quasi-cash, crypto, money orders
    _Mcc("6011", 0.0, 2.5, 0.1, False, False),  # ATM cash (ATM channel only)
    _Mcc("4829", 0.0, 5.0, 0.55, False, False),  # money transfer (TRANSFER channel only)
)
MCC_CODES: tuple[str, ...] = tuple(m.code for m in _MCCS)
_MCC_INDEX = {m.code: i for i, m in enumerate(_MCCS)}
HIGH_RISK_MCCS: tuple[str, ...] = ("7995", "5967", "4829", "6051", "5732", "5944")
_HIGH_RISK = np.array([m.code in HIGH_RISK_MCCS for m in _MCCS])
_MCC_FACTOR = np.array([m.amount_factor for m in _MCCS])

AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-49", "50-64", "65+")
_AGE_WEIGHTS = (0.12, 0.22, 0.28, 0.23, 0.15)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
_REGION_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.2)
# Exposure scores for the fairness knob: fraud that targets the elderly and the young,
# and one region, as a synthetic stand-in for a real disparity.
_AGE_TARGET = np.array([0.6, 0.0, 0.0, 0.2, 1.0])
_REGION_TARGET = np.array([0.0, 0.8, 0.3, 0.0, 0.0])
CARD_TYPES: tuple[str, ...] = ("DEBIT", "CREDIT", "PREPAID")

# Local hour-of-day activity for legit spending (quiet nights, lunch and evening peaks)
# and for fraud (flatter, more at night).
_LEGIT_HOURS = np.array(
    [0.8, 0.5, 0.3, 0.25, 0.25, 0.4, 1.0, 2.2, 3.4, 4.2, 4.8, 5.6,
     6.4, 6.0, 5.4, 5.2, 5.6, 6.2, 6.6, 6.0, 4.8, 3.6, 2.4, 1.4]
)  # fmt: skip
_FRAUD_HOURS = np.array(
    [2.4, 2.8, 3.0, 3.0, 2.6, 2.0, 1.8, 2.0, 2.4, 2.8, 3.0, 3.2,
     3.2, 3.2, 3.2, 3.2, 3.2, 3.4, 3.6, 3.8, 3.8, 3.6, 3.2, 2.8]
)  # fmt: skip
_WEEKDAY_WEIGHTS = np.array([0.93, 0.95, 0.98, 1.0, 1.15, 1.2, 0.9])  # Monday first

EXTRA_NUMERIC: tuple[str, ...] = (
    "txn_count_1h",
    "txn_count_24h",
    "amount_to_avg_ratio",
    "device_age_days",
    "distance_from_home_km",
    "merchant_age_days",
    "merchant_risk_score",
)
EXTRA_CATEGORICAL: tuple[str, ...] = ("home_country", "card_type")
MONITORING: tuple[str, ...] = ("age_band", "region")

# Shares of fraud rows by pattern, in FRAUD_PATTERNS[1:] order.
_PATTERN_SHARES = (0.32, 0.28, 0.2, 0.2)
# Share of takeover, high-value and geo-mismatch fraud rows that look like everyday
# spending (see _quieten): it sets the ceiling on a model's AUC.
_QUIET_SHARE = 0.3


@dataclass(frozen=True)
class SynthOptions:
    """Knobs of the generator; the defaults are the training distribution.

    Attributes:
        fraud_rate: fraction of rows that are fraud, in (0, 0.2].
        amount_shift: multiplier on every amount (inflation, a new market).
        merchant_mix: 0..1, shifts legit spending toward high-risk MCCs and merchants
            younger than 90 days (up to 10x their usual weight at 1).
        channel_mix: channel name -> relative weight, replacing the base weight of the
            channels named (e.g. ``{"ECOMMERCE": 0.6}`` for an online-heavy month).
        attribute_label_correlation: 0..1, how strongly fraud victims are drawn by
            their monitoring attributes (age band 65+ and 18-24, region south);
            0 keeps ``m_age_band`` and ``m_region`` independent of the label.
        days: length of the period.
        start_ms: start of the period, Unix epoch ms (a Monday 00:00 UTC by default).
    """

    fraud_rate: float = 0.01
    amount_shift: float = 1.0
    merchant_mix: float = 0.0
    channel_mix: Mapping[str, float] = field(default_factory=dict)
    attribute_label_correlation: float = 0.0
    days: int = 30
    start_ms: int = DEFAULT_START_MS

    def __post_init__(self) -> None:
        if not 0.0 < self.fraud_rate <= 0.2:
            raise ValueError(f"fraud_rate must be in (0, 0.2], got {self.fraud_rate}")
        if not 0.0 < self.amount_shift <= 1000.0:
            raise ValueError(f"amount_shift must be in (0, 1000], got {self.amount_shift}")
        if not 0.0 <= self.merchant_mix <= 1.0:
            raise ValueError(f"merchant_mix must be in [0, 1], got {self.merchant_mix}")
        if not 0.0 <= self.attribute_label_correlation <= 1.0:
            raise ValueError(
                "attribute_label_correlation must be in [0, 1], got "
                f"{self.attribute_label_correlation}"
            )
        if not 1 <= self.days <= 366:
            raise ValueError(f"days must be in [1, 366], got {self.days}")
        for name, weight in self.channel_mix.items():
            if name not in CHANNELS:
                raise ValueError(f"channel_mix names unknown channel {name!r}; use {CHANNELS}")
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"channel_mix[{name!r}] must be >= 0, got {weight}")
        # A private sorted copy: the caller's dict cannot change a frozen options object.
        object.__setattr__(self, "channel_mix", dict(sorted(self.channel_mix.items())))
        if sum(self._channel_weights()) <= 0.0:
            raise ValueError("channel_mix leaves every channel with weight 0")

    def _channel_weights(self) -> list[float]:
        return [
            self.channel_mix.get(c, w) for c, w in zip(CHANNELS, _BASE_CHANNEL_WEIGHTS, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain values for lineage records (stable key order)."""
        return {
            "fraud_rate": self.fraud_rate,
            "amount_shift": self.amount_shift,
            "merchant_mix": self.merchant_mix,
            "channel_mix": dict(self.channel_mix),
            "attribute_label_correlation": self.attribute_label_correlation,
            "days": self.days,
            "start_ms": self.start_ms,
        }


def parse_channel_mix(text: str) -> dict[str, float]:
    """Parse ``"ECOMMERCE=0.6,ATM=0.02"`` (a CLI flag) into a channel_mix mapping.

    Raises:
        ValueError: an item is not ``NAME=WEIGHT``.
    """
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"channel_mix item {item!r} must be NAME=WEIGHT")
        try:
            mix[name.strip().upper()] = float(value)
        except ValueError:
            raise ValueError(f"channel_mix weight {value!r} is not a number") from None
    return mix


# --------------------------------------------------------------------------- world


@dataclass(frozen=True)
class _World:
    options: SynthOptions
    end_ms: int
    # accounts
    home: IntArray
    typical_usd: FloatArray
    tenure0: FloatArray  # days at start_ms, NaN when the processor does not know it
    activity: FloatArray  # relative share of legit transactions
    n_devices: IntArray
    device_seen_ms: npt.NDArray[np.int64]  # [accounts, 3] first-seen time per device
    new_device_ms: IntArray  # a legit new phone from then on; end_ms + 1 when none
    trip_country: IntArray
    trip_start_ms: IntArray
    trip_end_ms: IntArray  # trip_start == trip_end when the account does not travel
    n_cards: IntArray
    first_card: IntArray  # card index of the account's first card
    card_account: IntArray
    card_type: IntArray
    age_band: IntArray
    region: IntArray
    # merchants
    m_mcc: IntArray
    m_country: IntArray
    m_currency: IntArray
    m_created_ms: IntArray
    m_risk: FloatArray
    m_popularity: FloatArray


def _normalized(w: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(w, dtype=np.float64)
    return np.asarray(arr / arr.sum(), dtype=np.float64)


def _build_world(rng: np.random.Generator, rows: int, options: SynthOptions) -> _World:
    start = options.start_ms
    end = start + options.days * DAY_MS
    n_acc = max(200, rows // 35)
    home_p = _normalized([c.home_weight for c in _COUNTRIES])
    home = rng.choice(len(_COUNTRIES), size=n_acc, p=home_p)
    age_band = rng.choice(len(AGE_BANDS), size=n_acc, p=_normalized(_AGE_WEIGHTS))
    region = rng.choice(len(REGIONS), size=n_acc, p=_normalized(_REGION_WEIGHTS))
    # Older customers have been with the bank longer; a tenth are new accounts.
    tenure_scale = np.array([300.0, 900.0, 1800.0, 2600.0, 3200.0])[age_band]
    tenure0 = np.where(
        rng.random(n_acc) < 0.1, rng.uniform(0, 90, n_acc), rng.gamma(2.0, tenure_scale / 2.0)
    ).round()
    tenure0[rng.random(n_acc) < 0.02] = np.nan
    spend_by_age = np.array([0.7, 1.0, 1.15, 1.1, 0.9])[age_band]
    typical_usd = np.exp(rng.normal(math.log(32.0), 0.6, n_acc)) * spend_by_age
    activity = np.exp(rng.normal(0.0, 0.7, n_acc))
    n_devices = rng.choice(np.arange(1, 4), size=n_acc, p=[0.5, 0.35, 0.15])
    device_age0 = np.exp(rng.normal(math.log(220.0), 0.9, (n_acc, 3)))
    device_seen_ms = (start - device_age0 * DAY_MS).astype(np.int64)
    new_device_ms = np.where(
        rng.random(n_acc) < 0.15, start + rng.integers(0, end - start, n_acc), end + 1
    ).astype(np.int64)
    # Trips: the legit look-alike of geo mismatch (card present abroad, foreign IP).
    travels = rng.random(n_acc) < 0.12
    dest_w = np.array([c.merchant_weight for c in _COUNTRIES])
    trip_country = rng.choice(len(_COUNTRIES), size=n_acc, p=_normalized(dest_w))
    same = trip_country == home
    trip_country[same] = (trip_country[same] + 1) % len(_COUNTRIES)
    trip_start = start + rng.integers(0, end - start, n_acc)
    trip_len = rng.integers(2, 11, n_acc) * DAY_MS
    trip_end = np.where(travels, trip_start + trip_len, trip_start)
    n_cards = np.where(rng.random(n_acc) < 0.15, 2, 1)
    first_card = np.concatenate([[0], np.cumsum(n_cards)[:-1]])
    card_account = np.repeat(np.arange(n_acc), n_cards)
    card_type = rng.choice(len(CARD_TYPES), size=len(card_account), p=[0.55, 0.4, 0.05])

    n_mer = max(300, rows // 50)
    mcc_p = _normalized([m.weight for m in _MCCS])
    m_mcc = rng.choice(len(_MCCS), size=n_mer, p=mcc_p)
    m_country = rng.choice(len(_COUNTRIES), size=n_mer, p=_normalized(dest_w))
    # Every country gets ATMs and every home country a money-transfer service, so that
    # each channel has somewhere to go wherever the cardholder is.
    atm_country = np.repeat(np.arange(len(_COUNTRIES)), 3)
    xfer_country = np.repeat(np.arange(_N_HOME), 2)
    atm_mcc = np.full(len(atm_country), _MCC_INDEX["6011"])
    xfer_mcc = np.full(len(xfer_country), _MCC_INDEX["4829"])
    m_mcc = np.concatenate([m_mcc, atm_mcc, xfer_mcc])
    m_country = np.concatenate([m_country, atm_country, xfer_country])
    n_mer = len(m_mcc)
    m_currency = _COUNTRY_CURRENCY[m_country]
    m_age0 = np.where(
        rng.random(n_mer) < 0.08,
        rng.uniform(0, 60, n_mer),
        np.exp(rng.normal(math.log(1500.0), 0.8, n_mer)),
    )
    m_created_ms = (start - m_age0 * DAY_MS).astype(np.int64)
    base_risk = np.array([m.risk for m in _MCCS])[m_mcc]
    m_risk = np.clip(base_risk + rng.normal(0.0, 0.08, n_mer), 0.0, 1.0)
    m_popularity = np.exp(rng.normal(0.0, 1.0, n_mer))
    return _World(
        options=options,
        end_ms=end,
        home=home,
        typical_usd=typical_usd,
        tenure0=tenure0,
        activity=activity,
        n_devices=n_devices,
        device_seen_ms=device_seen_ms,
        new_device_ms=new_device_ms,
        trip_country=trip_country,
        trip_start_ms=trip_start.astype(np.int64),
        trip_end_ms=trip_end.astype(np.int64),
        n_cards=n_cards,
        first_card=first_card,
        card_account=card_account,
        card_type=card_type,
        age_band=age_band,
        region=region,
        m_mcc=m_mcc,
        m_country=m_country,
        m_currency=m_currency,
        m_created_ms=m_created_ms,
        m_risk=m_risk,
        m_popularity=m_popularity,
    )


# --------------------------------------------------------------------------- rows


@dataclass
class _Rows:
    """One segment of transactions, before merging and computing extras."""

    account: IntArray
    card: IntArray
    merchant: IntArray
    channel: IntArray
    entry: IntArray
    ts: IntArray
    device: ObjArray
    device_age: FloatArray
    ip_country: IntArray  # -1 when unknown
    amount_usd: FloatArray
    currency: IntArray
    pattern: int


def _pick(rng: np.random.Generator, candidates: IntArray, weights: FloatArray, n: int) -> IntArray:
    if len(candidates) == 0:
        raise AssertionError("no candidate merchants (generator bug)")
    return candidates[rng.choice(len(candidates), size=n, p=_normalized(weights))]


def _merchant_weights(world: _World, tilt: bool) -> FloatArray:
    w = world.m_popularity.copy()
    if tilt and world.options.merchant_mix > 0.0:
        young = world.m_created_ms > world.options.start_ms - 90 * DAY_MS
        boost = _HIGH_RISK[world.m_mcc] | young
        w[boost] *= 1.0 + 9.0 * world.options.merchant_mix
    return w


def _merchant_ok(world: _World, channel: int) -> BoolArray:
    mcc = world.m_mcc
    if channel == _ATM:
        return np.asarray(mcc == _MCC_INDEX["6011"], dtype=np.bool_)
    if channel == _TRANSFER:
        return np.asarray(mcc == _MCC_INDEX["4829"], dtype=np.bool_)
    flags = np.array([m.store if channel == _CP else m.online for m in _MCCS])
    return np.asarray(flags[mcc], dtype=np.bool_)


def _pick_merchants(
    rng: np.random.Generator,
    world: _World,
    channel: IntArray,
    country: IntArray,
    weights: FloatArray,
    mcc_filter: BoolArray | None = None,
) -> IntArray:
    """A merchant per row that serves the row's channel, in the row's country if any."""
    out = np.empty(len(channel), dtype=np.int64)
    for ch in np.unique(channel):
        ok = _merchant_ok(world, int(ch))
        if mcc_filter is not None and ch not in (_ATM, _TRANSFER):
            ok = ok & mcc_filter[world.m_mcc]
        rows_ch = np.flatnonzero(channel == ch)
        for c in np.unique(country[rows_ch]):
            rows = rows_ch[country[rows_ch] == c]
            cand = np.flatnonzero(ok & (world.m_country == c))
            if len(cand) == 0:
                cand = np.flatnonzero(ok)
            out[rows] = _pick(rng, cand, weights[cand], len(rows))
    return out


def _entry_modes(rng: np.random.Generator, channel: IntArray) -> IntArray:
    cum = np.cumsum(_ENTRY_GIVEN_CHANNEL[channel], axis=1)
    u = rng.random(len(channel))[:, None]
    return np.asarray(np.minimum((u >= cum).sum(axis=1), len(ENTRY_MODES) - 1), dtype=np.int64)


def _times(
    rng: np.random.Generator, world: _World, n: int, account: IntArray, hours: FloatArray
) -> IntArray:
    """Timestamps with a weekly rhythm and an hour-of-day rhythm in the home time zone."""
    opts = world.options
    dow = (np.arange(opts.days) + (opts.start_ms // DAY_MS + 3)) % 7
    day = rng.choice(opts.days, size=n, p=_normalized(_WEEKDAY_WEIGHTS[dow]))
    hour = rng.choice(24, size=n, p=_normalized(hours))
    local = opts.start_ms + day * DAY_MS + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    # Wrap the time-zone shift around the period rather than clip it, which would pile
    # rows up on the first and last millisecond.
    shifted = local - _OFFSET_MS[world.home[account]] - opts.start_ms
    return np.asarray(opts.start_ms + np.mod(shifted, world.end_ms - opts.start_ms), dtype=np.int64)


def _pick_accounts(rng: np.random.Generator, world: _World, n: int) -> IntArray:
    return rng.choice(len(world.home), size=n, p=_normalized(world.activity))


def _pick_victims(rng: np.random.Generator, world: _World, n: int) -> IntArray:
    """Fraud victims: active accounts, tilted toward targeted groups by the fairness knob."""
    rho = world.options.attribute_label_correlation
    score = _AGE_TARGET[world.age_band] + _REGION_TARGET[world.region]
    weights = world.activity * np.exp(3.0 * rho * score)
    return rng.choice(len(world.home), size=n, p=_normalized(weights))


def _cards_of(rng: np.random.Generator, world: _World, account: IntArray) -> IntArray:
    k = (rng.random(len(account)) * world.n_cards[account]).astype(np.int64)
    return world.first_card[account] + k


def _own_devices(
    rng: np.random.Generator, world: _World, account: IntArray, ts: IntArray
) -> tuple[ObjArray, FloatArray]:
    """The account's usual device (or its new phone after the switch) and its age in days."""
    k = (rng.random(len(account)) * world.n_devices[account]).astype(np.int64)
    seen = world.device_seen_ms[account, k]
    switched = ts >= world.new_device_ms[account]
    seen = np.where(switched, world.new_device_ms[account], seen)
    slot = np.where(switched, "n", k.astype(str))
    names = np.array(
        [f"d{a:06d}{d}" for a, d in zip(account.tolist(), slot.tolist(), strict=True)],
        dtype=object,
    )
    age = np.round((ts - seen) / DAY_MS, 2)
    return names, age


def _location(world: _World, account: IntArray, ts: IntArray) -> IntArray:
    """Where the cardholder is: abroad during a trip, else at home."""
    away = (ts >= world.trip_start_ms[account]) & (ts < world.trip_end_ms[account])
    return np.where(away, world.trip_country[account], world.home[account])


def _legit_rows(
    rng: np.random.Generator, world: _World, n: int, burst_share: float, big_share: float
) -> list[_Rows]:
    """Everyday spending plus the legit look-alikes of the fraud patterns."""
    n_burst_rows = round(n * burst_share)
    n_big = round(n * big_share)
    n_norm = n - n_burst_rows - n_big
    segments = [_everyday_rows(rng, world, n_norm)]
    if n_burst_rows:
        segments.append(_legit_burst_rows(rng, world, n_burst_rows))
    if n_big:
        segments.append(_big_ticket_rows(rng, world, n_big))
    return segments


def _digital_fields(
    rng: np.random.Generator,
    world: _World,
    account: IntArray,
    channel: IntArray,
    ts: IntArray,
    location: IntArray,
) -> tuple[ObjArray, FloatArray, IntArray]:
    n = len(account)
    digital = _DIGITAL[channel]
    device, age = _own_devices(rng, world, account, ts)
    # Cleared cookies, a new browser, a work laptop: legit sessions on a fresh device.
    fresh = rng.random(n) < 0.04
    fresh_rows = np.flatnonzero(fresh).tolist()
    device[fresh] = np.array([f"b{account[i]:06d}{i % 97:02d}" for i in fresh_rows], dtype=object)
    age[fresh] = np.round(rng.uniform(0.0, 3.0, int(fresh.sum())), 2)
    device[~digital] = ""
    age[~digital] = np.nan
    vpn = rng.random(n) < 0.06
    ip = np.where(vpn, rng.choice(_VPN_COUNTRIES, size=n), location)
    ip = np.where(digital, ip, -1)
    return device, age, ip


def _everyday_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    opts = world.options
    account = _pick_accounts(rng, world, n)
    ts = _times(rng, world, n, account, _LEGIT_HOURS)
    channel = rng.choice(len(CHANNELS), size=n, p=_normalized(opts._channel_weights()))
    here = _location(world, account, ts)
    # Online merchants are often abroad (cross-border e-commerce): a legit geo mismatch.
    online = np.isin(channel, [_ECOM, _CNP, _WALLET])
    abroad = online & (rng.random(n) < 0.2)
    dest = rng.choice(
        len(_COUNTRIES), size=n, p=_normalized([c.merchant_weight for c in _COUNTRIES])
    )
    m_country = np.where(abroad, dest, here)
    m_country = np.where(online & ~abroad, world.home[account], m_country)
    merchant = _pick_merchants(rng, world, channel, m_country, _merchant_weights(world, True))
    device, age, ip = _digital_fields(rng, world, account, channel, ts, here)
    amount = (
        world.typical_usd[account]
        * _MCC_FACTOR[world.m_mcc[merchant]]
        * np.exp(rng.normal(0.0, 0.7, n))
    )
    return _Rows(
        account=account,
        card=_cards_of(rng, world, account),
        merchant=merchant,
        channel=channel,
        entry=_entry_modes(rng, channel),
        ts=ts,
        device=device,
        device_age=age,
        ip_country=ip,
        amount_usd=amount,
        currency=_priced_in(rng, world, merchant, channel),
        pattern=0,
    )


def _priced_in(
    rng: np.random.Generator, world: _World, merchant: IntArray, channel: IntArray
) -> IntArray:
    # Some online merchants price in USD whatever their country.
    usd = _DIGITAL[channel] & (rng.random(len(merchant)) < 0.08)
    return np.where(usd, _USD, world.m_currency[merchant]).astype(np.int64)


def _episodes(
    rng: np.random.Generator, n_rows: int, low: int, high: int
) -> tuple[IntArray, IntArray]:
    """Episode sizes in [low, high] summing to n_rows (the last one cut); row -> episode."""
    sizes = rng.integers(low, high + 1, size=n_rows // max(low, 1) + 1)
    ends = np.cumsum(sizes)
    count = int(np.searchsorted(ends, n_rows)) + 1
    sizes = sizes[:count].copy()
    sizes[-1] -= int(ends[count - 1]) - n_rows
    sizes = sizes[sizes > 0]
    return sizes, np.repeat(np.arange(len(sizes)), sizes)


def _within(rng: np.random.Generator, sizes: IntArray, mean_gap_ms: float) -> IntArray:
    """Offsets of each row from its episode's start (exponential gaps, first at 0)."""
    gaps = rng.exponential(mean_gap_ms, int(sizes.sum())).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gaps[starts] = 0
    total = np.cumsum(gaps)
    return np.asarray(total - np.repeat(total[starts], sizes), dtype=np.int64)


def _legit_burst_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    """Legit bursts of small purchases: transit taps, in-app purchases, parking."""
    sizes, ep = _episodes(rng, n, 3, 12)
    acc_ep = _pick_accounts(rng, world, len(sizes))
    account = acc_ep[ep]
    start = _times(rng, world, len(sizes), acc_ep, _LEGIT_HOURS)
    ts = np.minimum(start[ep] + _within(rng, sizes, 6 * MINUTE_MS), world.end_ms - 1)
    card_ep = _cards_of(rng, world, acc_ep)
    ch_ep = np.where(rng.random(len(sizes)) < 0.5, _ECOM, _WALLET)
    channel = ch_ep[ep]
    filt = np.isin(np.arange(len(_MCCS)), [_MCC_INDEX[c] for c in ("5815", "5816", "4111")])
    here = _location(world, account, ts)
    merchant_ep = _pick_merchants(rng, world, ch_ep, world.home[acc_ep], world.m_popularity, filt)
    device, age, ip = _digital_fields(rng, world, account, channel, ts, here)
    return _Rows(
        account=account,
        card=card_ep[ep],
        merchant=merchant_ep[ep],
        channel=channel,
        entry=_entry_modes(rng, channel),
        ts=ts,
        device=device,
        device_age=age,
        ip_country=ip,
        amount_usd=rng.uniform(0.5, 6.0, n),
        currency=world.m_currency[merchant_ep[ep]],
        pattern=0,
    )


def _big_ticket_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    """Legit large purchases at the MCCs fraudsters like too."""
    account = _pick_accounts(rng, world, n)
    ts = _times(rng, world, n, account, _LEGIT_HOURS)
    channel = np.where(rng.random(n) < 0.55, _ECOM, _CP)
    here = _location(world, account, ts)
    filt = np.isin(
        np.arange(len(_MCCS)), [_MCC_INDEX[c] for c in ("5732", "5944", "7995", "4511", "6051")]
    )
    merchant = _pick_merchants(rng, world, channel, here, world.m_popularity, filt)
    device, age, ip = _digital_fields(rng, world, account, channel, ts, here)
    amount = world.typical_usd[account] * rng.uniform(6.0, 30.0, n)
    return _Rows(
        account=account,
        card=_cards_of(rng, world, account),
        merchant=merchant,
        channel=channel,
        entry=_entry_modes(rng, channel),
        ts=ts,
        device=device,
        device_age=age,
        ip_country=ip,
        amount_usd=amount,
        currency=_priced_in(rng, world, merchant, channel),
        pattern=0,
    )


def _fraud_devices(
    rng: np.random.Generator, tag: str, episode: IntArray
) -> tuple[ObjArray, FloatArray]:
    """A fraudster's device per episode: mostly first seen days ago, some reused for weeks."""
    n_ep = int(episode.max()) + 1
    fresh = rng.uniform(0.0, 2.0, n_ep)
    reused = rng.exponential(25.0, n_ep)
    age_ep = np.round(np.where(rng.random(n_ep) < 0.7, fresh, reused), 2)
    names = np.array([f"{tag}{e:06d}" for e in episode.tolist()], dtype=object)
    return names, np.asarray(age_ep[episode], dtype=np.float64)


def _card_testing_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    sizes, ep = _episodes(rng, n, 3, 25)
    n_ep = len(sizes)
    victim = _pick_victims(rng, world, n_ep)
    start = _times(rng, world, n_ep, victim, _FRAUD_HOURS)
    # Bursts run from seconds to a few minutes apart: the whole test takes minutes.
    # A third test low and slow, minutes to an hour apart, to stay under velocity rules.
    slow = rng.random(n_ep) < 0.3
    gap_ep = np.where(
        slow, rng.uniform(600_000.0, 3_600_000.0, n_ep), rng.uniform(10_000.0, 150_000.0, n_ep)
    )
    gaps = (rng.exponential(1.0, len(ep)) * gap_ep[ep]).astype(np.int64)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gaps[firsts] = 0
    cum = np.cumsum(gaps)
    ts = np.minimum(start[ep] + cum - np.repeat(cum[firsts], sizes), world.end_ms - 1)
    ch_ep = np.where(rng.random(n_ep) < 0.8, _ECOM, _CNP)
    channel = ch_ep[ep]
    filt = np.isin(
        np.arange(len(_MCCS)), [_MCC_INDEX[c] for c in ("5815", "5816", "5999", "5967", "4899")]
    )
    # One to three merchants per burst: testers rotate between weak merchants anywhere.
    anywhere = rng.choice(
        len(_COUNTRIES), size=3 * n_ep, p=_normalized([c.merchant_weight for c in _COUNTRIES])
    )
    risky_w = world.m_popularity * (0.2 + world.m_risk)
    slots = _pick_merchants(rng, world, np.repeat(ch_ep, 3), anywhere, risky_w, filt)
    used = rng.integers(1, 4, n_ep)
    slot = (rng.random(len(ep)) * used[ep]).astype(np.int64)
    merchant = slots.reshape(n_ep, 3)[ep, slot]
    device, age = _fraud_devices(rng, "ft", ep)
    digital = _DIGITAL[channel]
    device[~digital] = ""
    age[~digital] = np.nan
    foreign = rng.random(n_ep) < 0.6
    fip = rng.choice(_FRAUD_IP_COUNTRIES, size=n_ep, p=_normalized(_FRAUD_IP_WEIGHTS))
    ip_ep = np.where(foreign, fip, world.home[victim])
    ip = np.where(digital, ip_ep[ep], -1)
    amount = np.where(
        rng.random(len(ep)) < 0.3, rng.uniform(0.01, 1.0, len(ep)), rng.uniform(0.5, 5.0, len(ep))
    )
    return _Rows(
        account=victim[ep],
        card=_cards_of(rng, world, victim)[ep],
        merchant=merchant,
        channel=channel,
        entry=_entry_modes(rng, channel),
        ts=ts,
        device=device,
        device_age=age,
        ip_country=ip,
        amount_usd=amount,
        currency=_priced_in(rng, world, merchant, channel),
        pattern=1,
    )


def _account_takeover_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    sizes, ep = _episodes(rng, n, 1, 4)
    n_ep = len(sizes)
    victim = _pick_victims(rng, world, n_ep)
    start = _times(rng, world, n_ep, victim, _FRAUD_HOURS)
    ts = np.minimum(start[ep] + _within(rng, sizes, 40 * MINUTE_MS), world.end_ms - 1)
    channel = rng.choice([_ECOM, _TRANSFER, _WALLET], size=n_ep, p=[0.5, 0.25, 0.25])[ep]
    account = victim[ep]
    # Most takeovers log in from a new device; some hijack a session on a known one,
    # and some come through a residential proxy in the victim's country: these are
    # the hard cases that keep the AUC realistic.
    hijack = (rng.random(n_ep) < 0.35)[ep]
    fdev, fage = _fraud_devices(rng, "fa", ep)
    odev, oage = _own_devices(rng, world, account, ts)
    device = np.where(hijack, odev, fdev)
    age = np.where(hijack, oage, fage)
    foreign = (rng.random(n_ep) < 0.5)[ep]
    fip = rng.choice(_FRAUD_IP_COUNTRIES, size=n_ep, p=_normalized(_FRAUD_IP_WEIGHTS))[ep]
    ip = np.where(foreign, fip, world.home[account])
    filt = np.isin(
        np.arange(len(_MCCS)),
        [_MCC_INDEX[c] for c in ("5732", "5944", "5999", "6051", "5311", "5651", "4511")],
    )
    merchant = _pick_merchants(rng, world, channel, world.home[account], world.m_popularity, filt)
    amount = world.typical_usd[account] * np.exp(rng.normal(math.log(4.0), 0.8, len(ep)))
    return _Rows(
        account=account,
        card=_cards_of(rng, world, victim)[ep],
        merchant=merchant,
        channel=channel,
        entry=_entry_modes(rng, channel),
        ts=ts,
        device=device.astype(object),
        device_age=age.astype(np.float64),
        ip_country=ip,
        amount_usd=amount,
        currency=_priced_in(rng, world, merchant, channel),
        pattern=2,
    )


def _high_value_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    victim = _pick_victims(rng, world, n)
    ts = _times(rng, world, n, victim, _FRAUD_HOURS)
    channel = rng.choice([_ECOM, _CNP, _CP, _TRANSFER], size=n, p=[0.5, 0.15, 0.15, 0.2])
    filt = _HIGH_RISK.copy()
    here = _location(world, victim, ts)
    merchant = _pick_merchants(rng, world, channel, here, world.m_popularity * world.m_risk, filt)
    ep = np.arange(n, dtype=np.int64)
    fdev, fage = _fraud_devices(rng, "fh", ep)
    odev, oage = _own_devices(rng, world, victim, ts)
    # Stolen credentials used on the cardholder's own phone (malware) look legit.
    own = rng.random(n) < 0.45
    device = np.where(own, odev, fdev).astype(object)
    age = np.where(own, oage, fage).astype(np.float64)
    digital = _DIGITAL[channel]
    device[~digital] = ""
    age[~digital] = np.nan
    foreign = rng.random(n) < 0.3
    fip = rng.choice(_FRAUD_IP_COUNTRIES, size=n, p=_normalized(_FRAUD_IP_WEIGHTS))
    ip = np.where(digital, np.where(foreign, fip, here), -1)
    amount = np.maximum(
        world.typical_usd[victim] * rng.uniform(4.0, 30.0, n),
        np.exp(rng.normal(math.log(600.0), 0.6, n)),
    )
    return _Rows(
        account=victim,
        card=_cards_of(rng, world, victim),
        merchant=merchant,
        channel=channel,
        entry=_entry_modes(rng, channel),
        ts=ts,
        device=device,
        device_age=age,
        ip_country=ip,
        amount_usd=amount,
        currency=_priced_in(rng, world, merchant, channel),
        pattern=3,
    )


def _geo_mismatch_rows(rng: np.random.Generator, world: _World, n: int) -> _Rows:
    sizes, ep = _episodes(rng, n, 1, 3)
    n_ep = len(sizes)
    victim = _pick_victims(rng, world, n_ep)
    start = _times(rng, world, n_ep, victim, _FRAUD_HOURS)
    ts = np.minimum(start[ep] + _within(rng, sizes, 90 * MINUTE_MS), world.end_ms - 1)
    account = victim[ep]
    # Half are counterfeit cards used in person abroad (often magstripe fallback or
    # ATM cash-out), half online purchases from an IP far from home.
    counterfeit = rng.random(n_ep) < 0.5
    abroad = rng.choice(_FRAUD_IP_COUNTRIES, size=n_ep, p=_normalized(_FRAUD_IP_WEIGHTS))
    same = abroad == world.home[victim]
    abroad[same] = _CODE_INDEX["RO"]
    cp_channel = np.where(rng.random(n_ep) < 0.35, _ATM, _CP)
    channel = np.where(counterfeit, cp_channel, _ECOM)[ep]
    m_country = np.where(counterfeit[ep], abroad[ep], world.home[account])
    merchant = _pick_merchants(rng, world, channel, m_country, world.m_popularity)
    entry = _entry_modes(rng, channel)
    swipe = (channel == _CP) & (rng.random(len(ep)) < 0.35)
    entry[swipe] = _MAGSTRIPE
    fdev, fage = _fraud_devices(rng, "fg", ep)
    odev, oage = _own_devices(rng, world, account, ts)
    known = rng.random(len(ep)) < 0.35
    device = np.where(known, odev, fdev).astype(object)
    age = np.where(known, oage, fage).astype(np.float64)
    digital = _DIGITAL[channel]
    device[~digital] = ""
    age[~digital] = np.nan
    ip = np.where(digital, abroad[ep], -1)
    amount = world.typical_usd[account] * np.exp(rng.normal(math.log(2.5), 0.8, len(ep)))
    return _Rows(
        account=account,
        card=_cards_of(rng, world, victim)[ep],
        merchant=merchant,
        channel=channel,
        entry=entry,
        ts=ts,
        device=device,
        device_age=age,
        ip_country=ip,
        amount_usd=amount,
        currency=_priced_in(rng, world, merchant, channel),
        pattern=4,
    )


def _quieten(rng: np.random.Generator, world: _World, rows: _Rows, share: float) -> None:
    """Make ``share`` of the rows look like the victim's own everyday spending.

    Real fraud is not all loud: malware on the cardholder's own phone, a residential
    proxy at home, amounts kept near the usual. These rows keep their label, so no
    model can separate them and the AUC stays realistic.
    """
    quiet = rng.random(len(rows.ts)) < share
    if not quiet.any():
        return
    account = rows.account[quiet]
    ts = rows.ts[quiet]
    channel = rows.channel[quiet]
    digital = _DIGITAL[channel]
    device, age = _own_devices(rng, world, account, ts)
    device[~digital] = ""
    age[~digital] = np.nan
    rows.device[quiet] = device
    rows.device_age[quiet] = age
    rows.ip_country[quiet] = np.where(digital, _location(world, account, ts), -1)
    rows.amount_usd[quiet] = world.typical_usd[account] * np.exp(
        rng.normal(0.3, 0.6, int(quiet.sum()))
    )


# --------------------------------------------------------------------------- extras


def _window_counts(group: IntArray, ts: IntArray, window_ms: int) -> IntArray:
    """Per row: earlier rows of the same group with ts in (ts - window, ts]."""
    order = np.lexsort((np.arange(len(ts)), ts, group))
    span = int(ts.max() - ts.min()) + 2 * window_ms + 1
    key = group[order] * span + (ts[order] - ts.min())
    first = np.searchsorted(key, key - window_ms, side="right")
    counts = np.empty(len(ts), dtype=np.int64)
    counts[order] = np.arange(len(ts)) - first
    return counts


def _prior_average(
    group: IntArray, ts: IntArray, amount: FloatArray, prior: FloatArray, prior_weight: float
) -> FloatArray:
    """Feature-store average amount: history (as ``prior_weight`` pseudo-rows) plus
    the group's earlier rows in the window."""
    order = np.lexsort((np.arange(len(ts)), ts, group))
    g = group[order]
    a = amount[order]
    cum = np.cumsum(a) - a  # exclusive
    first = np.searchsorted(g, g, side="left")
    n_prior = np.arange(len(g)) - first
    sum_prior = cum - cum[first]
    avg_sorted = (prior_weight * prior[order] + sum_prior) / (prior_weight + n_prior)
    out = np.empty(len(ts), dtype=np.float64)
    out[order] = avg_sorted
    return out


def _distance_km(a: IntArray, b: IntArray) -> FloatArray:
    lat = np.radians([c.lat for c in _COUNTRIES])
    lon = np.radians([c.lon for c in _COUNTRIES])
    dlat = lat[b] - lat[a]
    dlon = lon[b] - lon[a]
    h = np.sin(dlat / 2) ** 2 + np.cos(lat[a]) * np.cos(lat[b]) * np.sin(dlon / 2) ** 2
    return np.asarray(2 * 6371.0 * np.arcsin(np.sqrt(h)), dtype=np.float64)


def _ids(prefix: str, values: IntArray, width: int) -> ObjArray:
    table = np.array([f"{prefix}{i:0{width}d}" for i in range(int(values.max()) + 1)], dtype=object)
    return np.asarray(table[values], dtype=object)


def _lookup(names: tuple[str, ...], idx: IntArray) -> ObjArray:
    return np.asarray(np.array(names, dtype=object)[idx], dtype=object)


# --------------------------------------------------------------------------- public


def generate(rows: int, seed: int, options: SynthOptions | None = None) -> Table:
    """Generate ``rows`` transactions, sorted by time, as a Table.

    Args:
        rows: number of transactions (>= 100).
        seed: seed of the one random generator; same rows, seed and options give the
            same table (and byte-identical CSV).
        options: distribution knobs; ``SynthOptions()`` when None.

    Raises:
        ValueError: rows or seed out of range.
    """
    if rows < 100:
        raise ValueError(f"rows must be >= 100, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    opts = options if options is not None else SynthOptions()
    rng = np.random.Generator(np.random.PCG64(seed))
    world = _build_world(rng, rows, opts)

    n_fraud = max(len(_PATTERN_SHARES), round(rows * opts.fraud_rate))
    per_pattern = [round(n_fraud * s) for s in _PATTERN_SHARES[:-1]]
    per_pattern.append(n_fraud - sum(per_pattern))
    segments = _legit_rows(rng, world, rows - n_fraud, burst_share=0.01, big_share=0.008)
    makers = (_card_testing_rows, _account_takeover_rows, _high_value_rows, _geo_mismatch_rows)
    for make, count in zip(makers, per_pattern, strict=True):
        rows_made = make(rng, world, count)
        if make is not _card_testing_rows:
            _quieten(rng, world, rows_made, _QUIET_SHARE)
        segments.append(rows_made)

    def cat(attr: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(s, attr) for s in segments])

    ts = cat("ts")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    account = cat("account")[order]
    card = cat("card")[order]
    merchant = cat("merchant")[order]
    channel = cat("channel")[order]
    entry = cat("entry")[order]
    device = cat("device")[order].astype(object)
    device_age = cat("device_age")[order].astype(np.float64)
    ip = cat("ip_country")[order]
    currency = cat("currency")[order]
    pattern = np.concatenate([np.full(len(s.ts), s.pattern) for s in segments])[order]
    amount_usd = cat("amount_usd")[order] * opts.amount_shift

    # Amounts in the currency's minor unit; cash from ATMs in round notes.
    local = amount_usd / _USD_PER_UNIT[currency]
    is_atm = channel == _ATM
    note = np.array([20.0, 20.0, 20.0, 2000.0, 10.0])[currency]
    local = np.where(is_atm, np.maximum(np.round(local / note), 1.0) * note, local)
    minor = np.maximum(np.round(local * 10.0 ** _CURRENCY_EXPONENT[currency]), 1.0)
    amount_minor = minor.astype(np.int64)
    true_usd = amount_minor / 10.0 ** _CURRENCY_EXPONENT[currency] * _USD_PER_UNIT[currency]

    home = world.home[account]
    m_country = world.m_country[merchant]
    count_1h = _window_counts(card, ts, HOUR_MS)
    count_24h = _window_counts(card, ts, 24 * HOUR_MS)
    avg = _prior_average(account, ts, true_usd, world.typical_usd[account], 20.0)
    where = np.where(ip >= 0, ip, m_country)
    card_present = np.isin(channel, [_CP, _ATM])
    where = np.where(card_present, m_country, where)
    local_km = np.exp(rng.normal(math.log(12.0), 1.0, rows))
    distance = np.where(where == home, local_km, _distance_km(home, where) + local_km)
    # Mail and phone orders have no location signal at all.
    distance = np.where(channel == _CNP, np.nan, np.round(distance, 1))
    tenure = world.tenure0[account] + np.floor((ts - opts.start_ms) / DAY_MS)

    table: Table = {
        "transaction_id": _ids("tx", np.arange(rows, dtype=np.int64), 9),
        "account_id": _ids("acct", account, 6),
        "card_id": _ids("card", card, 6),
        "merchant_id": _ids("mer", merchant, 5),
        "merchant_category_code": _lookup(MCC_CODES, world.m_mcc[merchant]),
        "amount_minor": amount_minor,
        "currency": _lookup(CURRENCIES, currency),
        "country": _lookup(COUNTRY_CODES, m_country),
        "channel": _lookup(CHANNELS, channel),
        "entry_mode": _lookup(ENTRY_MODES, entry),
        "timestamp_ms": ts.astype(np.int64),
        "device_id": device,
        "ip_country": _lookup(("", *COUNTRY_CODES), ip + 1),
        "customer_tenure_days": tenure.astype(np.float64),
        "x_txn_count_1h": count_1h.astype(np.float64),
        "x_txn_count_24h": count_24h.astype(np.float64),
        "x_amount_to_avg_ratio": np.round(true_usd / avg, 4),
        "x_device_age_days": device_age,
        "x_distance_from_home_km": distance,
        "x_merchant_age_days": np.floor((ts - world.m_created_ms[merchant]) / DAY_MS),
        "x_merchant_risk_score": np.round(world.m_risk[merchant], 3),
        "c_home_country": _lookup(COUNTRY_CODES, home),
        "c_card_type": _lookup(CARD_TYPES, world.card_type[card]),
        "m_age_band": _lookup(AGE_BANDS, world.age_band[account]),
        "m_region": _lookup(REGIONS, world.region[account]),
        "label": (pattern > 0).astype(np.int64),
        "fraud_pattern": _lookup(FRAUD_PATTERNS, pattern),
    }
    return table


META_SUFFIX = ".meta.yaml"
"""Sidecar written beside a generated CSV: how it was generated, for training lineage."""


def write_dataset(
    path: str | Path, rows: int, seed: int, options: SynthOptions | None = None
) -> Path:
    """Generate a table and write it as CSV plus a ``<path>.meta.yaml`` sidecar.

    The sidecar records rows, seed, options and the CSV's digest, so a trainer can put
    the generator options into a model card's lineage.

    Returns:
        The CSV path.
    """
    opts = options if options is not None else SynthOptions()
    path = Path(path)
    data = table_to_csv_bytes(generate(rows, seed, opts))
    meta = {
        "generator": "gateway.data.synth",
        "rows": rows,
        "seed": seed,
        "options": opts.to_dict(),
        "digest": data_digest(data),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    Path(f"{path}{META_SUFFIX}").write_text(yaml.safe_dump(meta, sort_keys=False))
    return path


def read_dataset_meta(path: str | Path, digest: str) -> dict[str, Any] | None:
    """The sidecar of a generated CSV when it exists and matches ``digest``, else None."""
    meta_path = Path(f"{path}{META_SUFFIX}")
    if not meta_path.is_file():
        return None
    meta = yaml.safe_load(meta_path.read_text())
    if not isinstance(meta, dict) or meta.get("digest") != digest:
        return None
    return meta
