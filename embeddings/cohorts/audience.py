"""Audiences from embeddings: lookalikes of a seed list, and why a user sits in their cohort.

    lookalikes(index, rows, X, seeds, size)        # FAISS: the known users nearest the seeds' centre
    event_contributions(full, without, centroid)   # leave-one-out drop in cosine to the cohort centroid

Both are pure functions of arrays the CohortModel (or the serving state) already holds; the HTTP
routes, the CLI and the tests call these and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from embeddings.cohorts.index import VectorIndex, l2_normalize
from embeddings.errors import SeqcohortError


@dataclass
class Lookalikes:
    user_ids: list[str]
    scores: list[float]  # cosine similarity to the seed audience's centre, descending
    unknown_seeds: list[str] = field(default_factory=list)  # seed ids not in this version
    n_seeds: int = 0  # known seeds used


def lookalikes(index: VectorIndex, rows: Mapping[str, int], X: np.ndarray, seeds: Sequence[str],
               size: int) -> Lookalikes:
    """The `size` known users most similar to the seed audience, seeds excluded.

    The seed audience is represented by the mean of its unit embeddings (its centre on the sphere);
    candidates are ranked by cosine to it with the FAISS index. Unknown seed ids are reported, not
    fatal; a seed list with no known id is an error that says so.

    Args:
        index: FAISS index of the version's users. rows / X: user id -> row of X (their embeddings).
    """
    seen = list(dict.fromkeys(str(s) for s in seeds))
    known = [s for s in seen if s in rows]
    unknown = [s for s in seen if s not in rows]
    if not known:
        shown = ", ".join(repr(s) for s in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise SeqcohortError(f"none of the {len(seen)} seed user ids is a known user of this version ({shown}); "
                             "send ids from the cohort members or from `seqcohort export`.")
    if size < 1:
        raise SeqcohortError(f"size must be at least 1, got {size}.")
    centre = l2_normalize(l2_normalize(X[[rows[s] for s in known]]).mean(axis=0))  # (1, d)
    exclude = set(known)
    sims, ids = index.search_ids(centre, size + len(known))
    out_ids, out_scores = [], []
    for u, s in zip(ids[0], sims[0].tolist(), strict=False):
        if u in exclude:
            continue
        out_ids.append(u)
        out_scores.append(round(float(s), 6))
        if len(out_ids) == size:
            break
    return Lookalikes(out_ids, out_scores, unknown, len(known))


def event_contributions(full: np.ndarray, without: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """How much each event holds the user in their cohort: cos(full, c) - cos(full minus event i, c).

    Args:
        full: (d,) the embedding of all the events. without: (n, d), row i the embedding of the same
            events without event i (same as_of). centroid: (d,) the cohort's centroid.
    Returns:
        (n,) float64; positive: the event pulls the user towards the cohort. With one event, removing
        it leaves nothing, so its contribution is the whole similarity.
    """
    c = l2_normalize(centroid)[0].astype(np.float64)
    base = float(l2_normalize(full)[0].astype(np.float64) @ c)
    if len(without) == 0:
        return np.array([base])
    return base - l2_normalize(without).astype(np.float64) @ c


def leave_one_out(n: int) -> list[list[int]]:
    """Index lists of the n sessions that each drop one event (empty for a single event)."""
    return [] if n <= 1 else [[j for j in range(n) if j != i] for i in range(n)]


def version_events(version_dir: str | Path) -> pl.DataFrame:
    """The events a version was built from (its recorded source, read as the run read it)."""
    import json

    from embeddings.config import DataConfig
    from embeddings.data.columns import ColumnMap
    from embeddings.data.schema import read_events

    meta = json.loads((Path(version_dir) / "version.json").read_text())
    src = meta.get("events")
    if not src or not Path(src).exists():
        raise SeqcohortError(f"the events of version {Path(version_dir).name} ({src!r}) are not readable from "
                             "here; send the user's events to explain them.")
    data = DataConfig(**((meta.get("config") or {}).get("data") or {}))
    cm = ColumnMap.from_pairs([f"{k}={v}" for k, v in data.columns.items()])
    cm.extra_categorical, cm.extra_numeric = list(data.extra_categorical), list(data.extra_numeric)
    df, _ = read_events(src, cm, mode="lenient" if data.mode == "lenient" else "strict", ts_unit=data.ts_unit,
                        ts_format=data.ts_format, event_default=data.event_default, return_event=data.return_event)
    return df.sort(["user_id", "ts"], maintain_order=True)
