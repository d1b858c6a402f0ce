"""Timestamp parsing for event logs: ISO-8601 strings, dates, YYYYMMDD and epoch numbers -> UTC.

Used by `embeddings.schema`; every function returns a polars expression or series of
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


def _parse_ts_strings(s: pl.Series, ts_unit: TsUnit) -> pl.Series:
    """String timestamps -> naive UTC Datetime("us"); unparseable -> null.

    The format that parses most of a sample is applied to the whole column (fast); only the
    rows it misses go through every supported form (slow, but usually few or none).
    """
    s = s.str.strip_chars()
    parsers = [lambda e, f=f, tz=tz: _strptime(e, f, tz) for f, tz in _FAST_FORMATS]
    parsers.append(lambda e: _epoch_float(e.cast(pl.Float64, strict=False), ts_unit))
    values = s.drop_nulls()
    sample = values.gather_every(max(1, values.len() // 1000)).to_frame("v")
    hits = sample.select(
        [p(pl.col("v")).is_not_null().sum().alias(str(i)) for i, p in enumerate(parsers)]
    ).row(0)
    best = max(range(len(parsers)), key=lambda i: (hits[i], -i))
    frame = s.to_frame("v")
    out = frame.select(parsers[best](pl.col("v")).alias(s.name)).to_series()
    todo = out.is_null() & s.is_not_null()
    if todo.any():
        rest = (
            frame.filter(todo)
            .select(
                pl.coalesce(
                    *[_strptime(_normalize_iso(pl.col("v")), f, tz) for f, tz in _SLOW_FORMATS],
                    parsers[-1](pl.col("v")),
                )
            )
            .to_series()
        )
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
