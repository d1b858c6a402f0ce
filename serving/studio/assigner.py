"""The Assigner's studio methods: overview, lookalikes, explanations, stored histories.

A mixin of `serving.deployments.AssignerDeployment`, so they run where the FAISS index, the
stored embeddings and the centroids already are; each answer names the version it came from.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.audience import event_contributions, lookalikes, version_events
from embeddings.cohorts.overview import version_overview
from embeddings.errors import SeqcohortError
from serving.state import AssignerState, Versions

log = logging.getLogger("seqcohort.serving")
_EPOCH = datetime(1970, 1, 1)


class StudioAssigner:
    versions: Versions[AssignerState]

    def _cached(self, kind: str, vid: str, make: Any) -> Any:
        """make() once per (kind, version); a new version drops the older entries of that kind."""
        with self.__dict__.setdefault("_studio_lock", threading.Lock()):  # dict.setdefault is atomic
            cache: dict[tuple[str, str], Any] = self.__dict__.setdefault("_studio", {})
            if (kind, vid) not in cache:
                for k in [k for k in cache if k[0] == kind]:
                    cache.pop(k)
                cache[(kind, vid)] = make()
            return cache[(kind, vid)]

    def overview(self) -> dict[str, Any]:
        """The studio's view of the current version (cohorts, map, tiers, sizing)."""
        vid, _ = self.versions.get()
        return self._cached("overview", vid, lambda: version_overview(self.versions.ws.versions_dir / vid))

    def lookalike(self, seeds: list[str], size: int) -> dict[str, Any]:
        vid, st = self.versions.get()
        if st.assigner.index is None:
            raise RuntimeError("this version has no index of its users")
        try:
            r = lookalikes(st.assigner.index, st.stored, st.X, seeds, size)
        except SeqcohortError as e:  # a message for the client, not a remote traceback
            return {"error": str(e)}
        return {"user_ids": r.user_ids, "scores": r.scores, "unknown_seed_ids": r.unknown_seeds,
                "n_seeds": r.n_seeds, "version": vid}

    def explain(self, embedded: dict[str, Any]) -> dict[str, Any]:
        """Row 0 of X: all the events; row 1 + i: without event i. Cohort of row 0, contribution per event."""
        vid, st = self.versions.get(embedded["version"])
        X = embedded["X"]
        a = st.assign(X[:1])[0]
        centroid = np.asarray(st.cohorts.by_id(a["cohort_id"]).centroid, dtype=np.float32)
        contrib = event_contributions(X[0], X[1:], centroid)
        sim = _cos(X[0], centroid)
        return {"cohort_id": a["cohort_id"], "cohort_name": a["cohort_name"], "confidence": a["confidence"],
                "similarity": round(sim, 6), "contributions": [round(float(c), 6) for c in contrib],
                "version": vid, "model_version": embedded["model_version"]}

    def user_session(self, user_id: str, max_events: int) -> dict[str, Any] | None:
        """A known user's last `max_events` events from the version's source, as an Encoder session
        measured at the version's as_of (so it embeds as the stored user did); None if unknown."""
        vid, st = self.versions.get()
        if user_id not in st.stored:
            return None
        try:
            events: pl.DataFrame = self._cached("events", vid, lambda: version_events(self.versions.ws.versions_dir / vid))
        except SeqcohortError as e:
            return {"error": str(e)}
        ev = events.filter(pl.col("user_id") == user_id).tail(max_events)
        if ev.height == 0:
            return None
        ts = ev["ts"].to_list()
        cols = {k: (ev[k].to_list() if k in ev.columns else [None] * ev.height)
                for k in ("event", "item", "category", "amount", "text")}
        as_of = datetime.fromisoformat(st.cohorts.as_of).replace(tzinfo=None)
        session = {"ts": [_us(t) for t in ts], **cols, "as_of": _us(as_of)}
        history = [{"ts": t.isoformat(), **{k: cols[k][i] for k in cols}} for i, t in enumerate(ts)]
        return {"session": session, "history": history, "version": vid}


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _cos(x: np.ndarray, c: np.ndarray) -> float:
    return float(np.dot(x, c) / max(float(np.linalg.norm(x) * np.linalg.norm(c)), 1e-12))
