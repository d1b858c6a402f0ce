"""Stable cohort ids and names across refits.

Ids: refitted clusters are matched to the previous cohorts one to one (Hungarian, on the Jaccard
overlap of their members); a pair overlapping at least `refresh.match_min` keeps the old id, any
other cluster gets an id never used before in the workspace. Names: a cohort keeps its name while
at least `refresh.name_keep` of its previous members (those still in the workspace) stay in it;
otherwise the namer names it afresh. Human renames and pins are applied afterwards and always win.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from embeddings.naming.profile_types import CohortName


def overlap(prev: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """prev_id, new_id, n (shared members), prev_n, new_n over users in both frames (user_id, cohort_id)."""
    both = prev.select("user_id", prev_id="cohort_id").join(new.select("user_id", new_id="cohort_id"), on="user_id")
    prev_n = both.group_by("prev_id").len("prev_n")
    new_n = both.group_by("new_id").len("new_n")
    return both.group_by("prev_id", "new_id").len("n").join(prev_n, on="prev_id").join(new_n, on="new_id")


def match_ids(prev: pl.DataFrame, new: pl.DataFrame, next_id: int, match_min: float) -> dict[int, int]:
    """Map each new label (new's cohort_id) to a cohort id: a matched previous id, else next_id, next_id + 1, ..."""
    ov = overlap(prev, new)
    labels = sorted(new.get_column("cohort_id").unique().to_list())
    olds = sorted(ov.get_column("prev_id").unique().to_list())
    mapping: dict[int, int] = {}
    if olds and labels:
        J = np.zeros((len(labels), len(olds)))
        li, oi = {v: i for i, v in enumerate(labels)}, {v: i for i, v in enumerate(olds)}
        for r in ov.iter_rows(named=True):
            J[li[r["new_id"]], oi[r["prev_id"]]] = r["n"] / (r["prev_n"] + r["new_n"] - r["n"])
        rows, cols = linear_sum_assignment(-J)
        for r, c in zip(rows, cols, strict=True):
            if J[r, c] >= match_min and J[r, c] > 0:
                mapping[labels[r]] = int(olds[c])
    for lab in labels:
        if lab not in mapping:
            mapping[lab] = next_id
            next_id += 1
    return mapping


def retention(prev: pl.DataFrame, new: pl.DataFrame) -> dict[int, float]:
    """Per previous cohort id: the share of its members (still present) that the same id holds now."""
    ov = overlap(prev, new)
    same = ov.filter(pl.col("prev_id") == pl.col("new_id"))
    out = {int(i): 0.0 for i in ov.get_column("prev_id").unique().to_list()}
    out.update({int(r["prev_id"]): r["n"] / r["prev_n"] for r in same.iter_rows(named=True)})
    return out


class CarryNames:
    """A namer that keeps the previous name of every id in `keep` and asks `namer` for the others.

    A fresh name that equals a kept one gets " (new)" (" (new 2)", ...) appended, so names stay unique,
    and not a bare number: names alike up to a numeric suffix are re-told apart by
    embeddings.naming.distinct, which would rename the kept cohort too.
    """

    def __init__(self, namer: Any, previous: dict[int, CohortName], keep: set[int]) -> None:
        self.namer, self.previous, self.keep = namer, previous, keep

    def name(self, profiles: list[Any]) -> list[CohortName]:
        todo = [p for p in profiles if p.cohort_id not in self.keep]
        fresh = dict(zip([p.cohort_id for p in todo], self.namer.name(todo) if todo else [], strict=True))
        taken = {self.previous[i].name for i in self.keep if i in self.previous}
        out = []
        for p in profiles:
            if p.cohort_id in self.keep:
                out.append(self.previous[p.cohort_id])
                continue
            n, k = fresh[p.cohort_id], 1
            name = n.name
            while name in taken:
                name = f"{n.name} (new{'' if k == 1 else f' {k}'})"
                k += 1
            taken.add(name)
            out.append(CohortName(name, n.description, n.suggested_action, n.namer, n.fallback_reason))
        return out
