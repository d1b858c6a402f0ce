"""Cohort sets (cohorts.json) and the Assigner that places new or live users into cohorts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.cluster import assign_to_centroids
from embeddings.cohorts.confidence import ConfidenceModel
from embeddings.cohorts.index import VectorIndex, as_f32
from embeddings.cohorts.tiers import IntentTiers
from embeddings.errors import WorkspaceError
from embeddings.fsutil import atomic_path, atomic_write_json
from embeddings.naming.profile_types import CohortName, CohortProfile

FORMAT = "seqcohort.cohorts/1"


@dataclass
class Cohort:
    id: int
    name: str
    description: str
    size: int
    centroid: list[float]
    profile: CohortProfile
    suggested_action: str = ""
    namer: str = "stats"
    fallback_reason: str | None = None
    pinned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "suggested_action": self.suggested_action,
            "namer": self.namer,
            "fallback_reason": self.fallback_reason,
            "pinned": self.pinned,
            "size": self.size,
            "share": self.profile.share,
            "profile": self.profile.to_dict(),
            "centroid": [round(float(v), 6) for v in self.centroid],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cohort:
        return cls(
            id=int(d["id"]), name=d["name"], description=d["description"], size=int(d["size"]),
            centroid=list(d["centroid"]), profile=CohortProfile.from_dict(d["profile"]),
            suggested_action=d.get("suggested_action", ""), namer=d.get("namer", "stats"),
            fallback_reason=d.get("fallback_reason"), pinned=bool(d.get("pinned", False)),
        )

    def apply_name(self, n: CohortName) -> None:
        self.name, self.description, self.suggested_action = n.name, n.description, n.suggested_action
        self.namer, self.fallback_reason = n.namer, n.fallback_reason


@dataclass
class CohortSet:
    cohorts: list[Cohort]
    model_version: str
    as_of: str
    confidence_temperature: float = 0.05
    meta: dict[str, Any] = field(default_factory=dict)
    confidence_model: dict[str, Any] | None = None  # embeddings.cohorts.confidence.ConfidenceModel; None: softmax(cos / T)

    @property
    def centroids(self) -> np.ndarray:
        return as_f32(np.array([c.centroid for c in self.cohorts], dtype=np.float32))

    @property
    def ids(self) -> np.ndarray:
        return np.array([c.id for c in self.cohorts], dtype=np.int64)

    def by_id(self, cohort_id: int) -> Cohort:
        for c in self.cohorts:
            if c.id == cohort_id:
                return c
        raise KeyError(f"no cohort {cohort_id}; ids are {[c.id for c in self.cohorts]}")

    def profiles(self) -> list[CohortProfile]:
        return [c.profile for c in self.cohorts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_version": self.model_version,
            "as_of": self.as_of,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "confidence_temperature": self.confidence_temperature,
            "confidence_model": self.confidence_model,
            "meta": self.meta,
            "cohorts": [c.to_dict() for c in self.cohorts],
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CohortSet:
        path = Path(path)
        if not path.is_file():
            raise WorkspaceError(f"{path} is missing; run `seqcohort run` (or `seqcohort cluster`) first.")
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT:
            raise WorkspaceError(f"{path} has format {d.get('format')!r}; expected {FORMAT}.")
        return cls(
            cohorts=[Cohort.from_dict(c) for c in d["cohorts"]],
            model_version=d["model_version"],
            as_of=d["as_of"],
            confidence_temperature=float(d.get("confidence_temperature", 0.05)),
            meta=d.get("meta", {}),
            confidence_model=d.get("confidence_model"),
        )

    def table(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "id": [c.id for c in self.cohorts],
                "name": [c.name for c in self.cohorts],
                "size": [c.size for c in self.cohorts],
                "share": [c.profile.share for c in self.cohorts],
                "description": [c.description for c in self.cohorts],
            }
        )


@dataclass
class Assignment:
    cohort_id: int
    cohort_name: str
    confidence: float
    neighbors: list[str]
    neighbor_agreement: float  # share of neighbours stored in the same cohort


class Assigner:
    """Nearest centroid with a confidence, plus nearest labelled users from a FAISS index.

    Each row is computed independently, so assigning one user alone equals assigning it in a batch.
    """

    def __init__(
        self,
        cohorts: CohortSet,
        index: VectorIndex | None = None,
        index_cohorts: dict[str, int] | None = None,
        n_neighbors: int = 5,
    ) -> None:
        self.cohorts = cohorts
        self.centroids = cohorts.centroids
        self.ids = cohorts.ids
        self.names = {c.id: c.name for c in cohorts.cohorts}
        self.index, self.index_cohorts, self.n_neighbors = index, index_cohorts or {}, n_neighbors
        # goal-aware cohorts: intent tier x behaviour cluster, not the nearest joint centroid
        tiers = cohorts.meta.get("tiers")
        self.tiers = IntentTiers.from_dict(tiers, self.centroids) if tiers else None
        self.confidence_model = ConfidenceModel.from_dict(cohorts.confidence_model)
        if self.tiers is not None:
            self.tiers.confidence_model = self.confidence_model

    def _cohort_ids(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.tiers is not None:
            return self.tiers.predict_confidence(X)
        pos, conf = assign_to_centroids(X, self.centroids, self.cohorts.confidence_temperature, self.confidence_model)
        return self.ids[pos], conf

    def assign(self, X: np.ndarray) -> list[Assignment]:
        X = as_f32(X)
        cids, conf = self._cohort_ids(X)
        neigh: list[list[str]] = [[] for _ in range(len(X))]
        if self.index is not None and self.n_neighbors > 0 and len(self.index) and len(X):
            neigh = self.index.search_ids(X, self.n_neighbors)[1]  # each query row is searched on its own
        out = []
        for i in range(len(X)):
            cid = int(cids[i])
            nb = neigh[i]
            agree = float(np.mean([self.index_cohorts.get(u) == cid for u in nb])) if nb else float("nan")
            out.append(Assignment(cid, self.names[cid], float(conf[i]), nb, agree))
        return out

    def assign_arrays(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (cohort_ids, confidences) for bulk jobs (no neighbours)."""
        return self._cohort_ids(as_f32(X))


def write_assignments(path: str | Path, user_ids: np.ndarray, cohort_ids: np.ndarray, confidence: np.ndarray,
                      propensity: np.ndarray | None = None) -> Path:
    """assignments.parquet: user_id, cohort_id, confidence[, propensity], atomically."""
    df = pl.DataFrame(
        {
            "user_id": pl.Series(np.asarray(user_ids).astype(str), dtype=pl.String),
            "cohort_id": pl.Series(cohort_ids, dtype=pl.Int64),
            "confidence": pl.Series(confidence, dtype=pl.Float32),
        }
    )
    if propensity is not None:
        df = df.with_columns(propensity=pl.Series(propensity, dtype=pl.Float32))
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return Path(path)
