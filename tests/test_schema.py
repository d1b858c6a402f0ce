"""Tests for embeddings.data.schema: formats, mapping, timestamps, error messages, lenient mode."""

from __future__ import annotations

import gzip
import logging
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embeddings.data.schema import (
    CANONICAL,
    REQUIRED,
    ColumnMap,
    LoadReport,
    read_events,
    validate_events,
)
from embeddings.errors import SchemaError

BASIC = pl.DataFrame(
    {
        "user_id": ["b", "a", "b", "a"],
        "ts": ["2024-03-05 10:00:00", "2024-03-05 09:00:00", "2024-03-04 08:00:00", "2024-03-06"],
        "event": ["view", "buy", "view", "view"],
        "amount": ["1.5", "2", None, "0"],
    }
)


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _check_canonical(df: pl.DataFrame, n: int) -> None:
    assert df.height == n
    assert list(df.columns[:7]) == list(CANONICAL)
    for name, dtype in CANONICAL.items():
        assert df.schema[name] == dtype, name


# --- formats ------------------------------------------------------------------------------------


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    BASIC.write_parquet(path)
    df, report = read_events(path)
    _check_canonical(df, 4)
    assert report == LoadReport(str(path), 4, 4, 0, None, {})


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    BASIC.write_csv(path)
    df, _ = read_events(path)
    _check_canonical(df, 4)
    assert df["amount"].to_list() == [2.0, 0.0, None, 1.5]


def test_csv_gz(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(BASIC.write_csv().encode()))
    _check_canonical(read_events(path)[0], 4)


@pytest.mark.parametrize("name", ["events.jsonl", "events.ndjson", "events.jsonl.gz"])
def test_jsonl(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    data = BASIC.write_ndjson().encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    _check_canonical(read_events(path)[0], 4)


def test_jsonl_type_changes_late(tmp_path: Path) -> None:
    # A field that is numeric for the first thousands of lines, then text, must not break reading.
    path = tmp_path / "events.jsonl"
    line = '{"user_id": 1, "ts": 1700000000, "event": "view", "item": 5}\n'
    path.write_text(
        line * 3000 + '{"user_id": "x", "ts": 1700000001, "event": "view", "item": "s"}\n'
    )
    df, _ = read_events(path)
    assert df.height == 3001 and df["item"].to_list()[-1] == "s"


def test_parquet_directory(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    BASIC.head(2).write_parquet(folder / "part-0.parquet")
    BASIC.tail(2).write_parquet(folder / "part-1.parquet")
    df, report = read_events(folder)
    _check_canonical(df, 4)
    assert report.n_rows_in == 4


# --- file-level errors --------------------------------------------------------------------------


def test_wrong_file_type(tmp_path: Path) -> None:
    path = tmp_path / "events.docx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(SchemaError, match=r"events\.docx.*unsupported.*\.parquet.*\.csv.*\.xlsx"):
        read_events(path)
    broken = tmp_path / "events.xlsx"
    broken.write_bytes(b"PK\x03\x04")
    with pytest.raises(SchemaError, match=r"events\.xlsx: could not be read as a spreadsheet: .*really is a spreadsheet"):
        read_events(broken)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"nope\.csv: no such file"):
        read_events(tmp_path / "nope.csv")


@pytest.mark.parametrize("text", ["", "user_id,ts,event\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = _write_csv(tmp_path / "empty.csv", text)
    with pytest.raises(
        SchemaError, match=r"empty\.csv: the file is empty or has a header but no data"
    ):
        read_events(path)


def test_empty_parquet_directory(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no .parquet files"):
        read_events(tmp_path)


def test_missing_required_column_suggests_mapping(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "retail.csv", "CustomerID,ts,event\n1,2024-01-01,view\n")
    with pytest.raises(SchemaError) as err:
        read_events(path)
    msg = str(err.value)
    assert "retail.csv" in msg and "'user_id' not found" in msg
    assert "Columns found: 'CustomerID', 'ts', 'event'" in msg
    assert "Did you mean 'CustomerID'?" in msg and "--map user_id=<column>" in msg


def test_missing_column_close_match(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "e.csv", "user_id,tstamp,event\n1,2024-01-01,view\n")
    with pytest.raises(SchemaError, match=r"Did you mean 'tstamp'\?.*--map ts=<column>"):
        read_events(path)


def test_semicolon_csv_names_columns(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "semi.csv", "user_id;ts;event\n1;2024-01-01;view\n")
    with pytest.raises(
        SchemaError, match=r"semi\.csv.*Columns found: 'user_id;ts;event'.*';'-separated"
    ):
        read_events(path)


def test_mapped_optional_column_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    BASIC.write_parquet(path)
    with pytest.raises(SchemaError, match=r"column 'Price' \(mapped to 'amount'\) not found"):
        read_events(path, ColumnMap(amount="Price"))


def test_missing_event_column_hints_event_default(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    BASIC.drop("event").write_parquet(path)
    with pytest.raises(SchemaError, match="event_default='purchase'"):
        read_events(path)
    df, _ = read_events(path, event_default="purchase")
    assert df["event"].unique().to_list() == ["purchase"]


# --- row-level errors (strict) ------------------------------------------------------------------

BAD_CASES = [
    # (column, values for that column in rows 1..4, expected message fragments)
    (
        "ts",
        ["2024-01-01", "yesterday", "2024-13-45", "2024-01-02"],
        [
            "2 of 4 rows have a missing or unparseable timestamp in column 'ts'",
            "row 2: 'yesterday', row 3: '2024-13-45'",
            "ISO-8601",
        ],
    ),
    (
        "user_id",
        ["u1", "", "u3", None],
        [
            "2 of 4 rows have an empty user id in column 'user_id'",
            "row 2: (empty), row 4: (empty)",
            "--map user_id=<column>",
        ],
    ),
    (
        "event",
        ["view", None, "view", "view"],
        [
            "1 of 4 rows has an empty event type in column 'event'",
            "row 2: (empty)",
            "event_default",
        ],
    ),
    (
        "amount",
        ["1.5", "12,50", "abc", ""],
        [
            "2 of 4 rows have a value that is not a number in column 'amount'",
            "row 2: '12,50', row 3: 'abc'",
            "'.' as the decimal separator",
        ],
    ),
    (
        "amount",
        ["nan", "1", "inf", "-Infinity"],
        [
            "3 of 4 rows have NaN or infinity in column 'amount'",
            "row 1: 'nan', row 3: 'inf', row 4:",
            "replace NaN/inf",
        ],
    ),
]


@pytest.mark.parametrize(("column", "values", "fragments"), BAD_CASES)
def test_strict_errors_name_file_column_rows_and_fix(
    tmp_path: Path, column: str, values: list[str | None], fragments: list[str]
) -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "ts": ["2024-01-01"] * 4,
            "event": ["view"] * 4,
            "amount": ["1"] * 4,
        }
    ).with_columns(pl.Series(column, values, dtype=pl.String))
    path = tmp_path / "bad.csv"
    frame.write_csv(path)
    with pytest.raises(SchemaError) as err:
        read_events(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in msg
    assert "Fix:" in msg and "mode='lenient'" in msg and "\n" not in msg


def test_nonfinite_native_float_amount() -> None:
    frame = BASIC.with_columns(pl.Series("amount", [1.0, float("nan"), float("inf"), None]))
    with pytest.raises(
        SchemaError, match=r"<dataframe>: 2 of 4 rows have NaN or infinity.*row 2: 'NaN'"
    ):
        validate_events(frame)


def test_error_on_mapped_column_names_both(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "r.csv",
        "CustomerID,InvoiceDate,event\n1,yesterday 8:26,view\n2,2010-12-01,view\n",
    )
    with pytest.raises(
        SchemaError, match=r"column 'InvoiceDate' \(mapped to 'ts'\) - row 1: 'yesterday 8:26'"
    ):
        read_events(path, ColumnMap.from_pairs(["user_id=CustomerID", "ts=InvoiceDate"]))


# --- lenient mode -------------------------------------------------------------------------------


def test_lenient_quarantines_with_reasons(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write_csv(
        tmp_path / "events.csv",
        "user_id,ts,event,amount,note\n"
        "a,2024-01-01,view,1,ok\n"
        ",2024-01-02,view,2,no user\n"
        "b,someday,view,3,bad ts\n"
        "c,2024-01-03,,12;50,no event and bad amount\n"
        "a,2024-01-04,buy,4.5,ok\n",
    )
    with caplog.at_level(logging.WARNING, logger="embeddings.data.schema"):
        df, report = read_events(path, mode="lenient")
    assert df["user_id"].to_list() == ["a", "a"]
    assert report.n_rows_in == 5 and report.n_rows_out == 2 and report.n_rejected == 3
    assert report.n_rows_out + report.n_rejected == report.n_rows_in
    assert report.reasons == {
        "missing_user_id": 1,
        "bad_timestamp": 1,
        "missing_event": 1,
        "non_numeric_amount": 1,
    }
    assert report.quarantine_path == str(tmp_path / "events.quarantine.parquet")
    q = pl.read_parquet(report.quarantine_path)
    assert q.columns == ["_row", "user_id", "ts", "event", "amount", "note", "_reason"]
    assert q["_row"].to_list() == [2, 3, 4]
    assert q["_reason"].to_list() == [
        "missing_user_id",
        "bad_timestamp",
        "missing_event; non_numeric_amount",
    ]
    assert q["ts"][1] == "someday" and q["note"][2] == "no event and bad amount"
    assert all(dtype == pl.String for dtype in q.select(pl.exclude("_row")).dtypes)
    assert "quarantined 3 of 5 rows" in caplog.text and str(report.quarantine_path) in caplog.text
    assert not list(tmp_path.glob(".*tmp"))


def test_lenient_custom_quarantine_path(tmp_path: Path) -> None:
    frame = BASIC.with_columns(pl.Series("ts", ["x", "2024-01-01", "2024-01-02", "2024-01-03"]))
    target = tmp_path / "sub" / "bad_rows.parquet"
    df, report = validate_events(frame, mode="lenient", quarantine_path=target)
    assert (df.height, report.n_rejected, report.quarantine_path) == (3, 1, str(target))
    assert pl.read_parquet(target)["_reason"].to_list() == ["bad_timestamp"]


def test_lenient_all_rows_rejected_is_an_error(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "e.csv", "user_id,ts,event\na,never,view\nb,nope,view\n")
    with pytest.raises(SchemaError, match=r"Every row was rejected.*e\.quarantine\.parquet"):
        read_events(path, mode="lenient")
    assert (tmp_path / "e.quarantine.parquet").exists()


# --- mapping ------------------------------------------------------------------------------------


def test_column_map_from_pairs(tmp_path: Path) -> None:
    cmap = ColumnMap.from_pairs(
        [
            "user_id=CustomerID",
            "ts = InvoiceDate",
            "amount=Price",
            "item=",
            "extra_categorical=Country",
            "extra_numeric=Quantity,Discount",
        ]
    )
    assert (cmap.user_id, cmap.ts, cmap.amount, cmap.item) == (
        "CustomerID",
        "InvoiceDate",
        "Price",
        None,
    )
    assert cmap.extra_categorical == ["Country"] and cmap.extra_numeric == ["Quantity", "Discount"]
    path = _write_csv(
        tmp_path / "retail.csv",
        "CustomerID,InvoiceDate,Price,Country,Quantity,Discount,event,item\n"
        "17850,2010-12-01 08:26:00,2.55,United Kingdom,6,0,buy,X1\n",
    )
    df, _ = read_events(path, cmap)
    assert df.columns == [*CANONICAL, "Country", "Quantity", "Discount"]
    assert df.row(0) == (
        "17850",
        datetime(2010, 12, 1, 8, 26),
        "buy",
        None,
        None,
        2.55,
        None,
        "United Kingdom",
        6.0,
        0.0,
    )


def test_column_map_unknown_name() -> None:
    with pytest.raises(
        SchemaError,
        match=r"Unknown canonical column 'userid'.*Did you mean 'user_id'.*Valid names: user_id, ts, event",
    ):
        ColumnMap.from_pairs(["userid=CustomerID"])
    with pytest.raises(SchemaError, match="not of the form canonical=column"):
        ColumnMap.from_pairs(["CustomerID"])


def test_extra_columns_types_and_absent_optionals() -> None:
    frame = BASIC.with_columns(
        pl.Series("store", [1, 2, 3, 4]), pl.Series("qty", ["1", "2", "3", "4"])
    )
    df, _ = validate_events(frame, ColumnMap(extra_categorical=["store"], extra_numeric=["qty"]))
    assert df.schema["store"] == pl.Categorical and df.schema["qty"] == pl.Float64
    assert df["item"].null_count() == df["text"].null_count() == 4
    with pytest.raises(SchemaError, match="clashes"):
        validate_events(frame, ColumnMap(extra_numeric=["amount"]))


def test_numeric_user_ids_become_strings() -> None:
    frame = pl.DataFrame(
        {"user_id": [123.0, 7.0, 1.5], "ts": ["2024-01-01"] * 3, "event": ["v"] * 3}
    )
    df, _ = validate_events(frame)
    assert sorted(df["user_id"].to_list()) == ["1.5", "123", "7"]
    text_ids = frame.with_columns(pl.Series("user_id", ["123.0", " 7 ", "0042"]))
    assert sorted(validate_events(text_ids)[0]["user_id"].to_list()) == ["0042", "123", "7"]
    ints = frame.with_columns(pl.Series("user_id", [5, 6, 7]))
    assert validate_events(ints)[0]["user_id"].to_list() == ["5", "6", "7"]


# --- timestamps ---------------------------------------------------------------------------------

UTC_1430 = datetime(2024, 3, 5, 14, 30)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05T14:30:00Z", UTC_1430),
        ("2024-03-05T14:30:00.250Z", datetime(2024, 3, 5, 14, 30, 0, 250000)),
        ("2024-03-05 14:30:00", UTC_1430),
        ("2024-03-05T14:30", UTC_1430),
        ("2024-03-05 16:30:00+02:00", UTC_1430),
        ("2024-03-05T09:30:00-0500", UTC_1430),
        ("2024-03-05T16:30:00 +02", UTC_1430),
        ("2024-03-05 14:30:00 UTC", UTC_1430),
        ("2024-03-05", datetime(2024, 3, 5)),
        ("19970101", datetime(1997, 1, 1)),
        ("1709649000", UTC_1430),
        ("1709649000000", UTC_1430),
        ("1709649000.5", datetime(2024, 3, 5, 14, 30, 0, 500000)),
    ],
)
def test_timestamp_strings(text: str, expected: datetime) -> None:
    frame = pl.DataFrame({"user_id": ["u"], "ts": [text], "event": ["v"]})
    assert validate_events(frame)[0]["ts"].to_list() == [expected]


def test_mixed_timestamp_forms_in_one_column() -> None:
    values = ["2024-03-05 14:30:00"] * 50 + ["2024-03-05T15:30:00+01:00", "1709649000", "19970101"]
    frame = pl.DataFrame(
        {
            "user_id": [str(i) for i in range(len(values))],
            "ts": values,
            "event": ["v"] * len(values),
        }
    )
    out = validate_events(frame)[0].sort(pl.col("user_id").cast(pl.Int64))
    assert out["ts"].to_list() == [UTC_1430] * 52 + [datetime(1997, 1, 1)]


def _ts_column(values: list[str], **kw) -> list[datetime]:
    frame = pl.DataFrame({"user_id": [str(i) for i in range(len(values))], "ts": values, "event": ["v"] * len(values)})
    return validate_events(frame, **kw)[0].sort(pl.col("user_id").cast(pl.Int64))["ts"].to_list()


def test_day_month_year_text_takes_the_order_its_values_allow() -> None:
    """The UCI Online Retail log writes "12/1/2010 8:26" (month first); European exports day first."""
    us = ["12/1/2010 8:26", "12/13/2010 18:28", "1/2/2011 08:05:07", "3/4/2011", "12/13/2010 8:26 PM"]
    assert _ts_column(us) == [datetime(2010, 12, 1, 8, 26), datetime(2010, 12, 13, 18, 28),
                              datetime(2011, 1, 2, 8, 5, 7), datetime(2011, 3, 4), datetime(2010, 12, 13, 20, 26)]
    eu = ["13/01/2011 09:00", "01/02/2011 10:15", "01-02-2011"]
    assert _ts_column(eu) == [datetime(2011, 1, 13, 9), datetime(2011, 2, 1, 10, 15), datetime(2011, 2, 1)]
    assert _ts_column([*us[:2], "2011-01-02T08:05:07Z"])[2] == datetime(2011, 1, 2, 8, 5, 7)  # a stray ISO value
    dotted = ["01.02.2011 10:15", "03.04.2011"]  # dotted dates are day-first even when both orders fit
    assert _ts_column(dotted) == [datetime(2011, 2, 1, 10, 15), datetime(2011, 4, 3)]


def test_ambiguous_day_month_order_is_refused_with_the_fix() -> None:
    values = ["01/02/2011 10:15", "03/04/2011 11:00", "05/05/2011 12:00"]
    with pytest.raises(SchemaError, match=r"month-first and day-first.*data.ts_format='%m/%d/%Y %H:%M'"):
        _ts_column(values)
    assert _ts_column(values, ts_format="%d/%m/%Y %H:%M")[:2] == [datetime(2011, 2, 1, 10, 15), datetime(2011, 4, 3, 11)]
    assert _ts_column(values, ts_format="%m/%d/%Y %H:%M")[0] == datetime(2011, 1, 2, 10, 15)
    # a value the named format cannot read is a bad row, reported with the format as a fix
    with pytest.raises(SchemaError, match=r"row 3: '2011-05-05'.*data.ts_format"):
        _ts_column([*values[:2], "2011-05-05"], ts_format="%d/%m/%Y %H:%M")


@pytest.mark.parametrize(
    ("values", "unit", "expected"),
    [
        ([1709649000], "auto", UTC_1430),
        ([1709649000000], "auto", UTC_1430),
        ([1709649000000000], "auto", UTC_1430),
        ([1709649000.0], "auto", UTC_1430),
        ([19970101], "auto", datetime(1997, 1, 1)),
        ([1709649000000], "ms", UTC_1430),
        ([1709649000], "s", UTC_1430),
        ([19970101], "s", datetime(1970, 8, 20, 3, 15, 1)),
    ],
)
def test_numeric_timestamps(values: list[float], unit: str, expected: datetime) -> None:
    frame = pl.DataFrame({"user_id": ["u"], "ts": values, "event": ["v"]})
    assert validate_events(frame, ts_unit=unit)[0]["ts"].to_list() == [expected]  # type: ignore[arg-type]


def test_native_datetimes_and_dates() -> None:
    aware = pl.DataFrame({"user_id": ["u"], "ts": [datetime(2024, 3, 5, 15, 30)], "event": ["v"]})
    aware = aware.with_columns(
        pl.col("ts").dt.replace_time_zone("Europe/Berlin").dt.cast_time_unit("ns")
    )
    assert validate_events(aware)[0]["ts"].to_list() == [UTC_1430]
    utc = aware.with_columns(pl.lit(datetime(2024, 3, 5, 14, 30, tzinfo=timezone.utc)).alias("ts"))
    assert validate_events(utc)[0]["ts"].to_list() == [UTC_1430]
    dates = aware.with_columns(pl.lit(date(2024, 3, 5)).alias("ts"))
    out = validate_events(dates)[0]
    assert out["ts"].to_list() == [datetime(2024, 3, 5)] and out.schema["ts"] == pl.Datetime("us")


# --- ordering -----------------------------------------------------------------------------------


def test_sorted_by_user_then_time_stable_for_ties() -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["b", "a", "b", "a", "a"],
            "ts": ["2024-01-02", "2024-01-03", "2024-01-01", "2024-01-01", "2024-01-01"],
            "event": ["b2", "a3", "b1", "a1-first", "a1-second"],
        }
    )
    df, _ = validate_events(frame)
    assert df["event"].to_list() == ["a1-first", "a1-second", "a3", "b1", "b2"]


def test_sorting_by_user_rank_equals_sorting_by_id_on_shuffled_and_sorted_input() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    frame = pl.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 300, n)],  # "u10" < "u9": string order
                          "ts": rng.integers(1_700_000_000, 1_700_000_000 + 50, n),  # many ties
                          "event": [f"e{i}" for i in range(n)]})
    expect = frame.with_row_index("r").sort(["user_id", "ts", "r"])["event"].to_list()
    df, _ = validate_events(frame)
    assert df["event"].to_list() == expect
    again, _ = validate_events(df)  # already in order: kept as it is
    assert again["event"].to_list() == expect


def test_required_is_the_documented_triple() -> None:
    assert REQUIRED == ("user_id", "ts", "event")
    assert set(REQUIRED) <= set(CANONICAL)


def test_amount_as_a_product_of_columns(tmp_path: Path) -> None:
    """A line-level retail log gives quantity and unit price; the amount is their product."""
    path = _write_csv(
        tmp_path / "retail.csv",
        "CustomerID,InvoiceDate,Quantity,UnitPrice\n"
        "17850,2010-12-01 08:26:00,6,2.55\n"
        "17850,2010-12-01 08:26:00,-2,3.39\n"
        "13047,2010-12-01 08:34:00,12, 1.65\n",
    )
    cmap = ColumnMap.from_pairs(["user_id=CustomerID", "ts=InvoiceDate", "amount=Quantity * UnitPrice"])
    df, _ = read_events(path, cmap, event_default="purchase")
    assert df.sort("user_id", "amount")["amount"].to_list() == pytest.approx([19.8, -6.78, 15.3])
    # the extra columns can still be kept as they are
    cmap.extra_numeric = ["Quantity"]
    assert read_events(path, cmap, event_default="purchase")[0]["Quantity"].to_list() == [12.0, 6.0, -2.0]


def test_negative_lines_of_an_order_log_are_returns_not_purchases(tmp_path: Path) -> None:
    """A cancellation line (negative quantity) must not count as a purchase for the goal labels."""
    path = _write_csv(
        tmp_path / "retail.csv",
        "CustomerID,InvoiceDate,Quantity,UnitPrice\n"
        "17850,2010-12-01 08:26:00,6,2.55\n"
        "17850,2010-12-02 09:00:00,-2,3.39\n"
        "13047,2010-12-01 08:34:00,12,1.65\n"
        "13047,2010-12-03 10:00:00,,1.65\n",
    )
    cmap = ColumnMap.from_pairs(["user_id=CustomerID", "ts=InvoiceDate", "amount=Quantity*UnitPrice"])
    df, _ = read_events(path, cmap, event_default="purchase", return_event="return")
    assert df.sort("user_id", "ts")["event"].to_list() == ["purchase", "purchase", "purchase", "return"]
    assert "__seqcohort_event_defaulted__" not in df.columns
    # the default keeps every row the default event, as before
    df, _ = read_events(path, cmap, event_default="purchase")
    assert set(df["event"]) == {"purchase"}
    # an event given in the data is never rewritten; only the empty ones are filled (and split)
    path2 = _write_csv(
        tmp_path / "mixed.csv",
        "user_id,ts,event,amount\n"
        "a,2024-01-01,refund_request,-5\n"
        "a,2024-01-02,,-5\n"
        "a,2024-01-03,,7\n",
    )
    df, _ = read_events(path2, event_default="purchase", return_event="return")
    assert df["event"].to_list() == ["refund_request", "return", "purchase"]


def _online_retail_xlsx(path: Path) -> Path:
    """Two sheets shaped like UCI Online Retail II: numeric invoices until a late "C..." one."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path))
    when = wb.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    for sheet, start in (("Year 2009-2010", datetime(2009, 12, 1, 7, 45)), ("Year 2010-2011", datetime(2010, 12, 1, 8))):
        ws = wb.add_worksheet(sheet)
        ws.write_row(0, 0, ["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID"])
        for i in range(1, 151):
            cancel = i > 140  # after more rows than a type guess reads
            ws.write(i, 0, f"C{489434 + i}" if cancel else 489434 + i)
            ws.write(i, 1, 85048 if i < 120 else "79323P")  # numbers, then a code with a letter
            ws.write(i, 2, -2 if cancel else 6)
            ws.write_datetime(i, 3, start + timedelta(hours=i), when)
            ws.write(i, 4, 2.5)
            if i % 10:
                ws.write(i, 5, 13000.0 + i % 4)
    wb.close()
    return path


def test_spreadsheet_every_sheet_as_text_nothing_lost(tmp_path: Path) -> None:
    path = _online_retail_xlsx(tmp_path / "online_retail_II.xlsx")
    cmap = ColumnMap.from_pairs(["user_id=Customer ID", "ts=InvoiceDate", "item=StockCode", "amount=Quantity*Price"])
    with pytest.raises(SchemaError, match=r"30 of 300 rows have an empty user id in column 'Customer ID'.*row 10: \(empty\)"):
        read_events(path, cmap, event_default="purchase", return_event="return")
    df, report = read_events(path, cmap, event_default="purchase", return_event="return", mode="lenient")
    assert report.n_rows_in == 300 and report.n_rejected == 30 and df.height == 270
    assert Path(report.quarantine_path).name == "online_retail_II.quarantine.parquet"
    assert pl.read_parquet(report.quarantine_path)["Invoice"].str.starts_with("C").sum() == 2  # each sheet's last row
    assert df["ts"].min() == datetime(2009, 12, 1, 8, 45) and df["ts"].max() == datetime(2010, 12, 7, 13)
    assert df["event"].value_counts().sort("event").rows() == [("purchase", 252), ("return", 18)]
    assert set(df["user_id"]) == {"13000", "13001", "13002", "13003"} and set(df["item"]) == {"85048", "79323P"}


def test_amount_product_errors_name_the_factor_and_the_rows(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "retail.csv",
        "CustomerID,InvoiceDate,Quantity,UnitPrice\n"
        "17850,2010-12-01 08:26:00,6,2.55\n"
        "17850,2010-12-01 08:27:00,six,3.39\n",
    )
    base = ["user_id=CustomerID", "ts=InvoiceDate"]
    with pytest.raises(SchemaError, match=r"column 'Qty' \(mapped to 'amount'\) not found. Columns found: .*'Quantity'"):
        read_events(path, ColumnMap.from_pairs([*base, "amount=Qty*UnitPrice"]), event_default="purchase")
    with pytest.raises(SchemaError, match="not a product of columns"):
        read_events(path, ColumnMap.from_pairs([*base, "amount=Quantity*"]), event_default="purchase")
    cmap = ColumnMap.from_pairs([*base, "amount=Quantity*UnitPrice"])
    with pytest.raises(SchemaError) as e:
        read_events(path, cmap, event_default="purchase")
    msg = str(e.value)
    assert "1 of 2 rows has a value that is not a number in columns 'Quantity' * 'UnitPrice' (mapped to 'amount')" in msg
    assert "row 2: 'six * 3.39'" in msg
    df, report = read_events(path, cmap, mode="lenient", event_default="purchase")
    assert df.height == 1 and report.n_rejected == 1 and report.reasons == {"non_numeric_amount": 1}


def test_labels_are_categorical_cleaned_like_ids_and_a_shared_column_stays_text(tmp_path: Path) -> None:
    frame = pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2"],
        "ts": ["2024-03-05 10:00", "2024-03-05 11:00", "2024-03-05 09:00", "2024-03-06"],
        "event": [" view", "view ", "buy", "buy"],
        "item": ["P1 ", "P1", None, "7.0"],
        "text": [" A title ", "A title", None, "Other"],
    }).with_columns(shop=pl.col("user_id"))  # read both as an id and as an extra label
    path = tmp_path / "events.parquet"
    frame.write_parquet(path)
    df, _ = read_events(path, ColumnMap(extra_categorical=["shop"]))
    for name in ("event", "item", "text", "shop"):
        assert df.schema[name] == pl.Categorical, name
    assert df.schema["user_id"] == pl.String
    assert df["event"].to_list() == ["view", "view", "buy", "buy"]
    assert df["item"].to_list() == ["P1", "P1", None, "7"]
    assert df["text"].to_list() == [" A title ", "A title", None, "Other"]  # text is kept as written
    assert df["shop"].to_list() == df["user_id"].to_list() == ["u1", "u1", "u2", "u2"]
    same, _ = validate_events(frame, ColumnMap(extra_categorical=["shop"]))
    assert same.equals(df)
