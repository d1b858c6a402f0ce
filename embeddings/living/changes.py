"""What changed between two versions: `changes.parquet`, `drift.json` and activation deltas.

changes.parquet holds exactly the users whose cohort differs from the parent version:
user_id, previous_cohort_id (null: new user), cohort_id (null: left), reason (REASONS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.errors import WorkspaceError
from embeddings.fsutil import atomic_path, atomic_write_json
from embeddings.workspace import Workspace

CHANGES, DRIFT = "changes.parquet", "drift.json"
REASONS = ("new_user", "new_events", "recency", "refit", "forgotten")
SCHEMA = {"user_id": pl.String, "previous_cohort_id": pl.Int64, "cohort_id": pl.Int64, "reason": pl.String}


def diff(prev: pl.DataFrame, new: pl.DataFrame, with_events: set[str], moved_reason: str) -> pl.DataFrame:
    """Users whose cohort differs between `prev` and `new` (user_id, cohort_id each), with the reason.

    A user in `with_events` who moved moved because of them; any other existing user moved for
    `moved_reason` ("recency" when clusters were kept, "refit" when they were refitted).
    """
    j = prev.select("user_id", previous_cohort_id="cohort_id").join(
        new.select("user_id", "cohort_id"), on="user_id", how="full", coalesce=True)
    j = j.filter(pl.col("previous_cohort_id").ne_missing(pl.col("cohort_id")))
    events = pl.Series(sorted(with_events), dtype=pl.String).implode()
    reason = (pl.when(pl.col("previous_cohort_id").is_null()).then(pl.lit("new_user"))
              .when(pl.col("cohort_id").is_null()).then(pl.lit("forgotten"))
              .when(pl.col("user_id").is_in(events)).then(pl.lit("new_events"))
              .otherwise(pl.lit(moved_reason)))
    return j.with_columns(reason=reason).select(list(SCHEMA)).cast(SCHEMA).sort("user_id")  # type: ignore[arg-type]


def write_changes(path: str | Path, changes: pl.DataFrame) -> Path:
    with atomic_path(Path(path)) as tmp:
        changes.write_parquet(tmp)
    return Path(path)


def cohort_drift(prev: pl.DataFrame, new: pl.DataFrame, prev_centroids: dict[int, np.ndarray],
                 new_centroids: dict[int, np.ndarray], names: dict[int, str]) -> list[dict[str, Any]]:
    """Per cohort: size before and after, members entered and left, volatility ((entered + left) / size before),
    centroid shift (1 - cosine of its members' mean embedding before and after; None across encoders)."""
    j = prev.select("user_id", a="cohort_id").join(new.select("user_id", b="cohort_id"), on="user_id", how="full",
                                                    coalesce=True)
    before = dict(prev.group_by("cohort_id").len().iter_rows())
    after = dict(new.group_by("cohort_id").len().iter_rows())
    moved = j.filter(pl.col("a").ne_missing(pl.col("b")))
    entered = dict(moved.drop_nulls("b").group_by("b").len().iter_rows())
    left = dict(moved.drop_nulls("a").group_by("a").len().iter_rows())
    out = []
    for cid in sorted(set(before) | set(after) | set(new_centroids)):
        pc, nc = prev_centroids.get(cid), new_centroids.get(cid)
        shift = None
        if pc is not None and nc is not None:
            shift = max(0.0, float(1.0 - pc @ nc / max(np.linalg.norm(pc) * np.linalg.norm(nc), 1e-12)))
        b, e, lf = int(before.get(cid, 0)), int(entered.get(cid, 0)), int(left.get(cid, 0))
        out.append({"id": int(cid), "name": names.get(cid), "size_before": b, "size_after": int(after.get(cid, 0)),
                    "entered": e, "left": lf, "volatility": round((e + lf) / max(b, 1), 4),
                    "centroid_shift": None if shift is None else round(shift, 6)})
    return out


def member_means(assign: pl.DataFrame, user_ids: np.ndarray, X: np.ndarray) -> dict[int, np.ndarray]:
    """Mean embedding of each cohort's members (assign: user_id, cohort_id; rows of X follow user_ids)."""
    row = {u: i for i, u in enumerate(np.asarray(user_ids).astype(str))}
    out = {}
    for (cid,), g in assign.group_by("cohort_id"):
        rows = [row[u] for u in g.get_column("user_id").to_list() if u in row]
        if rows:
            out[int(cid)] = np.asarray(X[rows], dtype=np.float64).mean(0)
    return out


def write_drift(path: str | Path, drift: dict[str, Any]) -> Path:
    return atomic_write_json(path, drift)


def read_drift(version_dir: str | Path) -> dict[str, Any] | None:
    p = Path(version_dir) / DRIFT
    return json.loads(p.read_text()) if p.is_file() else None


def changes_since(workspace: str | Path, since: str | None = None, cohort: int | None = None,
                  until: str | None = None) -> pl.DataFrame:
    """Activation delta from version `since` (default: the parent of current) to `until` (default: current).

    Returns user_id, change ("entered" / "left"), cohort_id, previous_cohort_id (the user's cohort
    in `since`, null for a new user), current_cohort_id (null: gone); one row per user and cohort
    they entered or left, only for `cohort` when given.
    """
    ws = Workspace(workspace)
    versions = ws.versions()
    if until is not None and until not in versions:
        raise WorkspaceError(f"Workspace {ws.root} has no version {until!r} any more; versions kept: {versions}.")
    cur = ws.versions_dir / until if until is not None else ws.current()
    if since is None:
        parent = json.loads((cur / "version.json").read_text()).get("parent")
        if parent is None or parent not in versions:
            raise WorkspaceError(f"Version {cur.name} has no earlier version kept in {ws.root}; pass --since "
                                 f"with one of {versions}.")
        since = parent
    if since not in versions:
        raise WorkspaceError(f"Workspace {ws.root} has no version {since!r}; versions kept: {versions}.")
    a = pl.read_parquet(ws.versions_dir / since / "assignments.parquet", columns=["user_id", "cohort_id"])
    b = pl.read_parquet(cur / "assignments.parquet", columns=["user_id", "cohort_id"])
    j = a.select("user_id", previous_cohort_id="cohort_id").join(
        b.select("user_id", current_cohort_id="cohort_id"), on="user_id", how="full", coalesce=True
    ).filter(pl.col("previous_cohort_id").ne_missing(pl.col("current_cohort_id")))
    entered = j.drop_nulls("current_cohort_id").with_columns(change=pl.lit("entered"),
                                                             cohort_id=pl.col("current_cohort_id"))
    left = j.drop_nulls("previous_cohort_id").with_columns(change=pl.lit("left"), cohort_id=pl.col("previous_cohort_id"))
    out = pl.concat([entered, left]).select("user_id", "change", "cohort_id", "previous_cohort_id",
                                            "current_cohort_id").sort(["cohort_id", "change", "user_id"])
    return out if cohort is None else out.filter(pl.col("cohort_id") == cohort)
