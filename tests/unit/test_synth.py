"""The synthetic transaction generator and the CSV table it writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.data import synth
from gateway.data.synth import HIGH_RISK_MCCS, SynthOptions, generate
from gateway.data.table import (
    BASE_COLUMNS,
    FRAUD_PATTERNS,
    Table,
    canonical_order,
    data_digest,
    read_table,
    table_from_csv_bytes,
    table_to_csv_bytes,
    write_table,
)
from gateway.features import currency
from gateway.features.columns import columns_from_table

ROWS = 60_000


@pytest.fixture(scope="module")
def table() -> Table:
    return generate(ROWS, seed=11)


def _usd(table: Table) -> npt.NDArray[np.float64]:
    usd: npt.NDArray[np.float64] = columns_from_table(table, ["amount_usd"])["amount_usd"]
    return usd


def _same(a: Table, b: Table) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        if a[name].dtype == np.float64:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert (a[name] == b[name]).all(), name


# --------------------------------------------------------------------------- determinism


def test_same_seed_and_options_give_identical_csv_bytes() -> None:
    options = SynthOptions(amount_shift=1.3, channel_mix={"ECOMMERCE": 0.5})
    first = table_to_csv_bytes(generate(5_000, 3, options))
    again = table_to_csv_bytes(generate(5_000, 3, SynthOptions(**options.to_dict())))
    assert first == again
    assert first != table_to_csv_bytes(generate(5_000, 4, options))


def test_layout_and_dtypes_follow_the_contract(table: Table) -> None:
    names = list(table)
    assert names == canonical_order(names)
    assert tuple(names[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    assert names[-2:] == ["label", "fraud_pattern"]
    assert {n for n in names if n.startswith("x_")} == {f"x_{k}" for k in synth.EXTRA_NUMERIC}
    assert {n for n in names if n.startswith("c_")} == {"c_home_country", "c_card_type"}
    assert {n for n in names if n.startswith("m_")} == {"m_age_band", "m_region"}
    for name in ("amount_minor", "timestamp_ms", "label"):
        assert table[name].dtype == np.int64
    assert table["customer_tenure_days"].dtype == np.float64
    assert table["transaction_id"].dtype == object
    assert len(set(table["transaction_id"].tolist())) == ROWS
    assert (np.diff(table["timestamp_ms"]) >= 0).all()
    assert (table["amount_minor"] >= 1).all()
    assert set(table["channel"].tolist()) == set(synth.CHANNELS)
    assert set(table["fraud_pattern"].tolist()) == set(FRAUD_PATTERNS)


def test_timestamps_cover_thirty_days_with_daily_rhythm(table: Table) -> None:
    ts = table["timestamp_ms"]
    start = synth.DEFAULT_START_MS
    assert ts.min() >= start
    assert ts.max() < start + 30 * synth.DAY_MS
    assert (ts.max() - ts.min()) > 29 * synth.DAY_MS
    us = (table["c_home_country"] == "US") & (table["label"] == 0)
    local_hour = ((ts[us] - 5 * synth.HOUR_MS) // synth.HOUR_MS) % 24
    hours = np.bincount(local_hour, minlength=24)
    assert hours[2:5].sum() * 5 < hours[12:15].sum()  # quiet nights, busy afternoons
    weekday = ((ts // synth.DAY_MS) + 3) % 7
    per_day = np.bincount(weekday, minlength=7)
    assert per_day[5] > per_day[0]  # Saturday busier than Monday


def test_amounts_are_in_each_currencys_minor_units(table: Table) -> None:
    usd = _usd(table)
    legit = table["label"] == 0
    overall = float(np.median(usd[legit]))
    counts = {c: int((table["currency"] == c).sum()) for c in synth.CURRENCIES}
    assert counts["USD"] > counts["JPY"] > counts["BHD"] > 0
    assert counts["EUR"] > counts["JPY"] and counts["GBP"] > counts["JPY"]
    for code in synth.CURRENCIES:
        rows = legit & (table["currency"] == code)
        # Wrong minor units would be off by 100x or 1000x; spend levels differ by less.
        assert overall / 3 < np.median(usd[rows]) < overall * 3, code
    jpy = table["amount_minor"][table["currency"] == "JPY"]
    assert np.median(jpy) > 1000  # yen have no minor unit
    assert currency.minor_unit_exponent("BHD") == 3


def test_entry_modes_and_devices_fit_the_channel(table: Table) -> None:
    channel = table["channel"]
    entry = table["entry_mode"]
    assert set(entry[channel == "CARD_NOT_PRESENT"].tolist()) == {"MANUAL"}
    assert set(entry[channel == "CARD_PRESENT"].tolist()) <= {"CHIP", "CONTACTLESS", "MAGSTRIPE"}
    assert set(entry[channel == "TRANSFER"].tolist()) == {"CREDENTIAL_ON_FILE"}
    present = np.isin(channel, ["CARD_PRESENT", "ATM"])
    assert (table["device_id"][present] == "").all()
    assert np.isnan(table["x_device_age_days"][present]).all()
    digital = np.isin(channel, ["ECOMMERCE", "WALLET", "TRANSFER"])
    assert (table["device_id"][digital] != "").all()
    assert set(table["merchant_category_code"][channel == "ATM"].tolist()) == {"6011"}


# --------------------------------------------------------------------------- fraud


def test_fraud_rate_is_realistic(table: Table) -> None:
    rate = float(table["label"].mean())
    assert 0.005 <= rate <= 0.02
    assert ((table["fraud_pattern"] == "none") == (table["label"] == 0)).all()


def test_card_testing_is_bursts_of_tiny_amounts(table: Table) -> None:
    usd = _usd(table)
    ct = table["fraud_pattern"] == "card_testing"
    legit = table["label"] == 0
    assert ct.sum() > 50
    assert np.median(usd[ct]) < 5 < np.median(usd[legit])
    assert np.median(table["x_txn_count_1h"][ct]) >= 2
    assert np.median(table["x_txn_count_1h"][legit]) == 0
    # Many transactions on few cards: bursts, not scattered rows.
    assert len(set(table["card_id"][ct].tolist())) * 3 < ct.sum()


def test_account_takeover_brings_new_devices_and_foreign_ips(table: Table) -> None:
    ato = table["fraud_pattern"] == "account_takeover"
    legit = (table["label"] == 0) & (table["device_id"] != "")
    new_device = table["x_device_age_days"] < 3
    assert new_device[ato].mean() > 0.25
    assert new_device[ato].mean() > 4 * new_device[legit].mean()
    abroad = table["ip_country"] != table["c_home_country"]
    assert abroad[ato].mean() > 3 * abroad[legit].mean()


def test_high_value_fraud_hits_risky_merchants_with_big_amounts(table: Table) -> None:
    hv = table["fraud_pattern"] == "high_value_risky_mcc"
    legit = table["label"] == 0
    risky = np.isin(table["merchant_category_code"], HIGH_RISK_MCCS)
    assert risky[hv].all()
    assert risky[legit].mean() < 0.2
    ratio = table["x_amount_to_avg_ratio"]
    assert np.median(ratio[hv]) > 3 * np.median(ratio[legit])


def test_geo_mismatch_is_far_from_home(table: Table) -> None:
    geo = table["fraud_pattern"] == "geo_mismatch"
    legit = table["label"] == 0
    distance = table["x_distance_from_home_km"]
    assert np.nanmedian(distance[geo]) > 1000 > 100 > np.nanmedian(distance[legit])


def test_legit_lookalikes_keep_the_patterns_from_being_trivial(table: Table) -> None:
    legit = table["label"] == 0
    abroad_in_person = (table["country"] != table["c_home_country"]) & (
        table["channel"] == "CARD_PRESENT"
    )
    assert abroad_in_person[legit].sum() > 100  # travellers
    assert (table["x_device_age_days"][legit] < 3).sum() > 100  # new phones, fresh browsers
    assert (table["x_txn_count_1h"][legit] >= 3).sum() > 50  # bursts of small purchases
    # Some fraud looks like everyday spending: the cardholder's own old device at home.
    fraud = (table["label"] == 1) & (table["device_id"] != "")
    quiet = (
        fraud & (table["x_device_age_days"] > 30) & (table["ip_country"] == table["c_home_country"])
    )
    assert quiet.sum() > 10


# --------------------------------------------------------------------------- knobs


def test_amount_shift_scales_amounts() -> None:
    base = _usd(generate(20_000, 5))
    shifted = _usd(generate(20_000, 5, SynthOptions(amount_shift=2.0)))
    assert 1.9 < np.median(shifted) / np.median(base) < 2.1


def test_merchant_mix_shifts_toward_risky_and_new_merchants() -> None:
    def shares(t: Table) -> tuple[float, float]:
        legit = t["label"] == 0
        risky = np.isin(t["merchant_category_code"], HIGH_RISK_MCCS)[legit].mean()
        young = (t["x_merchant_age_days"][legit] < 120).mean()
        return float(risky), float(young)

    base = shares(generate(20_000, 5))
    mixed = shares(generate(20_000, 5, SynthOptions(merchant_mix=1.0)))
    assert mixed[0] > 1.8 * base[0]
    assert mixed[1] > 1.5 * base[1]


def test_channel_mix_shifts_channels() -> None:
    base = generate(20_000, 5)
    online = generate(20_000, 5, SynthOptions(channel_mix={"ECOMMERCE": 0.6, "ATM": 0.0}))
    assert (online["channel"] == "ECOMMERCE").mean() > 1.4 * (base["channel"] == "ECOMMERCE").mean()
    legit = online["label"] == 0
    assert (online["channel"][legit] == "ATM").sum() == 0


def test_fraud_rate_knob_sets_the_rate() -> None:
    for rate in (0.005, 0.02):
        t = generate(20_000, 5, SynthOptions(fraud_rate=rate))
        assert t["label"].mean() == pytest.approx(rate, abs=1e-4)


def _group_correlation(t: Table, column: str, group: str) -> float:
    member = (t[column] == group).astype(np.float64)
    return float(np.corrcoef(member, t["label"].astype(np.float64))[0, 1])


def test_attribute_label_correlation_knob() -> None:
    independent = generate(ROWS, 21)
    tilted = generate(ROWS, 21, SynthOptions(attribute_label_correlation=1.0))
    for column, group in (("m_age_band", "65+"), ("m_region", "south")):
        assert abs(_group_correlation(independent, column, group)) < 0.02
        assert _group_correlation(tilted, column, group) > 0.04
    # The attributes themselves keep their distribution: only the label moves.
    share = (independent["m_age_band"] == "65+").mean()
    assert (tilted["m_age_band"] == "65+").mean() == pytest.approx(share, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraud_rate": 0.0}, "fraud_rate"),
        ({"fraud_rate": 0.5}, "fraud_rate"),
        ({"amount_shift": -1.0}, "amount_shift"),
        ({"merchant_mix": 2.0}, "merchant_mix"),
        ({"attribute_label_correlation": -0.1}, "attribute_label_correlation"),
        ({"channel_mix": {"POS": 1.0}}, "unknown channel"),
        ({"channel_mix": {c: 0.0 for c in synth.CHANNELS}}, "weight 0"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthOptions(**kwargs)


def test_generate_rejects_tiny_tables() -> None:
    with pytest.raises(ValueError, match="rows"):
        generate(10, 1)


def test_parse_channel_mix() -> None:
    assert synth.parse_channel_mix("ecommerce=0.6, ATM=0") == {"ECOMMERCE": 0.6, "ATM": 0.0}
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        synth.parse_channel_mix("ECOMMERCE")


# --------------------------------------------------------------------------- table


def test_table_round_trips_losslessly(table: Table, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_table(table, path)
    back = read_table(path)
    _same(table, back)
    assert table_to_csv_bytes(back) == path.read_bytes()
    assert np.isnan(back["customer_tenure_days"]).any()  # missing tenure survives as NaN


def test_table_round_trips_values_that_need_quoting() -> None:
    small = {name: col[:5].copy() for name, col in generate(200, 2).items()}
    small["c_note"] = np.array(["a,b", 'say "hi"', "two\nlines", "", "plain"], dtype=object)
    small["x_odd"] = np.array([0.1, -0.0, 1e-300, math.nan, 123456789.125])
    data = table_to_csv_bytes(small)
    back = table_from_csv_bytes(data)
    assert list(back) == canonical_order(small)
    _same({name: small[name] for name in back}, back)
    windows = table_to_csv_bytes(generate(300, 2)).replace(b"\n", b"\r\n")
    _same(generate(300, 2), table_from_csv_bytes(windows))


def test_table_errors_name_the_problem(tmp_path: Path) -> None:
    good = table_to_csv_bytes(generate(200, 2)).decode()
    header, first, *_ = good.split("\n")
    with pytest.raises(ValueError, match="lacks required columns"):
        table_from_csv_bytes(b"transaction_id,label\nt1,0\n")
    with pytest.raises(ValueError, match="line 2"):
        table_from_csv_bytes(f"{header}\n{first},extra\n".encode())
    broken = first.split(",")
    broken[5] = "12.5"  # amount_minor must be an integer
    with pytest.raises(ValueError, match="amount_minor"):
        table_from_csv_bytes(f"{header}\n{','.join(broken)}\n".encode())
    bad = generate(200, 2)
    bad["amount_minor"] = bad["amount_minor"].astype(np.float64)
    with pytest.raises(ValueError, match="int64"):
        write_table(bad, tmp_path / "bad.csv")


def test_write_dataset_records_lineage(tmp_path: Path) -> None:
    options = SynthOptions(fraud_rate=0.015)
    path = synth.write_dataset(tmp_path / "d" / "data.csv", 2_000, 9, options)
    digest = data_digest(path.read_bytes())
    meta = synth.read_dataset_meta(path, digest)
    assert meta is not None
    assert meta["rows"] == 2_000 and meta["seed"] == 9
    assert meta["options"] == options.to_dict()
    assert synth.read_dataset_meta(path, "sha256:" + "0" * 64) is None
