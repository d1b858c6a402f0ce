"""The workspace's own event store and suppression list: what `refresh` needs to re-embed only changed users.

    ws/store/events-<tag>.parquet   every canonical event seen so far (the file the current version names)
    ws/suppressed.json              salted hashes of forgotten users; their new events are dropped

A refresh writes a new store file and names it in the new version's `version.json`; the store the
current version names is the truth, so a crash before the version is published leaves an unused
file that the next refresh removes, and the events in it are read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from embeddings.errors import SchemaError
from embeddings.fsutil import atomic_path, atomic_write_json

log = logging.getLogger("seqcohort")

STORE_DIR = "store"
SUPPRESSED = "suppressed.json"
KEY_COLUMNS = ("user_id", "ts", "event", "item", "category", "amount")  # what makes two rows the same event


def store_path(root: str | Path, tag: str) -> Path:
    return Path(root) / STORE_DIR / f"events-{tag}.parquet"


def write_store(path: Path, events: pl.DataFrame) -> Path:
    """Write the store atomically, new rows after the old (the featurizer sorts what it reads; sorting a
    large store here would cost more than the rest of a refresh's writes)."""
    with atomic_path(path) as tmp:
        events.write_parquet(tmp, compression="lz4")
    return path


def remove_unused(root: str | Path, keep: Iterable[Path]) -> int:
    """Delete store files other than `keep` (left by a crash, or replaced); returns how many."""
    keep_names = {Path(p).name for p in keep}
    d = Path(root) / STORE_DIR
    n = 0
    for p in d.glob("*.parquet") if d.is_dir() else []:
        if p.name not in keep_names:
            p.unlink(missing_ok=True)
            n += 1
    for p in d.glob(".*.tmp") if d.is_dir() else []:
        p.unlink(missing_ok=True)
    return n


@dataclass
class Merge:
    """New events merged into the store, with what was set aside."""

    events: pl.DataFrame  # the store after the merge
    fresh: pl.DataFrame  # the rows that were new
    n_read: int
    n_duplicate: int  # already in the store
    n_late: int  # new, but at or before the previous as_of
    n_suppressed: int  # of forgotten users

    @property
    def changed_users(self) -> set[str]:
        return set(self.fresh.get_column("user_id").unique().to_list())


def conform(new: pl.DataFrame, store: pl.DataFrame, source: str) -> pl.DataFrame:
    """`new` with the store's columns and types; a column the store has and `new` lacks is an error."""
    missing = [c for c in store.columns if c not in new.columns]
    extra = [c for c in new.columns if c not in store.columns]
    if missing or extra:
        raise SchemaError(
            f"{source} does not match the workspace's columns: "
            + (f"missing {missing} " if missing else "") + (f"unexpected {extra} " if extra else "")
            + f"(the workspace holds {store.columns}). Map them with --map canonical=yours, or declare the extra "
            "columns (data.extra_categorical / data.extra_numeric) as the run that made the workspace did."
        )
    try:
        return new.select([pl.col(c).cast(store.schema[c]) for c in store.columns])
    except pl.exceptions.PolarsError as e:
        raise SchemaError(f"{source}: a column cannot be read as the workspace's type ({e}).") from e


def merge(store: pl.DataFrame, new: pl.DataFrame, previous_as_of: datetime, suppressed: Suppression | None = None,
          source: str = "new events") -> Merge:
    """Add `new` to `store`: events already stored are skipped, forgotten users' events dropped; all counted."""
    new = conform(new, store, source)
    n_read = new.height
    n_suppressed = 0
    if suppressed is not None and len(suppressed):
        keep = ~suppressed.contains(new.get_column("user_id"))
        n_suppressed = int((~keep).sum())
        new = new.filter(keep)
    keys = [c for c in KEY_COLUMNS if c in store.columns]
    # only stored rows that could equal a new one: same users, not older than the oldest new row
    near = store.filter(pl.col("user_id").is_in(new.get_column("user_id").unique().implode()))
    if new.height:
        near = near.filter(pl.col("ts") >= new.get_column("ts").min())
    seen = new.join(near.select(keys).unique(), on=keys, how="semi", nulls_equal=True)
    fresh = new.join(near.select(keys).unique(), on=keys, how="anti", nulls_equal=True)
    n_late = int((fresh.get_column("ts") <= previous_as_of).sum()) if fresh.height else 0
    events = pl.concat([store, fresh]) if fresh.height else store
    return Merge(events, fresh, n_read, seen.height, n_late, n_suppressed)


class Suppression:
    """Salted SHA-256 hashes of forgotten users (no raw ids), in `ws/suppressed.json`."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / SUPPRESSED
        d = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.salt: str = d.get("salt") or secrets.token_hex(16)
        self.hashes: set[str] = set(d.get("hashes", []))

    def __len__(self) -> int:
        return len(self.hashes)

    def hash(self, user_id: str) -> str:
        return hashlib.sha256(f"{self.salt}:{user_id}".encode()).hexdigest()

    def hash_series(self, ids: pl.Series) -> pl.Series:
        uniq = ids.unique()
        table = pl.DataFrame({"u": uniq, "h": [self.hash(str(u)) for u in uniq.to_list()]})
        return ids.to_frame("u").join(table, on="u", how="left", maintain_order="left").get_column("h")

    def contains(self, ids: pl.Series) -> pl.Series:
        return self.hash_series(ids).is_in(pl.Series(sorted(self.hashes), dtype=pl.String).implode())

    def add(self, user_ids: Iterable[str]) -> None:
        self.hashes.update(self.hash(u) for u in user_ids)
        atomic_write_json(self.path, {"salt": self.salt, "hashes": sorted(self.hashes)})
