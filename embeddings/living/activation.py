"""Activation deltas between any two kept versions: who entered or left each cohort."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from embeddings.errors import WorkspaceError
from embeddings.workspace import Workspace


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
