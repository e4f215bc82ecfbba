"""kfops.core.featureset.parse_timestamps: one reading per column, never row by row.

The loader of every scaffolded plug-in, `kfops init`'s profiler and the sources writer read raw
timestamps with it: a day-first column read month first where it can be, or epoch seconds read
as nanoseconds, would move events silently (to 1970, or by weeks).
"""

from __future__ import annotations

import pandas as pd
import pytest

from kfops.core.featureset import parse_timestamps
from kfops.errors import DataError

# 3,000 events every 37 minutes from January 1: days 1..12 and 13..31 of several months.
TIMES = pd.Series(pd.date_range("2024-01-01", periods=3000, freq="37min", tz="UTC"), name="ordered_at")


def test_day_first_text_is_read_day_first_in_every_row():
    text = TIMES.dt.strftime("%d/%m/%Y %H:%M:%S")
    parsed = parse_timestamps(text)
    assert (parsed == TIMES).all()  # row by row, '02/01/2024' became February 1 in 1,134 rows
    assert str(parsed.dtype) == "datetime64[ns, UTC]"


def test_month_first_text_is_read_month_first():
    assert (parse_timestamps(TIMES.dt.strftime("%m/%d/%Y %H:%M")) == TIMES.dt.floor("min")).all()


def test_a_column_that_reads_both_ways_is_refused_naming_both_readings_unless_told():
    early = TIMES[TIMES < "2024-01-08"].dt.strftime("%d/%m/%Y %H:%M:%S")  # every day <= 12
    with pytest.raises(DataError) as raised:
        parse_timestamps(early)
    message = str(raised.value)
    assert "column 'ordered_at' reads two ways" in message
    assert "2024-01-02" in message and "2024-02-01" in message and "%d/%m/%Y" in message and "%m/%d/%Y" in message
    assert "dayfirst" in raised.value.hint and "ISO 8601" in raised.value.hint
    assert (parse_timestamps(early, dayfirst=True) == TIMES[TIMES < "2024-01-08"]).all()


def test_one_value_with_a_day_over_12_settles_the_column():
    assert parse_timestamps(pd.Series(["02/01/24", "13/01/24", None])).tolist()[:2] == [
        pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-13", tz="UTC")]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_numbers_are_told_apart_by_magnitude(unit):
    numbers = TIMES.astype("int64") // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    assert (parse_timestamps(numbers) == TIMES).all()  # seconds were read as nanoseconds: 1970-01-01
    as_text = parse_timestamps(numbers.astype(str))  # epoch seconds in a text column (a CSV read as str)
    assert (as_text == TIMES).all()


def test_epoch_seconds_with_a_gap_read_as_float():
    seconds = (TIMES.astype("int64") // 10**9).astype("float64")
    seconds.iloc[5] = float("nan")
    parsed = parse_timestamps(seconds)
    assert parsed.isna().sum() == 1 and parsed.iloc[0] == TIMES.iloc[0]


def test_numbers_that_are_no_epoch_time_are_refused():
    with pytest.raises(DataError, match="column 'at' holds numbers from 1 to 3, which are not epoch times"):
        parse_timestamps(pd.Series([1, 2, 3], name="at"))
    mixed_units = pd.Series([1_700_000_000, 1_700_000_000_000], name="at")  # seconds and milliseconds
    with pytest.raises(DataError, match="not epoch times of one unit"):
        parse_timestamps(mixed_units)


def test_iso_text_with_varying_offsets_and_naive_values_stays_correct():
    text = pd.Series(["2024-03-30T10:00:00+01:00", "2024-03-31T10:00:00+02:00", "2024-03-31 10:00",
                      "2024-03-31T10:00:00.5Z", None, "not a time"])
    assert parse_timestamps(text).tolist() == [
        pd.Timestamp("2024-03-30 09:00", tz="UTC"), pd.Timestamp("2024-03-31 08:00", tz="UTC"),
        pd.Timestamp("2024-03-31 10:00", tz="UTC"),  # naive is UTC, not the offset of the row before
        pd.Timestamp("2024-03-31 10:00:00.5", tz="UTC"), pd.NaT, pd.NaT]


def test_datetimes_pass_through_in_utc():
    local = pd.Series(pd.date_range("2024-01-01", periods=3, freq="h", tz="Europe/Paris"))
    assert parse_timestamps(local).tolist() == list(local.dt.tz_convert("UTC"))
    assert parse_timestamps(pd.Series([None, None])).isna().all()


def test_init_profiles_epoch_seconds_as_their_dates(tmp_path):
    """`kfops init` reads a table's timestamps with parse_timestamps: the window it prints comes from them."""
    from kfops.datasets.scaffold import parse_table, read_raw

    frame = pd.DataFrame({"order_id": range(len(TIMES)), "at": TIMES.astype("int64") // 10**9})
    frame.to_csv(tmp_path / "orders.csv", index=False)
    read, _ = read_raw(parse_table(f"{tmp_path}/orders.csv:timestamp=at"))
    assert read["at"].min() == TIMES.min() and read["at"].max() == TIMES.max()  # was 1970-01-01 00:00:01.7
