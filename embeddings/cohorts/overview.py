"""What the cohort studio and the HTML report show about one workspace version, as plain JSON.

One function, `version_overview`, reads a published version directory and returns the cohort list
(with tiers, goal rates and size change against the parent version), the stored 2-D map and, for
goal-aware versions, the sizing curve (propensity threshold -> audience size, expected conversions).
The server and `seqcohort report` both call it, so the page and the report cannot disagree.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.cohort_set import CohortSet
from embeddings.cohorts.projection import compute_map, load_map
from embeddings.workspace import Workspace

log = logging.getLogger("seqcohort")

SAME_COHORT_COS = 0.9  # a parent cohort with the same id is "the same cohort" only this close (centroid cosine)
# versions whose cohort ids are their parent's: refresh keeps or Hungarian-matches them, forget and
# re-naming keep them; a `run` or `cluster` numbers its cohorts afresh (its first step says which)
ID_KEEPING_STEPS = ("refresh", "forget", "name", "overrides")
SIZING_STEPS = 100  # thresholds on the sizing curve: the propensity of every 1% of users


def _finite(x: Any) -> Any:
    """JSON has no NaN or infinity (a lift over an absent population value): those become null."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def size_changes(cs: CohortSet, parent: CohortSet | None, ids_matched: bool = False) -> dict[int, int | None]:
    """Size change of each cohort since the parent version, None where it has no counterpart.

    After a refresh, forget or re-naming (`ids_matched`) an id is the same cohort. Otherwise ids count only when the two centroids agree: a new `run` numbers its
    cohorts afresh, and comparing unrelated cohorts that share an id would tell a false story.
    """
    out: dict[int, int | None] = {c.id: None for c in cs.cohorts}
    if parent is None:
        return out
    prev = {c.id: c for c in parent.cohorts}
    for c in cs.cohorts:
        p = prev.get(c.id)
        if p is None:
            continue
        if ids_matched:
            out[c.id] = int(c.size - p.size)
            continue
        if len(p.centroid) != len(c.centroid):
            continue
        a, b = np.asarray(c.centroid, np.float64), np.asarray(p.centroid, np.float64)
        cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        if cos >= SAME_COHORT_COS:
            out[c.id] = int(c.size - p.size)
    return out


def sizing_curve(propensity: np.ndarray, steps: int = SIZING_STEPS) -> list[dict[str, float]]:
    """Audience size and expected conversions (sum of calibrated propensities) at each threshold.

    Thresholds are the propensities of the top 1%, 2%, ... of users, highest first, so the slider
    moves in even audience steps whatever the propensity distribution looks like.
    """
    p = np.sort(np.asarray(propensity, dtype=np.float64)[np.isfinite(propensity)])[::-1]
    if len(p) == 0:
        return []
    cum = np.cumsum(p)
    out = []
    for s in range(1, steps + 1):
        n = max(1, int(round(len(p) * s / steps)))
        t = p[n - 1]
        n = int(np.searchsorted(-p, -t, side="right"))  # everyone at or above the threshold
        out.append({"threshold": float(t), "size": n, "expected": round(float(cum[n - 1]), 2),
                    "rate": round(float(cum[n - 1] / n), 6)})
    return out


def version_overview(version_dir: str | Path, *, with_map: bool = True) -> dict[str, Any]:
    """Everything the studio page draws for one version (centroids left out: they are not for people)."""
    vdir = Path(version_dir)
    cs = CohortSet.load(vdir / "cohorts.json")
    vmeta = _read_json(vdir / "version.json")
    parent_id = vmeta.get("parent")
    parent = None
    if parent_id and (vdir.parent / parent_id / "cohorts.json").is_file():
        parent = CohortSet.load(vdir.parent / parent_id / "cohorts.json")
    deltas = size_changes(cs, parent, ids_matched=(vmeta.get("steps") or [""])[0] in ID_KEEPING_STEPS)
    tiers = cs.meta.get("tiers") or None
    tier_of = tiers["cohort_tier"] if tiers else []  # indexed by cohort id
    cohorts = []
    for c in cs.cohorts:
        d = c.to_dict()
        d.pop("centroid", None)
        goal = c.profile.extra.get("goal") or {}
        d["expected_goal_rate"] = goal.get("expected_rate")
        d["size_change"] = deltas[c.id]
        d["tier"] = int(tier_of[c.id]) if c.id < len(tier_of) else None
        cohorts.append(d)
    a = pl.read_parquet(vdir / "assignments.parquet")
    goal_aware = "propensity" in a.columns
    out: dict[str, Any] = {
        "version": vdir.name, "parent": parent_id if parent is not None else None,
        "model_version": cs.model_version, "as_of": cs.as_of, "n_users": a.height,
        "goal_aware": goal_aware,
        "goal": next((c["profile"]["extra"]["goal"]["goal"] for c in cohorts if c["profile"]["extra"].get("goal")), None),
        "tier_labels": tiers["tier_labels"] if tiers else None,
        "cohorts": cohorts,
        "merge_candidates": cs.meta.get("merge_candidates", []),
        "sizing": sizing_curve(a["propensity"].to_numpy()) if goal_aware else None,
    }
    if with_map:
        out["map"] = load_map(vdir / "map.json") or _map_now(vdir, cs, a)
    return _finite(out)


def _map_now(vdir: Path, cs: CohortSet, a: pl.DataFrame) -> dict[str, Any]:
    """For versions published before maps were stored: compute it (same function, same result)."""
    from embeddings.model.embed import read_embeddings

    ids, X = read_embeddings(vdir / "embeddings.parquet")
    lab = pl.DataFrame({"user_id": np.asarray(ids).astype(str)}).join(
        a.select("user_id", "cohort_id"), on="user_id", how="left", maintain_order="left")["cohort_id"].to_numpy()
    return compute_map(ids, X, lab, cs.centroids, cs.ids, np.array([c.size for c in cs.cohorts]))


def republish_with_overrides(workspace: str | Path) -> str:
    """Apply the workspace's overrides to `current` as a new version (what `seqcohort cohorts rename`
    does); returns the new version id. Nothing is re-embedded, re-clustered or re-named."""
    ws = Workspace(workspace)
    cur = ws.current()
    meta = {k: v for k, v in _read_json(cur / "version.json").items() if k in ("events", "as_of", "config")}
    model = ws.load()
    ws.publish(model, {**meta, "steps": ["overrides"]})
    return ws.current_id()
