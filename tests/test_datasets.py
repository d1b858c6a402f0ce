"""Tests for embeddings.data.datasets on the real public files in `<repo>/../shared/datasets`."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from embeddings.data.datasets import DATASETS, load_cdnow, load_completejourney, load_dataset
from embeddings.data.schema import CANONICAL
from embeddings.errors import ConfigError, SchemaError

# The shared folder is a sibling of the repository root (<repo>/../shared), not inside it.
REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_ROOT = REPO_ROOT.parent / "shared" / "datasets"
CDNOW = DATASETS_ROOT / "cdnow" / "CDNOW_master.txt"
COMPLETEJOURNEY = DATASETS_ROOT / "completejourney_sample"

needs_cdnow = pytest.mark.skipif(not CDNOW.is_file(), reason=f"CDNOW data not found at {CDNOW}")
needs_cj = pytest.mark.skipif(
    not COMPLETEJOURNEY.is_dir(), reason=f"Complete Journey sample not found at {COMPLETEJOURNEY}"
)


def _data_rows(path: Path, header: bool = True) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:  # type: ignore[operator]
        return sum(1 for line in fh if line.strip()) - int(header)


def _assert_canonical(df: pl.DataFrame) -> None:
    assert df.columns[:7] == list(CANONICAL)
    for name, dtype in CANONICAL.items():
        assert df.schema[name] == dtype, name
    assert df.select(pl.col("user_id", "ts", "event").null_count()).row(0) == (0, 0, 0)
    resorted = df.with_row_index("i").sort(["user_id", "ts", "i"])["i"]
    assert resorted.to_list() == list(range(df.height)), "not sorted by (user_id, ts)"


@needs_cdnow
def test_cdnow() -> None:
    df = load_cdnow(CDNOW)
    _assert_canonical(df)
    assert df.height == _data_rows(CDNOW) == 69_659
    assert df["user_id"].n_unique() == 23_570
    assert df.schema["quantity"] == pl.Float64
    assert df["event"].unique().to_list() == ["purchase"]
    assert (df["amount"] == 0).sum() > 0  # zero-value rows are kept
    assert df["ts"].min().year == 1997 and df["ts"].max().isoformat() == "1998-06-30T00:00:00"
    first = df.row(0, named=True)
    assert (first["user_id"], first["amount"], first["quantity"]) == ("00001", 11.77, 1.0)
    assert load_cdnow(CDNOW.parent).height == df.height  # the directory works too


@needs_cj
def test_completejourney() -> None:
    df = load_completejourney(COMPLETEJOURNEY)
    _assert_canonical(df)
    assert df.height == _data_rows(COMPLETEJOURNEY / "transactions_sample.csv.gz") == 75_000
    assert df["user_id"].n_unique() == 2_377
    assert set(df["event"].unique()) == {"purchase", "purchase_discount", "purchase_coupon"}
    for extra in ("department", "brand", "store_id"):
        assert df.schema[extra] == pl.Categorical
    assert df.schema["quantity"] == df.schema["discount"] == pl.Float64
    assert df["item"].null_count() == 0 and df["amount"].null_count() == 0
    # Products are found for all but a few line items; those get a readable title.
    assert df["text"].null_count() < 0.01 * df.height
    assert df["text"].cast(pl.String).str.contains(r"\(.+, (National|Private) brand\)$").sum() > 0.98 * df.height
    assert df["category"].n_unique() > df["department"].n_unique()


@needs_cdnow
@needs_cj
def test_load_dataset_by_name() -> None:
    assert set(DATASETS) == {"cdnow", "completejourney"}
    assert load_dataset("cdnow", DATASETS_ROOT).height == 69_659
    assert load_dataset("completejourney", DATASETS_ROOT).height == 75_000


def test_unknown_dataset_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Available: cdnow, completejourney"):
        load_dataset("movielens", tmp_path)
    with pytest.raises(SchemaError, match="CDNOW_master.txt"):
        load_cdnow(tmp_path)
    with pytest.raises(SchemaError, match="transactions_sample.csv.gz"):
        load_completejourney(tmp_path)


def test_cdnow_without_header_and_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "CDNOW_master.txt"
    path.write_text("   1 19970101  1   11.77\r\n   2 19970112  5   77.00\r\n")
    df = load_cdnow(path)
    assert df["user_id"].to_list() == ["1", "2"] and df["quantity"].to_list() == [1.0, 5.0]
    path.write_text("   1 19970101  1   11.77\n   2 19970112\n")
    with pytest.raises(SchemaError, match=r"line 2: '2 19970112'"):
        load_cdnow(path)
