"""Event files: which formats are read, how each is scanned, and the errors a file itself causes.

`embeddings.data.schema.read_events` scans a file here (a lazy frame with a 1-based row number)
and then maps and validates its columns.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from embeddings.data.columns import REQUIRED
from embeddings.data.schema_report import _ROW
from embeddings.errors import SchemaError

SUPPORTED_FORMATS = (".parquet, .csv, .csv.gz, .jsonl, .ndjson, .jsonl.gz, .ndjson.gz, a spreadsheet (.xlsx, .xlsm, "
                     ".xlsb, .xls, .ods; every sheet), or a directory of .parquet files")
_SPREADSHEETS = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")


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
    if base.endswith(_SPREADSHEETS) and not gz:
        return "spreadsheet"
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
    if fmt == "spreadsheet":
        return _read_spreadsheet(path)
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


def _read_spreadsheet(path: Path) -> pl.LazyFrame:
    """Every sheet, one after another, as text (rows numbered across sheets).

    Text because a spreadsheet's types are guessed from its first rows: the UCI Online Retail
    log's stock codes are numbers for many rows before the first "79323P", and its invoices
    before the first "C489449" cancellation, which a numeric guess would turn into nulls.
    """
    try:
        sheets = pl.read_excel(path, sheet_id=0, engine="calamine", infer_schema_length=0)
    except ImportError as exc:
        raise SchemaError(f"{path}: reading spreadsheets needs the fastexcel package ({exc}); "
                          f"pip install fastexcel, or export the data to CSV or parquet.") from exc
    except Exception as exc:  # noqa: BLE001 - fastexcel raises its own types for broken files
        raise _read_error(path, "a spreadsheet", exc) from exc
    frames = [df for df in sheets.values() if df.height]
    if not frames:
        raise _empty_error(path)
    out = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    return out.with_row_index(_ROW, offset=1).with_columns(pl.col(_ROW).cast(pl.Int64)).lazy()


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
    for suffix in (".gz", ".csv", ".jsonl", ".ndjson", ".parquet", *_SPREADSHEETS):
        stem = stem.removesuffix(suffix)
    return path.parent / f"{stem}.quarantine.parquet"
