"""Adapters that turn the public datasets in `../shared/datasets` into canonical events.

Each loader reads the files where they lie (nothing is copied into the project) and returns a
frame in the canonical schema of `embeddings.data.schema`, validated by `validate_events`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from embeddings.data.schema import ColumnMap, validate_events
from embeddings.errors import ConfigError, SchemaError

logger = logging.getLogger(__name__)

CDNOW_FILE = "CDNOW_master.txt"
COMPLETEJOURNEY_TRANSACTIONS = "transactions_sample.csv.gz"
COMPLETEJOURNEY_PRODUCTS = "products.csv.gz"


def load_cdnow(path: str | Path) -> pl.DataFrame:
    """CDNOW purchase log -> canonical events (one "purchase" per row, zero-amount rows kept).

    The file is whitespace-separated: customer id, date (YYYYMMDD), number of CDs, dollar value,
    with or without a header line. `amount` is the dollar value; `quantity` is an extra numeric
    column with the number of CDs.

    Args:
        path: `CDNOW_master.txt`, or the directory that holds it.
    """
    started = time.perf_counter()
    path = Path(path)
    if path.is_dir():
        path = path / CDNOW_FILE
    if not path.is_file():
        raise SchemaError(f"{path}: CDNOW file not found. Pass the path of {CDNOW_FILE}.")
    # One text column per line; the fields are split by a regex because they are padded with
    # runs of spaces, which the CSV reader's single-byte separator cannot express.
    lines = pl.read_csv(
        path,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        infer_schema=False,
        new_columns=["line"],
    )
    fields = lines.select(
        pl.col("line")
        .str.strip_chars()
        .str.extract_groups(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")
        .struct.rename_fields(["user_id", "ts", "quantity", "amount"])
        .alias("f"),
        pl.col("line").str.strip_chars().alias("line"),
    ).unnest("f")
    if fields.height and fields["user_id"][0] is not None and not fields["user_id"][0].isdigit():
        fields = fields.slice(1)  # the header line ("customer_id date number_of_cds ...")
    bad = fields.with_row_index("row", offset=1).filter(pl.col("user_id").is_null())
    if bad.height:
        raise SchemaError(
            f"{path}: {bad.height} lines do not have the four CDNOW fields (customer id, "
            f"YYYYMMDD date, number of CDs, dollar value) - first: line {bad['row'][0]}: "
            f"{bad['line'][0]!r}. Fix: check this is the unmodified CDNOW_master.txt."
        )
    events = fields.select("user_id", "ts", pl.lit("purchase").alias("event"), "amount", "quantity")
    out, _ = validate_events(
        events,
        ColumnMap(item=None, category=None, text=None, extra_numeric=["quantity"]),
        source=str(path),
    )
    logger.info(
        "CDNOW: %d purchases by %d customers from %s in %.2fs",
        out.height,
        out["user_id"].n_unique(),
        path,
        time.perf_counter() - started,
    )
    return out


def load_completejourney(path: str | Path) -> pl.DataFrame:
    """84.51 Complete Journey sample -> canonical events, one per transaction line item.

    transactions_sample.csv.gz is joined with products.csv.gz on product_id:
        user_id  household_id            ts      transaction_timestamp
        item     product_id              amount  sales_value
        category product_category (~300 values; the most informative level)
        text     "<product type> - <category> (<department>, <brand> brand)", e.g.
                 "Bread:Italian/French - Bread (Pastry, Private brand)"
        event    "purchase_coupon" if a coupon was used (coupon_disc or coupon_match_disc),
                 else "purchase_discount" with a retail (loyalty card) discount, else "purchase"
    Extra categorical: department, brand, store_id. Extra numeric: quantity, discount (the sum of
    the three discount columns). Line items whose product is not in products.csv.gz keep null
    product attributes.

    Args:
        path: the `completejourney_sample` directory.
    """
    started = time.perf_counter()
    root = Path(path)
    tx_path, prod_path = root / COMPLETEJOURNEY_TRANSACTIONS, root / COMPLETEJOURNEY_PRODUCTS
    for p in (tx_path, prod_path):
        if not p.is_file():
            raise SchemaError(
                f"{p}: Complete Journey file not found. Pass the directory holding "
                f"{COMPLETEJOURNEY_TRANSACTIONS} and {COMPLETEJOURNEY_PRODUCTS}."
            )
    # Read as text: ids such as basket_id and product_id appear as "4.0128e+10" / "9e+05" in
    # a few rows (an artefact of the R -> CSV conversion), which breaks integer inference.
    tx = pl.read_csv(tx_path, infer_schema=False)
    products = pl.read_csv(prod_path, infer_schema=False)
    tx = tx.with_columns(_integral_id("product_id"), _integral_id("household_id"))
    products = products.with_columns(_integral_id("product_id")).unique(
        "product_id", keep="first", maintain_order=True
    )
    money = ["sales_value", "retail_disc", "coupon_disc", "coupon_match_disc", "quantity"]
    joined = tx.with_columns(pl.col(money).cast(pl.Float64)).join(
        products, on="product_id", how="left", maintain_order="left"
    )
    coupon = (pl.col("coupon_disc").abs() + pl.col("coupon_match_disc").abs()) > 0
    events = joined.select(
        pl.col("household_id").alias("user_id"),
        pl.col("transaction_timestamp").alias("ts"),
        pl.when(coupon)
        .then(pl.lit("purchase_coupon"))
        .when(pl.col("retail_disc").abs() > 0)
        .then(pl.lit("purchase_discount"))
        .otherwise(pl.lit("purchase"))
        .alias("event"),
        pl.col("product_id").alias("item"),
        pl.col("product_category").alias("category"),
        pl.col("sales_value").alias("amount"),
        _title().alias("text"),
        "department",
        "brand",
        "store_id",
        "quantity",
        (
            pl.col("retail_disc").abs()
            + pl.col("coupon_disc").abs()
            + pl.col("coupon_match_disc").abs()
        ).alias("discount"),
    )
    out, _ = validate_events(
        events,
        ColumnMap(
            extra_categorical=["department", "brand", "store_id"],
            extra_numeric=["quantity", "discount"],
        ),
        source=str(tx_path),
    )
    logger.info(
        "Complete Journey: %d line items by %d households from %s in %.2fs",
        out.height,
        out["user_id"].n_unique(),
        root,
        time.perf_counter() - started,
    )
    return out


def _integral_id(name: str) -> pl.Expr:
    """ "9e+05" -> "900000"; plain digit strings are left as they are."""
    col = pl.col(name).str.strip_chars()
    as_int = col.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False).cast(pl.String)
    return pl.when(col.str.contains(r"^\d+$")).then(col).otherwise(as_int).alias(name)


def _title() -> pl.Expr:
    """A readable product title from the upper-case product columns."""
    kind = pl.coalesce("product_type", "product_category", "department").str.to_titlecase()
    category = pl.col("product_category").str.to_titlecase()
    details = pl.concat_str(
        [pl.col("department").str.to_titlecase(), pl.col("brand") + pl.lit(" brand")],
        separator=", ",
        ignore_nulls=True,
    )
    with_category = (
        pl.when(category.is_not_null() & (category != kind))
        .then(kind + pl.lit(" - ") + category)
        .otherwise(kind)
    )
    return pl.when(kind.is_not_null()).then(with_category + pl.lit(" (") + details + pl.lit(")"))


DATASETS: dict[str, Callable[[Path], pl.DataFrame]] = {
    "cdnow": load_cdnow,
    "completejourney": load_completejourney,
}
_SUBDIRS = {"cdnow": "cdnow", "completejourney": "completejourney_sample"}


def load_dataset(name: str, root: str | Path) -> pl.DataFrame:
    """Load a named public dataset as canonical events.

    Args:
        name: a key of `DATASETS`.
        root: the datasets folder (e.g. `../shared/datasets`) or the dataset's own folder.
    """
    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset {name!r}. Available: {', '.join(sorted(DATASETS))}.")
    root = Path(root)
    sub = root / _SUBDIRS[name]
    return DATASETS[name](sub if sub.exists() else root)
