"""Timestamp parsing for event logs: ISO-8601 strings, dates, YYYYMMDD and epoch numbers -> UTC.

Also the day/month/year text spreadsheets and older exports write ("12/1/2010 8:26" in the UCI
Online Retail log, "01.12.2010 08:26" in European ones): the column's order (month or day first)
is read off the values themselves, and a column that reads both ways is refused with the fix
(`data.ts_format`) rather than guessed. An explicit strftime format always wins.

Used by `embeddings.data.schema`; every function returns a polars expression or series of
Datetime("us") values (naive, meaning UTC) with nulls where a value cannot be parsed, so the
caller can report those rows instead of dropping them.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from embeddings.errors import SchemaError

TsUnit = Literal["auto", "s", "ms", "us"]


def _type_error(source: str, column: str, dtype: pl.DataType, expected: str) -> SchemaError:
    return SchemaError(
        f"{source}: column {column!r} has type {dtype}, which cannot hold {expected}. Map a "
        f"different column with --map, or convert this one before loading."
    )


def _ts_expr(col: pl.Expr, dtype: pl.DataType, ts_unit: TsUnit, source: str, name: str) -> pl.Expr:
    """Any supported timestamp representation -> naive UTC Datetime("us"); unparseable -> null."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    if dtype.is_integer():
        return _epoch_int(col.cast(pl.Int64), ts_unit)
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        return _epoch_float(col.cast(pl.Float64), ts_unit)
    raise _type_error(source, name, dtype, "timestamps")


# Formats tried on a sample of string timestamps; the best one parses the whole column. Formats
# without %.f / %z come first because polars parses them several times faster.
_FAST_FORMATS: tuple[tuple[str, bool], ...] = (  # (format, has utc offset)
    ("%Y-%m-%d %H:%M:%S", False),
    ("%Y-%m-%dT%H:%M:%S", False),
    ("%Y-%m-%dT%H:%M:%SZ", False),
    ("%Y-%m-%d", False),
    ("%Y-%m-%d %H:%M", False),
    ("%Y-%m-%dT%H:%M", False),
    ("%Y-%m-%d %H:%M:%S%.f", False),
    ("%Y-%m-%dT%H:%M:%S%.f", False),
    ("%Y-%m-%dT%H:%M:%S%.fZ", False),
    ("%Y-%m-%dT%H:%M:%S%z", True),
    ("%Y-%m-%d %H:%M:%S%z", True),
    ("%Y-%m-%dT%H:%M:%S%.f%z", True),
    ("%Y-%m-%d %H:%M:%S%.f%z", True),
)
_SLOW_FORMATS: tuple[tuple[str, bool], ...] = (  # applied after _normalize_iso
    ("%Y-%m-%d %H:%M:%S%.f%z", True),
    ("%Y-%m-%d %H:%M%z", True),
    ("%Y-%m-%d %H:%M:%S%.f", False),
    ("%Y-%m-%d %H:%M", False),
    ("%Y-%m-%d", False),
)


def _strptime(e: pl.Expr, fmt: str, utc_offset: bool) -> pl.Expr:
    if utc_offset:
        parsed = e.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False)
        return parsed.dt.replace_time_zone(None)
    return e.str.strptime(pl.Datetime("us"), fmt, strict=False)


def _normalize_iso(e: pl.Expr) -> pl.Expr:
    """`T`/`t` -> space, `Z`/`UTC` -> +00:00, `+02` -> +02:00, no space before the offset."""
    time_part = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)"
    return (
        e.str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt ]+", "${1} ")
        .str.replace(r"(?i)\s*(z|utc|gmt)$", "+00:00")
        .str.replace(time_part + r"\s*([+-]\d{2})$", "${1}${2}:00")
        .str.replace(time_part + r"\s+([+-]\d{2}:?\d{2})$", "${1}${2}")
    )


_DMY = r"^(\d{1,2})([/.-])(\d{1,2})[/.-](\d{4})(?:$|[ T])"  # 12/1/2010 8:26, 01.12.2010, 1-12-2010
_DMY_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S%.f", " %I:%M %p", " %I:%M:%S %p",
              "T%H:%M", "T%H:%M:%S", "T%H:%M:%S%.f")


def _dmy_order(s: pl.Series, source: str, name: str) -> tuple[str, str] | None:
    """("%m", "%d") or ("%d", "%m") for a column of day/month/year text, None if it is not one.

    The order is the one under which every value is a valid date (a first field above 12 is a
    day, a second above 12 is a day). A column valid both ways with values that differ between
    them (no day past the 12th) is ambiguous: refused, since a wrong guess moves events by months.
    """
    if s.len() == 0:
        return None
    parts = s.str.extract_groups(_DMY)
    if parts.struct.field("4").null_count() > s.len() // 2:
        return None
    a = parts.struct.field("1").cast(pl.Int32)
    b = parts.struct.field("3").cast(pl.Int32)
    month_first_ok, day_first_ok = bool((a <= 12).all()), bool((b <= 12).all())
    if month_first_ok and day_first_ok and bool((a != b).any()):
        if (parts.struct.field("2") == ".").all():
            return ("%d", "%m")  # dotted dates are day-first wherever they are written
        example = s.filter((a != b).fill_null(False))[0]
        raise SchemaError(
            f"{source}: column {name!r} holds dates like {example!r} that read both month-first and "
            f"day-first (no day past the 12th), so the order cannot be told from the data. Fix: name "
            f"the format, e.g. --set data.ts_format='%m/%d/%Y %H:%M' (US) or "
            f"--set data.ts_format='%d/%m/%Y %H:%M' (day first); formats as in Python's strftime."
        )
    if day_first_ok and not month_first_ok:
        return ("%d", "%m")
    if month_first_ok or (not day_first_ok and (a <= 12).sum() >= (b <= 12).sum()):
        return ("%m", "%d")
    return ("%d", "%m")


def _parse_ts_strings(
    s: pl.Series, ts_unit: TsUnit, ts_format: str | None = None, source: str = "<data>", name: str = "ts"
) -> pl.Series:
    """String timestamps -> naive UTC Datetime("us"); unparseable -> null.

    With `ts_format` (strftime, a %z offset converted to UTC) every value is read with it.
    Otherwise the format that parses most of a sample is applied to the whole column (fast);
    only the rows it misses go through every supported form (slow, but usually few or none).
    Day/month/year text takes the order its values allow (see `_dmy_order`).
    """
    s = s.str.strip_chars()
    if ts_format is not None:
        return s.to_frame("v").select(_strptime(pl.col("v"), ts_format, "%z" in ts_format).alias(s.name)).to_series()
    frame = s.to_frame("v")
    epoch = lambda e: _epoch_float(e.cast(pl.Float64, strict=False), ts_unit)  # noqa: E731
    iso = [lambda e, f=f, tz=tz: _strptime(_normalize_iso(e), f, tz) for f, tz in _SLOW_FORMATS] + [epoch]
    order = _dmy_order(s.drop_nulls(), source, name)
    if order is not None:
        seps = s.str.extract(_DMY, 2).drop_nulls().unique().sort().to_list()
        fmts = [f"{order[0]}{sep}{order[1]}{sep}%Y{t}" for sep in seps for t in _DMY_TIMES]
        parsers = [lambda e, f=f: _strptime(e, f, False) for f in fmts]
        fallback = parsers + iso  # a few ISO or epoch values among them still read
    else:
        parsers = [lambda e, f=f, tz=tz: _strptime(e, f, tz) for f, tz in _FAST_FORMATS] + [epoch]
        fallback = iso
    values = s.drop_nulls()
    sample = values.gather_every(max(1, values.len() // 1000)).to_frame("v")
    hits = sample.select(
        [p(pl.col("v")).is_not_null().sum().alias(str(i)) for i, p in enumerate(parsers)]
    ).row(0)
    best = max(range(len(parsers)), key=lambda i: (hits[i], -i))
    out = frame.select(parsers[best](pl.col("v")).alias(s.name)).to_series()
    todo = out.is_null() & s.is_not_null()
    if todo.any():
        rest = frame.filter(todo).select(pl.coalesce(*[p(pl.col("v")) for p in fallback])).to_series()
        out = out.scatter(todo.arg_true(), rest)
    return out


_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1}


def _epoch_int(x: pl.Expr, ts_unit: TsUnit) -> pl.Expr:
    """Integer epochs -> Datetime("us") in exact integer arithmetic (see module docstring)."""
    a = x.abs()
    if ts_unit != "auto":
        per = _US_PER[ts_unit]
        return pl.when(a < 9 * 10**18 // per).then((x * per).cast(pl.Datetime("us")))
    us = (
        pl.when(a < 10**11)
        .then(x * 1_000_000)
        .when(a < 10**14)
        .then(x * 1_000)
        .when(a < 10**17)
        .then(x)
        .otherwise(x // 1_000)
    )
    ymd = x.cast(pl.String).str.strptime(pl.Datetime("us"), "%Y%m%d", strict=False)
    return (
        pl.when((x >= 10_000_000) & (x < 100_000_000))
        .then(ymd)
        .otherwise(us.cast(pl.Datetime("us")))
    )


def _epoch_float(x: pl.Expr, ts_unit: TsUnit) -> pl.Expr:
    """Float epochs (possibly fractional) -> Datetime("us"); NaN/inf -> null."""
    if ts_unit != "auto":
        us = x * float(_US_PER[ts_unit])
    else:
        a = x.abs()
        us = (
            pl.when(a < 1e11)
            .then(x * 1e6)
            .when(a < 1e14)
            .then(x * 1e3)
            .when(a < 1e17)
            .then(x)
            .otherwise(x / 1e3)
        )
    as_dt = us.round().cast(pl.Int64, strict=False).cast(pl.Datetime("us"))
    valid = x.is_finite() & (us.abs() < 9e18)
    if ts_unit == "auto":
        eight = (x >= 1e7) & (x < 1e8) & (x == x.round())
        ymd = (
            x.cast(pl.Int64, strict=False)
            .cast(pl.String)
            .str.strptime(pl.Datetime("us"), "%Y%m%d", strict=False)
        )
        return pl.when(eight).then(ymd).when(valid).then(as_dt)
    return pl.when(valid).then(as_dt)
