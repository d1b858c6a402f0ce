"""Reporting bad event rows: one-paragraph strict-mode messages and lenient-mode quarantine files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from embeddings.fsutil import atomic_path

if TYPE_CHECKING:
    from embeddings.data.columns import FieldSpec

log = logging.getLogger("embeddings.data.schema")

_ROW = "__seqcohort_row__"  # internal 1-based data-row number; unlikely to clash with user columns
_MAX_EXAMPLES = 5
_LENIENT_HINT = (
    "Row numbers count data rows from 1 (a header row is not counted; a spreadsheet's sheets follow "
    "each other). To load the valid rows and quarantine the rest to a file, use lenient mode (mode='lenient'; CLI: --set data.mode=lenient)."
)

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
        "guesses wrong), or name their format with data.ts_format (e.g. '%d/%m/%Y %H:%M'); if another "
        "column holds the time, use --map ts=<column>",
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
    reason: str, f: FieldSpec, n: int, df: pl.DataFrame, mask: pl.Series, n_in: int
) -> _Problem:
    key = "non_numeric" if reason.startswith("non_numeric_") else reason
    key = "nonfinite" if reason.startswith("nonfinite_") else key
    what, fix = _PROBLEMS[key]
    assert f.source is not None  # problems only arise for columns read from the data
    value = (
        pl.concat_str([_as_string(c, df.schema[c]).fill_null("(empty)") for c in f.factors], separator=" * ")
        if f.factors else _as_string(f.source, df.schema[f.source])
    )
    examples = df.filter(mask).head(_MAX_EXAMPLES).select(pl.col(_ROW), value.alias("v"))
    shown = ", ".join(
        f"row {r}: {v!r}" if v is not None and v.strip() else f"row {r}: (empty)"
        for r, v in examples.iter_rows()
    )
    more = f" and {n - examples.height} more" if n > examples.height else ""
    mapped = f" (mapped to {f.canonical!r})" if f.source != f.canonical else ""
    verb = "has" if n == 1 else "have"
    where = " * ".join(repr(c) for c in f.inputs)
    summary = f"{n} of {n_in} rows {verb} {what} in column{'s' if f.factors else ''} {where}{mapped}"
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
