"""One-step export of cohort members (the marketer's "download this audience")."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from embeddings.cohorts.cohort_set import CohortSet
from embeddings.errors import SeqcohortError
from embeddings.fsutil import atomic_path
from embeddings.workspace import Workspace


def members_frame(workspace: str | Path, cohort_ids: list[int] | None = None) -> pl.DataFrame:
    """user_id, cohort_id, cohort_name, confidence for the current version (optionally some cohorts)."""
    ws = Workspace(workspace)
    cs = CohortSet.load(ws.path("cohorts.json"))
    names = pl.DataFrame({"cohort_id": [c.id for c in cs.cohorts], "cohort_name": [c.name for c in cs.cohorts]},
                         schema={"cohort_id": pl.Int64, "cohort_name": pl.String})
    valid = set(names["cohort_id"].to_list())
    bad = [c for c in (cohort_ids or []) if c not in valid]
    if bad:
        raise SeqcohortError(f"Unknown cohort id(s) {bad}; valid ids: {sorted(valid)}.")
    a = pl.read_parquet(ws.path("assignments.parquet"))
    if cohort_ids:
        a = a.filter(pl.col("cohort_id").is_in(cohort_ids))
    return a.join(names, on="cohort_id", how="left").select("user_id", "cohort_id", "cohort_name", "confidence")


def export_members(workspace: str | Path, out: str | Path, cohort_ids: list[int] | None = None) -> tuple[Path, int]:
    """Write members to `out` (.csv / .parquet; a directory gets members.csv). Atomic."""
    out = Path(out)
    if out.is_dir() or out.suffix == "":
        out = out / "members.csv"
    if out.suffix not in (".csv", ".parquet"):
        raise SeqcohortError(f"--out {out}: use a .csv or .parquet file name (or a directory).")
    df = members_frame(workspace, cohort_ids)
    with atomic_path(out) as tmp:
        df.write_csv(tmp) if out.suffix == ".csv" else df.write_parquet(tmp)
    return out, df.height
