"""What changed between two versions: `changes.parquet`, `drift.json` and activation deltas.

changes.parquet holds exactly the users whose cohort differs from the parent version:
user_id, previous_cohort_id (null: new user), cohort_id (null: left), reason (REASONS).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.fsutil import atomic_path, atomic_write_json

CHANGES, DRIFT = "changes.parquet", "drift.json"  # no import of the workspace: it records these on publish
REASONS = ("new_user", "new_events", "recency", "refit", "forgotten")
log = logging.getLogger("seqcohort")
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


def record(out: Path, parent: Path | None, reason: str = "refit") -> None:
    """changes.parquet and drift.json for a version built in `out` by a command that writes none itself
    (run, cluster, name): every user whose cohort differs from `parent` (None: the first version, all new)."""
    if (out / CHANGES).exists() or not (out / "assignments.parquet").is_file():
        return
    cols = ["user_id", "cohort_id"]
    try:
        new = pl.read_parquet(out / "assignments.parquet", columns=cols)
        empty = pl.DataFrame(schema={"user_id": pl.String, "cohort_id": pl.Int64})
        prev = pl.read_parquet(parent / "assignments.parquet", columns=cols) if parent is not None else empty
    except (pl.exceptions.PolarsError, OSError) as e:  # the version itself is checked elsewhere; this is a report
        log.warning("no changes.parquet for %s: its assignments (or its parent's) cannot be read (%s)", out.name, e)
        return
    changes = diff(prev, new, set(), reason)
    write_changes(out / CHANGES, changes)
    names = {c["id"]: c["name"] for c in json.loads((out / "cohorts.json").read_text())["cohorts"]} \
        if (out / "cohorts.json").is_file() else {}
    write_drift(out / DRIFT, {"previous": parent.name if parent is not None else None,
                              "users": {"total": new.height, "new": int((changes["reason"] == "new_user").sum()),
                                        "moved": changes.height},
                              "cohorts": cohort_drift(prev, new, {}, {}, names),
                              "retrain_recommended": False, "why": None})
