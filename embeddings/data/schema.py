"""Canonical event schema: read an event log with any column names, validate it, explain problems.

Every other module sees events in one shape (`CANONICAL`, sorted by user then time):

    user_id  String        who did it (numeric ids become strings; integral floats lose ".0")
    ts       Datetime(us)  when, naive UTC (offsets are converted to UTC, then dropped)
    event    String        what kind of event ("view", "purchase", ...)
    item     String        optional: which item
    category String        optional: the item's category
    amount   Float64       optional: money or quantity
    text     String        optional: free text, e.g. a product title
    + extra categorical (String) and numeric (Float64) columns named in the `ColumnMap`

Bad rows are never dropped silently: strict mode (the default) raises a `SchemaError` naming the
file, column, row numbers, offending values and the fix; lenient mode writes them to a quarantine
parquet file with a `_reason` per row and loads the rest.

Timestamp auto-detection (`ts_unit="auto"`), per value:
    * strings: ISO-8601 with `T` or space, optional seconds/fraction, optional `Z`/`UTC`/`+hh:mm`
      offset; plain dates `2024-03-05`; 8-digit `YYYYMMDD` (`19970101`); numeric strings as epochs.
    * native Date / Datetime columns (tz-aware ones are converted to UTC).
    * numbers: 8-digit integers 10000000..99999999 are YYYYMMDD dates; otherwise epochs by
      magnitude |v| < 1e11 -> seconds, < 1e14 -> milliseconds, < 1e17 -> microseconds, else
      nanoseconds. (1e11 s is the year 5138 and 1e11 ms is 1973, so the ranges do not overlap
      for real event data.) An explicit `ts_unit` turns both rules off: every number is an epoch
      in that unit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from embeddings.data.columns import (  # noqa: F401  (CANONICAL, OPTIONAL, ColumnMap re-exported)
    CANONICAL,
    OPTIONAL,
    REQUIRED,
    ColumnMap,
    FieldSpec,
    resolve_fields,
)
from embeddings.data.files import (  # noqa: F401  (SUPPORTED_FORMATS re-exported)
    SUPPORTED_FORMATS,
    _default_quarantine,
    _empty_error,
    _format_of,
    _read_error,
    _scan,
)
from embeddings.data.schema_report import _ROW, _describe, _strict_message, _write_quarantine
from embeddings.data.timeparse import _parse_ts_strings, _ts_expr, _type_error
from embeddings.errors import SchemaError

logger = logging.getLogger(__name__)
_DEFAULTED = "__seqcohort_event_defaulted__"  # internal: the row's event came from event_default


Mode = Literal["strict", "lenient"]
from embeddings.data.timeparse import TsUnit  # noqa: E402  (re-exported)


@dataclass
class LoadReport:
    """What happened while loading: rows in/out, rejected rows per reason, the quarantine file.

    A row with several problems counts under each of its reasons, so `sum(reasons.values())`
    can exceed `n_rejected`; `n_rows_out + n_rejected == n_rows_in` always holds.
    """

    path: str
    n_rows_in: int
    n_rows_out: int
    n_rejected: int
    quarantine_path: str | None
    reasons: dict[str, int]


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def read_events(
    path: str | Path,
    columns: ColumnMap | None = None,
    *,
    mode: Mode = "strict",
    quarantine_path: str | Path | None = None,
    ts_unit: TsUnit = "auto",
    event_default: str | None = None,
    return_event: str | None = None,
    ts_format: str | None = None,
) -> tuple[pl.DataFrame, LoadReport]:
    """Read an event file (or a directory of parquet files) into the canonical schema.

    Args:
        path: `.parquet`, `.csv[.gz]`, `.jsonl[.gz]`/`.ndjson[.gz]`, or a directory of parquet.
        columns: where the canonical columns come from; default: the canonical names.
        mode: "strict" raises on any bad row; "lenient" quarantines bad rows and loads the rest.
        quarantine_path: lenient mode's file; default `<input stem>.quarantine.parquet` beside it.
        ts_unit: unit of numeric timestamps; "auto" detects it per value (see module docstring).
        event_default: event type for rows without one, or for every row when the data has no
            event column (e.g. "purchase" for a plain transaction log).
        return_event: event type for those rows instead when their amount is negative (an order
            log's returns and cancellations); None keeps them `event_default`.
        ts_format: strftime format of text timestamps (e.g. "%d/%m/%Y %H:%M"); default: detected.

    Returns:
        (events sorted by user_id then ts, stable for ties; the load report)
    """
    started = time.perf_counter()
    path = Path(path)
    columns = columns or ColumnMap()
    fmt = _format_of(path)
    lf = _scan(path, fmt, lossy=mode == "lenient")
    try:
        found = [c for c in lf.collect_schema().names() if c != _ROW]
        spec = resolve_fields(found, columns, str(path), event_default)
        needed = _read_exprs(spec, lf.collect_schema())
        try:
            df = lf.select(_ROW, *needed).collect()
        except pl.exceptions.ComputeError:
            if fmt != "ndjson":
                raise
            # A JSON field whose type changes after the first rows: infer from the whole file.
            lf = _scan(path, fmt, lossy=False, full_inference=True)
            df = lf.select(_ROW, *_read_exprs(spec, lf.collect_schema())).collect()
    except pl.exceptions.NoDataError as exc:
        raise _empty_error(path) from exc
    except pl.exceptions.PolarsError as exc:
        raise _read_error(path, fmt, exc) from exc
    if df.height == 0:
        raise _empty_error(path)
    if quarantine_path is None and mode == "lenient":
        quarantine_path = _default_quarantine(path)
    out, report = _validate(
        df,
        spec,
        source=str(path),
        mode=mode,
        quarantine_path=quarantine_path,
        ts_unit=ts_unit,
        event_default=event_default,
        return_event=return_event,
        ts_format=ts_format,
        raw=lf,
    )
    logger.info(
        "Loaded %d events for %d users from %s in %.2fs",
        out.height,
        out["user_id"].n_unique(),
        path,
        time.perf_counter() - started,
    )
    return out, report


def validate_events(
    df: pl.DataFrame,
    columns: ColumnMap | None = None,
    *,
    source: str = "<dataframe>",
    mode: Mode = "strict",
    quarantine_path: str | Path | None = None,
    ts_unit: TsUnit = "auto",
    event_default: str | None = None,
    return_event: str | None = None,
    ts_format: str | None = None,
) -> tuple[pl.DataFrame, LoadReport]:
    """Map and validate an in-memory frame exactly as `read_events` does a file.

    `source` names the data in messages. In lenient mode without a `quarantine_path` the
    rejected rows are counted in the report and logged, but not written anywhere.
    """
    columns = columns or ColumnMap()
    if df.height == 0:
        raise SchemaError(
            f"{source}: the event data has no rows. Pass at least one event "
            f"(columns {', '.join(REQUIRED)})."
        )
    spec = resolve_fields(df.columns, columns, source, event_default)
    indexed = df.with_row_index(_ROW, offset=1)
    needed = list(dict.fromkeys(c for f in spec for c in f.inputs))
    return _validate(
        indexed.select(_ROW, *needed),
        spec,
        source=source,
        mode=mode,
        quarantine_path=quarantine_path,
        ts_unit=ts_unit,
        event_default=event_default,
        return_event=return_event,
        ts_format=ts_format,
        raw=indexed.lazy(),
    )


# ---------------------------------------------------------------------------------------------
# Column mapping
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Conversion and validation
# ---------------------------------------------------------------------------------------------


def _read_exprs(spec: list[FieldSpec], schema: pl.Schema) -> list[pl.Expr]:
    """The source columns to read; text read only as labels becomes Categorical as it is read, so a
    large log never holds its labels as strings (docs/decisions.md#labels-held-as-categoricals)."""
    other = {c for f in spec if not f.is_label for c in f.inputs}
    cols = dict.fromkeys(c for f in spec for c in f.inputs)
    return [pl.col(c).cast(pl.Categorical) if schema[c] == pl.String and c not in other else pl.col(c) for c in cols]


def is_user_time_sorted(df: pl.DataFrame) -> bool:
    """Whether `df` is in canonical order already: by user_id, then ts (what `read_events` returns)."""
    u, ts = pl.col("user_id"), pl.col("ts")
    return bool(df.select(((u > u.shift(1)) | ((u == u.shift(1)) & (ts >= ts.shift(1)))).fill_null(True).all()).item())


def sort_by_user_time(df: pl.DataFrame) -> pl.DataFrame:
    """`df` sorted by user_id then ts, ties kept in order; a frame in that order already is not copied."""
    return df if is_user_time_sorted(df) else df.sort(["user_id", "ts"], maintain_order=True)


def _sorted_by_user(df: pl.DataFrame) -> pl.DataFrame:
    """`df` sorted by user_id, then ts, ties in file order (`_ROW`); a frame already in that order is
    returned as is. Sorting by the user's rank, not the id string, needs a fraction of the memory."""
    if is_user_time_sorted(df):
        return df
    u, ts = pl.col("user_id"), pl.col("ts")
    return df[df.select(pl.arg_sort_by([u.rank("dense"), ts, pl.col(_ROW)])).to_series()]


def _validate(
    df: pl.DataFrame,
    spec: list[FieldSpec],
    *,
    source: str,
    mode: Mode,
    quarantine_path: str | Path | None,
    ts_unit: TsUnit,
    event_default: str | None,
    raw: pl.LazyFrame,
    return_event: str | None = None,
    ts_format: str | None = None,
) -> tuple[pl.DataFrame, LoadReport]:
    """Convert `df` (row number + source columns) to canonical columns; report or quarantine."""
    if mode not in ("strict", "lenient"):
        raise SchemaError(f"mode must be 'strict' or 'lenient', not {mode!r}.")
    schema = df.schema
    exprs: list[pl.Expr] = [pl.col(_ROW).cast(pl.Int64)]
    required: list[tuple[str, FieldSpec, pl.Expr]] = []  # (reason, field, bad-row mask)
    numeric: list[tuple[str, FieldSpec, pl.Expr]] = []
    for f in spec:
        if f.source is None:
            value = pl.lit(event_default if f.kind == "event" else None)
            exprs.append(value.cast(_dtype(f)).alias(f.canonical))
            if f.kind == "event":
                exprs.append(pl.lit(event_default is not None).alias(_DEFAULTED))
            continue
        if f.kind == "num":  # one column, or the product of several (amount=Quantity*UnitPrice)
            value = _num_expr(pl.col(f.inputs[0]), schema[f.inputs[0]], source, f.inputs[0])
            given = _given(pl.col(f.inputs[0]), schema[f.inputs[0]])
            for c in f.inputs[1:]:
                value = value * _num_expr(pl.col(c), schema[c], source, c)
                given = given & _given(pl.col(c), schema[c])
            exprs += [value.alias(f.canonical), given.alias(f"__given_{f.canonical}")]
            out = pl.col(f.canonical)
            numeric.append((f"non_numeric_{f.canonical}", f, pl.col(f"__given_{f.canonical}") & out.is_null()))
            numeric.append((f"nonfinite_{f.canonical}", f, ~out.is_finite()))
            continue
        col, dtype, out = pl.col(f.source), schema[f.source], pl.col(f.canonical)
        if f.kind == "ts" and dtype in (pl.String, pl.Categorical, pl.Enum):
            parsed = _parse_ts_strings(df[f.source].cast(pl.String), ts_unit, ts_format, source, f.source)
            exprs.append(pl.lit(parsed).alias(f.canonical))
        elif f.kind == "ts":
            exprs.append(_ts_expr(col, dtype, ts_unit, source, f.source).alias(f.canonical))
        elif f.is_label:
            labels = _label_expr(df.get_column(f.source), dtype, f.kind == "text", source, f.source)
            if f.kind == "event" and event_default is not None:
                exprs.append(labels.is_null().alias(_DEFAULTED))
                labels = labels.fill_null(pl.lit(event_default, dtype=pl.Categorical))
            exprs.append(labels.alias(f.canonical))
        else:  # user ids
            exprs.append(_user_id_expr(df.get_column(f.source), dtype, source, f.source).alias(f.canonical))
        if f.canonical in REQUIRED:
            reason = {"user_id": "missing_user_id", "ts": "bad_timestamp"}.get(
                f.canonical, "missing_event"
            )
            required.append((reason, f, out.is_null()))
    checks = required + numeric
    converted = _split_returns(df.select(exprs), return_event, source)
    masks = converted.select(
        [m.fill_null(False).alias(f"__bad{i}") for i, (_, _, m) in enumerate(checks)]
    )
    counts = {reason: int(masks[:, i].sum()) for i, (reason, _, _) in enumerate(checks)}
    reasons = {r: n for r, n in counts.items() if n}
    out_cols = [f.canonical for f in spec]
    n_in = df.height
    if not reasons:
        out = _sorted_by_user(converted).select(out_cols)
        return out, LoadReport(source, n_in, n_in, 0, None, {})

    converted = pl.concat([converted, masks], how="horizontal")
    bad_any = pl.any_horizontal(masks.columns)
    bad_rows = converted.filter(bad_any).select(
        pl.col(_ROW),
        pl.concat_str(
            [pl.when(pl.col(f"__bad{i}")).then(pl.lit(r)) for i, (r, _, _) in enumerate(checks)],
            separator="; ",
            ignore_nulls=True,
        ).alias("_reason"),
    )
    problems = [
        _describe(reason, f, counts[reason], df, masks[:, i], n_in)
        for i, (reason, f, _) in enumerate(checks)
        if counts[reason]
    ]
    n_bad = bad_rows.height
    if mode == "strict":
        raise SchemaError(_strict_message(source, problems))
    written = None
    if quarantine_path is not None:
        written = _write_quarantine(raw, bad_rows, Path(quarantine_path))
    if n_bad == n_in:
        where = f" They were written to {written}." if written else ""
        raise SchemaError(f"Every row was rejected.{where} " + _strict_message(source, problems))
    summary = ", ".join(f"{n} {r}" for r, n in reasons.items())
    logger.warning(
        "%s: quarantined %d of %d rows (%s)%s",
        source,
        n_bad,
        n_in,
        summary,
        f" to {written}" if written else "; pass quarantine_path to keep them",
    )
    out = _sorted_by_user(converted.filter(~bad_any)).select(out_cols)
    report = LoadReport(source, n_in, out.height, n_bad, str(written) if written else None, reasons)
    return out, report


def _split_returns(converted: pl.DataFrame, return_event: str | None, source: str) -> pl.DataFrame:
    """Rows whose event came from `event_default` and whose amount is negative become `return_event`.

    An order log without an event column records a return or cancellation as a line with a
    negative quantity; counted as the default event, it would be a purchase to the goal labels,
    the RFM baseline and the encoder alike.
    """
    if _DEFAULTED not in converted.columns:
        return converted
    if return_event is not None and converted.schema.get("amount") == pl.Float64:
        is_return = pl.col(_DEFAULTED) & (pl.col("amount") < 0).fill_null(False)
        n = int(converted.select(is_return.sum()).item())
        if n:
            converted = converted.with_columns(
                event=pl.when(is_return).then(pl.lit(return_event)).otherwise(pl.col("event")).cast(pl.Categorical)
            )
            logger.info("%s: %d rows without an event type have a negative amount: event %r "
                        "(returns; data.return_event=null keeps them the default event)",
                        source, n, return_event)
    return converted.drop(_DEFAULTED)


def _dtype(f: FieldSpec) -> pl.DataType:
    if f.kind == "ts":
        return pl.Datetime("us")
    return pl.Float64() if f.kind == "num" else pl.Categorical() if f.is_label else pl.String()


def _user_id_expr(s: pl.Series, dtype: pl.DataType, source: str, name: str) -> pl.Expr:
    """User ids cleaned by `_id_expr`; text ids that cleaning leaves as they are (the usual case) are
    kept as read, so a large log's ids are not copied. Both are decided on the distinct ids."""
    if dtype != pl.String:
        return _id_expr(pl.col(name), dtype, source, name)
    k = pl.col("k")
    ids = s.unique().to_frame("k")
    if ids.select(_id_expr(k, dtype, source, name).eq_missing(k).all()).item():
        return pl.col(name)
    float_text = bool(ids.select(k.str.contains(r"\d\.0+\s*$").any()).item())
    return _id_expr(pl.col(name), dtype, source, name, float_text=float_text)


def _label_expr(s: pl.Series, dtype: pl.DataType, text: bool, source: str, name: str) -> pl.Expr:
    """A label column as Categorical, cleaned like ids (`_id_expr`; text only cast). Cleaning is
    worked out once per distinct value: labels it leaves as they are (the usual case) are kept as
    read, others are mapped to their clean value; no string per event is made either way."""
    if text and (dtype.is_nested() or dtype == pl.Object):
        raise _type_error(source, name, dtype, "text")
    if dtype not in (pl.String, pl.Categorical, pl.Enum):  # numbers and flags: few bytes each already
        return (pl.col(name).cast(pl.String) if text else _id_expr(pl.col(name), dtype, source, name)).cast(pl.Categorical)
    k = pl.col("k")
    clean = (k.cast(pl.String) if text else _id_expr(k, dtype, source, name)).cast(pl.Categorical)
    labels = s.cast(pl.Categorical)
    m = labels.unique().to_frame("k").with_columns(v=clean)
    if m.select(pl.col("v").eq_missing(k).all()).item():
        return pl.col(name).cast(pl.Categorical)
    return pl.lit(labels.to_frame("k").join(m, on="k", how="left", maintain_order="left", nulls_equal=True)
                  .get_column("v"))


def _id_expr(
    col: pl.Expr, dtype: pl.DataType, source: str, name: str, *, float_text: bool = True
) -> pl.Expr:
    """Ids/labels to String: strip, '' -> null, integral floats (123.0 / "123.0") -> "123".

    `float_text=False` skips the "123.0" rewrite when no value needs it (a costly regex).
    """
    if dtype.is_integer() or dtype == pl.Boolean:
        return col.cast(pl.String)
    if dtype.is_float():
        integral = col.is_finite() & (col == col.round()) & (col.abs() < 2.0**53)
        return (
            pl.when(integral)
            .then(col.cast(pl.Int64, strict=False).cast(pl.String))
            .when(col.is_finite())
            .then(col.cast(pl.String))
        )
    if dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(dtype, pl.Decimal):
        s = col.cast(pl.String).str.strip_chars()
        if float_text:
            s = s.str.replace(r"^(-?\d+)\.0+$", "${1}")
        return pl.when(s != "").then(s)
    raise _type_error(source, name, dtype, "identifiers or labels")


def _given(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """True where a value was supplied (not null, not blank text)."""
    return col.is_not_null() & (col.str.strip_chars() != "") if dtype == pl.String else col.is_not_null()


def _num_expr(col: pl.Expr, dtype: pl.DataType, source: str, name: str) -> pl.Expr:
    if dtype.is_numeric() or dtype == pl.Boolean:
        return col.cast(pl.Float64)
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    raise _type_error(source, name, dtype, "numbers")
