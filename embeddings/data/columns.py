"""Where the canonical columns come from: the column map, name suggestions, field resolution.

`embeddings.data.schema.read_events` uses these to turn a user's column names into the canonical
schema, and to explain a missing column with the likeliest intended one.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Literal

import polars as pl

from embeddings.errors import SchemaError

# Labels (event, item, category, text, extra categorical columns) are Categorical: 4 bytes an event
# instead of a string each, which is most of a large log's memory (docs/decisions.md#labels-held-as-categoricals).
CANONICAL: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "ts": pl.Datetime("us"),
    "event": pl.Categorical(),
    "item": pl.Categorical(),
    "category": pl.Categorical(),
    "amount": pl.Float64(),
    "text": pl.Categorical(),
}
REQUIRED = ("user_id", "ts", "event")
OPTIONAL = ("item", "category", "amount", "text")

# Common names people give the required columns, for "did you mean" suggestions.
SYNONYMS = {
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

        `item=` (empty) turns an optional column off; `extra_numeric=qty,price` adds extras;
        `amount=Quantity*UnitPrice` makes the amount the product of those columns (line value).
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


@dataclass(frozen=True)
class FieldSpec:
    canonical: str  # output column name
    source: str | None  # input column name; None = not in the data (filled with nulls/constant)
    kind: Literal["id", "ts", "event", "text", "num"]
    factors: tuple[str, ...] = ()  # amount as a product of columns ("Quantity*UnitPrice"); else empty

    @property
    def is_label(self) -> bool:
        """Read into a Categorical column: everything but user ids, times and numbers."""
        return self.kind in ("id", "event", "text") and self.canonical != "user_id"

    @property
    def inputs(self) -> tuple[str, ...]:
        """The data columns this field is read from."""
        return self.factors or ((self.source,) if self.source is not None else ())



def resolve_fields(
    found: list[str], cmap: ColumnMap, source: str, event_default: str | None
) -> list[FieldSpec]:
    """Check the mapped columns exist and say what each output column is made from."""
    defaults = {f.name: f.default for f in fields(ColumnMap)}
    present = set(found)
    spec: list[FieldSpec] = []
    for canon in REQUIRED:
        src: str = getattr(cmap, canon)
        if src in present:
            spec.append(FieldSpec(canon, src, {"user_id": "id", "ts": "ts", "event": "event"}[canon]))
        elif canon == "event" and event_default is not None:
            spec.append(FieldSpec("event", None, "event"))
        else:
            raise missing_column_error(canon, src, found, source)
    for canon in OPTIONAL:
        src_opt: str | None = getattr(cmap, canon)
        kind: Literal["id", "text", "num"] = (
            "num" if canon == "amount" else "text" if canon == "text" else "id"
        )
        if src_opt is not None and src_opt in present:
            spec.append(FieldSpec(canon, src_opt, kind))
        elif canon == "amount" and src_opt is not None and "*" in src_opt:
            spec.append(FieldSpec(canon, src_opt, kind, _factors(src_opt, found, source)))
        elif src_opt is not None and src_opt != defaults[canon]:
            raise missing_column_error(canon, src_opt, found, source)
        else:
            spec.append(FieldSpec(canon, None, kind))
    for names, kind2 in ((cmap.extra_categorical, "id"), (cmap.extra_numeric, "num")):
        for name in names:
            if name in CANONICAL or name in {f.canonical for f in spec}:
                raise SchemaError(
                    f"{source}: extra column {name!r} clashes with a canonical or another extra "
                    f"column name. Rename it in the data, or map it as a canonical column instead."
                )
            if name not in present:
                raise missing_column_error(name, name, found, source, extra=True)
            spec.append(FieldSpec(name, name, kind2))  # type: ignore[arg-type]
    return spec


def _factors(expr: str, found: list[str], source: str) -> tuple[str, ...]:
    """The columns of an amount given as a product, e.g. "Quantity*UnitPrice" (each must exist)."""
    factors = tuple(c.strip() for c in expr.split("*"))
    if len(factors) < 2 or not all(factors):
        raise SchemaError(
            f"{source}: amount mapping {expr!r} is not a product of columns; write it as "
            f"--map amount=Quantity*UnitPrice (column names joined by '*')."
        )
    for c in factors:
        if c not in found:
            raise missing_column_error("amount", c, found, source)
    return factors


def missing_column_error(
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
    for syn in SYNONYMS.get(canon, ()):
        if syn in norm:
            return norm[syn]
    for key, col in norm.items():
        if key.startswith(src.lower()):
            return col
    for target in (src.lower(), *SYNONYMS.get(canon, ())):
        close = difflib.get_close_matches(target, list(norm), n=1, cutoff=0.6)
        if close:
            return norm[close[0]]
    return None
