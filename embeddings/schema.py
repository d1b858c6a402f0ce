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

import difflib
import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import polars as pl

from embeddings.errors import SchemaError
from embeddings.fsutil import atomic_path

logger = logging.getLogger(__name__)

CANONICAL: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "ts": pl.Datetime("us"),
    "event": pl.String(),
    "item": pl.String(),
    "category": pl.String(),
    "amount": pl.Float64(),
    "text": pl.String(),
}
REQUIRED = ("user_id", "ts", "event")
OPTIONAL = ("item", "category", "amount", "text")
SUPPORTED_FORMATS = ".parquet, .csv, .csv.gz, .jsonl, .ndjson, .jsonl.gz, .ndjson.gz, or a directory of .parquet files"

Mode = Literal["strict", "lenient"]
TsUnit = Literal["auto", "s", "ms", "us"]

_ROW = "__seqcohort_row__"  # internal 1-based data-row number; unlikely to clash with user columns
_MAX_EXAMPLES = 5
_LENIENT_HINT = (
    "Row numbers count data rows from 1 (a CSV header is not counted). To load the valid rows "
    "and quarantine the rest to a file, use lenient mode (mode='lenient'; CLI: --set data.mode=lenient)."
)
# Common names people give the required columns, for "did you mean" suggestions.
_SYNONYMS = {
    "user_id": (
        "user",
        "userid",
        "customer",
        "customerid",
        "customer_id",
        "client",
        "clientid",
        "household",
        "householdid",
        "household_id",
        "visitor",
        "visitorid",
        "member",
        "account",
        "accountid",
        "uid",
        "session_user",
    ),
    "ts": (
        "timestamp",
        "time",
        "datetime",
        "date",
        "eventtime",
        "event_time",
        "created_at",
        "createdat",
        "invoicedate",
        "transaction_timestamp",
        "occurred_at",
        "event_ts",
    ),
    "event": (
        "event_type",
        "eventtype",
        "event_name",
        "action",
        "type",
        "activity",
        "interaction",
        "behavior",
        "behaviour",
    ),
}


@dataclass
class ColumnMap:
    """Where each canonical column comes from: canonical name -> the user's column name.

    Optional columns set to None are not read. An optional column left at its default name that
    is absent from the data is added as all-null; one mapped to another name must exist.
    """

    user_id: str = "user_id"
    ts: str = "ts"
    event: str = "event"
    item: str | None = "item"
    category: str | None = "category"
    amount: str | None = "amount"
    text: str | None = "text"
    extra_categorical: list[str] = field(default_factory=list)  # kept as String columns
    extra_numeric: list[str] = field(default_factory=list)  # kept as Float64 columns

    @classmethod
    def from_pairs(cls, pairs: list[str]) -> ColumnMap:
        """Build from CLI pairs such as `["user_id=CustomerID", "ts=InvoiceDate"]`.

        `item=` (empty) turns an optional column off; `extra_numeric=qty,price` adds extras.
        """
        valid = [f.name for f in fields(cls)]
        cmap = cls()
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise SchemaError(
                    f"Column mapping {pair!r} is not of the form canonical=column, e.g. "
                    f"--map user_id=CustomerID. Canonical names: {', '.join(valid)}."
                )
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SchemaError(
                    f"Unknown canonical column {key!r} in mapping {pair!r}.{hint} "
                    f"Valid names: {', '.join(valid)}."
                )
            if key in ("extra_categorical", "extra_numeric"):
                getattr(cmap, key).extend(c.strip() for c in value.split(",") if c.strip())
            elif not value:
                if key in REQUIRED:
                    raise SchemaError(
                        f"Column mapping {pair!r} leaves the required column {key!r} empty; "
                        f"name the column that holds it, e.g. --map {key}=<column>."
                    )
                setattr(cmap, key, None)
            else:
                setattr(cmap, key, value)
        return cmap


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


@dataclass(frozen=True)
class _Field:
    canonical: str  # output column name
    source: str | None  # input column name; None = not in the data (filled with nulls/constant)
    kind: Literal["id", "ts", "event", "text", "num"]


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
        spec = _resolve_fields(found, columns, str(path), event_default)
        needed = list(dict.fromkeys(f.source for f in spec if f.source is not None))
        try:
            df = lf.select(_ROW, *needed).collect()
        except pl.exceptions.ComputeError:
            if fmt != "ndjson":
                raise
            # A JSON field whose type changes after the first rows: infer from the whole file.
            lf = _scan(path, fmt, lossy=False, full_inference=True)
            df = lf.select(_ROW, *needed).collect()
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
    spec = _resolve_fields(df.columns, columns, source, event_default)
    indexed = df.with_row_index(_ROW, offset=1)
    needed = list(dict.fromkeys(f.source for f in spec if f.source is not None))
    return _validate(
        indexed.select(_ROW, *needed),
        spec,
        source=source,
        mode=mode,
        quarantine_path=quarantine_path,
        ts_unit=ts_unit,
        event_default=event_default,
        raw=indexed.lazy(),
    )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    if not path.exists():
        raise SchemaError(
            f"{path}: no such file or directory. Check the path; supported inputs: "
            f"{SUPPORTED_FORMATS}."
        )
    if path.is_dir():
        return "parquet_dir"
    name = path.name.lower()
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    if base.endswith(".csv"):
        return "csv"
    if base.endswith((".jsonl", ".ndjson")):
        return "ndjson"
    if base.endswith(".parquet") and not gz:
        return "parquet"
    raise SchemaError(
        f"{path}: unsupported file type {''.join(path.suffixes) or '(no extension)'!r}. "
        f"Supported: {SUPPORTED_FORMATS}. Export the data to CSV or parquet first "
        f"(a spreadsheet: File > Save as CSV; pandas: df.to_parquet('events.parquet'))."
    )


def _scan(path: Path, fmt: str, *, lossy: bool, full_inference: bool = False) -> pl.LazyFrame:
    """Lazy reader with a 1-based row number; CSV is read as text so no value breaks inference."""
    if fmt != "parquet_dir" and path.stat().st_size == 0:
        raise _empty_error(path)
    rows = {"row_index_name": _ROW, "row_index_offset": 1}
    if fmt == "csv":
        encoding = "utf8-lossy" if lossy else "utf8"
        return pl.scan_csv(path, infer_schema=False, encoding=encoding, **rows)
    if fmt == "ndjson":
        return pl.scan_ndjson(path, infer_schema_length=None if full_inference else 1000, **rows)
    if fmt == "parquet":
        return pl.scan_parquet(path, **rows)
    files = sorted(
        p
        for p in path.rglob("*.parquet")
        if not p.name.startswith((".", "_")) and not p.name.endswith(".quarantine.parquet")
    )
    if not files:
        raise SchemaError(
            f"{path}: the directory holds no .parquet files. Point at a directory of parquet "
            f"files or at a single file ({SUPPORTED_FORMATS})."
        )
    return pl.scan_parquet(files, **rows)


def _empty_error(path: Path) -> SchemaError:
    return SchemaError(
        f"{path}: the file is empty or has a header but no data rows. Check the export "
        f"finished and that this is the right file; an event file needs at least one row with "
        f"{', '.join(REQUIRED)}."
    )


def _read_error(path: Path, fmt: str, exc: Exception) -> SchemaError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    fix = "Check the file is complete and really is " + fmt.replace("_dir", " files") + "."
    if "utf-8" in detail.lower() or "utf8" in detail.lower():
        fix = (
            "The file is not UTF-8 encoded; re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 "
            "in.csv > out.csv`), or use lenient mode to replace undecodable characters."
        )
    return SchemaError(f"{path}: could not be read as {fmt}: {detail}. {fix}")


def _default_quarantine(path: Path) -> Path:
    stem = path.name
    for suffix in (".gz", ".csv", ".jsonl", ".ndjson", ".parquet"):
        stem = stem.removesuffix(suffix)
    return path.parent / f"{stem}.quarantine.parquet"


# ---------------------------------------------------------------------------------------------
# Column mapping
# ---------------------------------------------------------------------------------------------


def _resolve_fields(
    found: list[str], cmap: ColumnMap, source: str, event_default: str | None
) -> list[_Field]:
    """Check the mapped columns exist and say what each output column is made from."""
    defaults = {f.name: f.default for f in fields(ColumnMap)}
    present = set(found)
    spec: list[_Field] = []
    for canon in REQUIRED:
        src: str = getattr(cmap, canon)
        if src in present:
            spec.append(_Field(canon, src, {"user_id": "id", "ts": "ts", "event": "event"}[canon]))
        elif canon == "event" and event_default is not None:
            spec.append(_Field("event", None, "event"))
        else:
            raise _missing_column_error(canon, src, found, source)
    for canon in OPTIONAL:
        src_opt: str | None = getattr(cmap, canon)
        kind: Literal["id", "text", "num"] = (
            "num" if canon == "amount" else "text" if canon == "text" else "id"
        )
        if src_opt is not None and src_opt in present:
            spec.append(_Field(canon, src_opt, kind))
        elif src_opt is not None and src_opt != defaults[canon]:
            raise _missing_column_error(canon, src_opt, found, source)
        else:
            spec.append(_Field(canon, None, kind))
    for names, kind2 in ((cmap.extra_categorical, "id"), (cmap.extra_numeric, "num")):
        for name in names:
            if name in CANONICAL or name in {f.canonical for f in spec}:
                raise SchemaError(
                    f"{source}: extra column {name!r} clashes with a canonical or another extra "
                    f"column name. Rename it in the data, or map it as a canonical column instead."
                )
            if name not in present:
                raise _missing_column_error(name, name, found, source, extra=True)
            spec.append(_Field(name, name, kind2))  # type: ignore[arg-type]
    return spec


def _missing_column_error(
    canon: str, src: str, found: list[str], source: str, *, extra: bool = False
) -> SchemaError:
    shown = ", ".join(repr(c) for c in found[:30]) + (" ..." if len(found) > 30 else "")
    what = (
        f"extra column {src!r}"
        if extra
        else (
            f"required column {canon!r}"
            if canon in REQUIRED and src == canon
            else f"column {src!r} (mapped to {canon!r})"
        )
    )
    msg = f"{source}: {what} not found. Columns found: {shown}."
    suggestion = _suggest(canon, src, found)
    if suggestion:
        msg += f" Did you mean {suggestion!r}?"
    if len(found) == 1:
        for sep in (";", "\t", "|"):
            if sep in found[0]:
                msg += (
                    f" The header looks {sep!r}-separated; CSV files must be comma-separated - "
                    f"re-export with commas or convert to parquet."
                )
                break
    if extra:
        msg += " Fix: correct the name in extra_categorical/extra_numeric, or drop it."
    else:
        msg += f" Fix: map it with --map {canon}=<column> (ColumnMap({canon}=...))"
        msg += (
            ", or set event_default='purchase' (CLI: --set data.event_default=purchase) if "
            "every row is the same kind of event."
            if canon == "event"
            else "."
        )
    return SchemaError(msg)


def _suggest(canon: str, src: str, found: list[str]) -> str | None:
    """A likely intended column: a known synonym, a name starting with it, or a close spelling."""
    norm = {c.lower().replace(" ", "_"): c for c in found}
    for syn in _SYNONYMS.get(canon, ()):
        if syn in norm:
            return norm[syn]
    for key, col in norm.items():
        if key.startswith(src.lower()):
            return col
    for target in (src.lower(), *_SYNONYMS.get(canon, ())):
        close = difflib.get_close_matches(target, list(norm), n=1, cutoff=0.6)
        if close:
            return norm[close[0]]
    return None


# ---------------------------------------------------------------------------------------------
# Conversion and validation
# ---------------------------------------------------------------------------------------------


def _validate(
    df: pl.DataFrame,
    spec: list[_Field],
    *,
    source: str,
    mode: Mode,
    quarantine_path: str | Path | None,
    ts_unit: TsUnit,
    event_default: str | None,
    raw: pl.LazyFrame,
) -> tuple[pl.DataFrame, LoadReport]:
    """Convert `df` (row number + source columns) to canonical columns; report or quarantine."""
    if mode not in ("strict", "lenient"):
        raise SchemaError(f"mode must be 'strict' or 'lenient', not {mode!r}.")
    schema = df.schema
    exprs: list[pl.Expr] = [pl.col(_ROW).cast(pl.Int64)]
    required: list[tuple[str, _Field, pl.Expr]] = []  # (reason, field, bad-row mask)
    numeric: list[tuple[str, _Field, pl.Expr]] = []
    for f in spec:
        if f.source is None:
            value = pl.lit(event_default if f.kind == "event" else None)
            exprs.append(value.cast(_dtype(f)).alias(f.canonical))
            continue
        col, dtype, out = pl.col(f.source), schema[f.source], pl.col(f.canonical)
        if f.kind == "ts" and dtype in (pl.String, pl.Categorical, pl.Enum):
            parsed = _parse_ts_strings(df[f.source].cast(pl.String), ts_unit)
            exprs.append(pl.lit(parsed).alias(f.canonical))
        elif f.kind == "ts":
            exprs.append(_ts_expr(col, dtype, ts_unit, source, f.source).alias(f.canonical))
        elif f.kind == "num":
            exprs.append(_num_expr(col, dtype, source, f.source).alias(f.canonical))
            given = col.is_not_null()
            if dtype == pl.String:
                given = given & (col.str.strip_chars() != "")
            exprs.append(given.alias(f"__given_{f.canonical}"))
            numeric.append(
                (f"non_numeric_{f.canonical}", f, pl.col(f"__given_{f.canonical}") & out.is_null())
            )
            numeric.append((f"nonfinite_{f.canonical}", f, ~out.is_finite()))
        elif f.kind == "text":
            exprs.append(_text_expr(col, dtype, source, f.source).alias(f.canonical))
        else:
            float_text = dtype == pl.String and bool(
                df.select(pl.col(f.source).str.contains(r"\d\.0+\s*$").any()).item()
            )
            expr = _id_expr(col, dtype, source, f.source, float_text=float_text)
            if f.kind == "event" and event_default is not None:
                expr = expr.fill_null(pl.lit(event_default))
            exprs.append(expr.alias(f.canonical))
        if f.canonical in REQUIRED:
            reason = {"user_id": "missing_user_id", "ts": "bad_timestamp"}.get(
                f.canonical, "missing_event"
            )
            required.append((reason, f, out.is_null()))
    checks = required + numeric
    converted = df.select(exprs)
    masks = converted.select(
        [m.fill_null(False).alias(f"__bad{i}") for i, (_, _, m) in enumerate(checks)]
    )
    counts = {reason: int(masks[:, i].sum()) for i, (reason, _, _) in enumerate(checks)}
    reasons = {r: n for r, n in counts.items() if n}
    out_cols = [f.canonical for f in spec]
    n_in = df.height
    if not reasons:
        out = converted.sort(["user_id", "ts", _ROW]).select(out_cols)
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
    out = converted.filter(~bad_any).sort(["user_id", "ts", _ROW]).select(out_cols)
    report = LoadReport(source, n_in, out.height, n_bad, str(written) if written else None, reasons)
    return out, report


def _dtype(f: _Field) -> pl.DataType:
    if f.kind == "ts":
        return pl.Datetime("us")
    return pl.Float64() if f.kind == "num" else pl.String()


def _type_error(source: str, column: str, dtype: pl.DataType, expected: str) -> SchemaError:
    return SchemaError(
        f"{source}: column {column!r} has type {dtype}, which cannot hold {expected}. Map a "
        f"different column with --map, or convert this one before loading."
    )


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


def _text_expr(col: pl.Expr, dtype: pl.DataType, source: str, name: str) -> pl.Expr:
    if dtype.is_nested() or dtype == pl.Object:
        raise _type_error(source, name, dtype, "text")
    return col.cast(pl.String)


def _num_expr(col: pl.Expr, dtype: pl.DataType, source: str, name: str) -> pl.Expr:
    if dtype.is_numeric() or dtype == pl.Boolean:
        return col.cast(pl.Float64)
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        return col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    raise _type_error(source, name, dtype, "numbers")


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


# ---------------------------------------------------------------------------------------------
# Messages and quarantine
# ---------------------------------------------------------------------------------------------

_PROBLEMS = {
    "missing_user_id": (
        "an empty user id",
        "every event needs the id of its user - fill or remove these rows, or map the right "
        "column with --map user_id=<column>",
    ),
    "bad_timestamp": (
        "a missing or unparseable timestamp",
        "write timestamps as ISO-8601 (2024-03-05T14:30:00Z, 2024-03-05 14:30:00+01:00), dates "
        "(2024-03-05 or 19970101) or epoch seconds/milliseconds (set ts_unit if auto-detection "
        "guesses wrong); if another column holds the time, use --map ts=<column>",
    ),
    "missing_event": (
        "an empty event type",
        "fill the event column, map another one with --map event=<column>, or set "
        "event_default='purchase' to use a constant for empty events",
    ),
    "non_numeric": (
        "a value that is not a number",
        "write plain numbers with '.' as the decimal separator and no currency symbols or "
        "thousands separators (12.50, not '12,50' or '$12.50'); leave the cell empty if unknown",
    ),
    "nonfinite": (
        "NaN or infinity",
        "replace NaN/inf with a real number, or leave the cell empty (empty values are allowed)",
    ),
}


@dataclass(frozen=True)
class _Problem:
    summary: str  # "3 of 10 rows have ... in column 'x'"
    examples: str  # "row 2: 'abc', row 5: (empty) and 1 more"
    fix: str


def _describe(
    reason: str, f: _Field, n: int, df: pl.DataFrame, mask: pl.Series, n_in: int
) -> _Problem:
    key = "non_numeric" if reason.startswith("non_numeric_") else reason
    key = "nonfinite" if reason.startswith("nonfinite_") else key
    what, fix = _PROBLEMS[key]
    assert f.source is not None  # problems only arise for columns read from the data
    examples = (
        df.filter(mask)
        .head(_MAX_EXAMPLES)
        .select(pl.col(_ROW), _as_string(f.source, df.schema[f.source]).alias("v"))
    )
    shown = ", ".join(
        f"row {r}: {v!r}" if v is not None and v.strip() else f"row {r}: (empty)"
        for r, v in examples.iter_rows()
    )
    more = f" and {n - examples.height} more" if n > examples.height else ""
    mapped = f" (mapped to {f.canonical!r})" if f.source != f.canonical else ""
    verb = "has" if n == 1 else "have"
    summary = f"{n} of {n_in} rows {verb} {what} in column {f.source!r}{mapped}"
    return _Problem(summary, shown + more, fix)


def _strict_message(source: str, problems: list[_Problem]) -> str:
    """One paragraph: the first problem in full, the others briefly."""
    first, *others = problems
    msg = f"{source}: {first.summary} - {first.examples}. Fix: {first.fix}."
    if others:
        msg += " Also: " + "; ".join(f"{p.summary} ({p.examples})" for p in others) + "."
    return f"{msg} {_LENIENT_HINT}"


def _as_string(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_nested():
        return pl.struct(pl.col(name)).struct.json_encode()
    return pl.col(name).cast(pl.String)


def _write_quarantine(raw: pl.LazyFrame, bad: pl.DataFrame, path: Path) -> Path:
    """Write rejected rows (all original columns as text, `_row`, `_reason`) atomically."""
    schema = raw.collect_schema()
    keep = [c for c in schema.names() if c not in (_ROW, "_row", "_reason")]
    rows = (
        raw.with_columns(pl.col(_ROW).cast(pl.Int64))
        .join(bad.lazy(), on=_ROW, how="inner")
        .select(
            pl.col(_ROW).alias("_row"),
            *[_as_string(c, schema[c]).alias(c) for c in keep],
            pl.col("_reason"),
        )
        .sort("_row")
        .collect()
    )
    with atomic_path(path) as tmp:
        rows.write_parquet(tmp)
    return path
