"""The two model parts, Encoder (dynamic batching) and Assigner (cohorts + FAISS + stored data): each a
deployment of its own, or plain objects inside the ingress replica (`AppArgs.models_in_ingress`).

Both follow the workspace's `current` version on their own (a watcher thread) and on
`reload()`; each answer names the version that produced it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from ray import serve

from serving.config import AssignerTunables, EncoderTunables
from serving.state import AssignerState, EncoderState, Versions
from serving.studio.assigner import StudioAssigner

log = logging.getLogger("seqcohort.serving")


class EncoderModel:
    """Featurise + encode sessions from the current bundle: the Encoder deployment, or a plain object
    inside the ingress replica (`AppArgs.models_in_ingress`)."""

    def __init__(self, workspace: str, tunables: dict[str, Any] | None = None) -> None:
        self.tun = EncoderTunables(**(tunables or {}))
        torch.set_num_threads(self.tun.torch_threads)
        self.versions: Versions[EncoderState] = Versions(workspace, EncoderState.load, keep=2)
        self.versions.watch(lambda: self.tun.watch_interval_s)

    def _embed(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each request: {"sessions": [...]} -> {"X": (n, dim) float32, "version", "model_version"}."""
        vid, st = self.versions.get()  # one version for the whole batch
        sessions = [s for r in requests for s in r["sessions"]]
        X = st.embed_sessions(sessions)
        out, start = [], 0
        for r in requests:
            n = len(r["sessions"])
            out.append({"X": X[start : start + n], "version": vid, "model_version": st.encoder.version})
            start += n
        return out

    def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._embed([request])[0]

    def reload(self) -> str:
        self.versions.refresh()
        return self.versions.current_id

    def info(self) -> dict[str, Any]:
        vid, st = self.versions.get()
        return {"version": vid, "model_version": st.encoder.version, "dim": st.encoder.dim}

    def __del__(self) -> None:
        if hasattr(self, "versions"):
            self.versions.stop()


@serve.deployment(name="Encoder")
class Encoder(EncoderModel):
    """The encoder as its own deployment (replicas, GPUs); concurrent requests share one forward pass."""

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.tun = EncoderTunables(**user_config)
        torch.set_num_threads(self.tun.torch_threads)
        self.embed_batch.set_max_batch_size(self.tun.max_batch_size)
        self.embed_batch.set_batch_wait_timeout_s(self.tun.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def embed_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._embed(requests)

    async def embed(self, request: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        return await self.embed_batch(request)


class AssignerModel(StudioAssigner):
    """Centroids, cohort metadata, the FAISS index of known users and their stored assignments: the
    Assigner deployment, or a plain object inside the ingress replica."""

    def __init__(self, workspace: str, tunables: dict[str, Any] | None = None) -> None:
        self.tun = AssignerTunables(**(tunables or {}))
        self.versions: Versions[AssignerState] = Versions(workspace, self._load, keep=self.tun.keep_versions)
        self.versions.watch(lambda: self.tun.watch_interval_s)

    def _load(self, vid: str, path: Any) -> AssignerState:
        return AssignerState.load(vid, path, self.tun.n_neighbors)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.tun = AssignerTunables(**user_config)
        self.versions.keep = self.tun.keep_versions
        for _, st in list(self.versions._cache.items()):
            st.assigner.n_neighbors = self.tun.n_neighbors

    def assign(self, embedded: dict[str, Any]) -> dict[str, Any]:
        """Assign the Encoder's output with the cohort set of the same workspace version."""
        vid, st = self.versions.get(embedded["version"])
        return {"results": st.assign(embedded["X"]), "version": vid, "model_version": embedded["model_version"]}

    def lookup(self, user_ids: list[str]) -> dict[str, Any]:
        """Stored assignments (None for unknown users) from the current version."""
        vid, st = self.versions.get()
        return {"results": [st.lookup(u) for u in user_ids], "version": vid, "model_version": st.model_version}

    def stored_embeddings(self, user_ids: list[str]) -> dict[str, Any]:
        vid, st = self.versions.get()
        rows = [st.stored.get(u) for u in user_ids]
        embs = [None if r is None else st.X[r].tolist() for r in rows]
        return {"embeddings": embs, "version": vid, "model_version": st.model_version, "dim": int(st.X.shape[1])}

    def cohorts(self) -> dict[str, Any]:
        vid, st = self.versions.get()
        return {"version": vid, "model_version": st.model_version,
                "cohorts": [{"id": c.id, "name": c.name, "description": c.description,
                             "suggested_action": c.suggested_action, "size": c.size,
                             "share": c.profile.share, "pinned": c.pinned} for c in st.cohorts.cohorts]}

    def cohort(self, cohort_id: int) -> dict[str, Any] | None:
        vid, st = self.versions.get()
        try:
            c = st.cohorts.by_id(cohort_id)
        except KeyError:
            return None
        d = c.to_dict()
        d.pop("centroid", None)
        return {"version": vid, "model_version": st.model_version, **d}

    def members(self, cohort_id: int, offset: int, limit: int, version: str | None = None) -> dict[str, Any] | None:
        """A page of a cohort's members (sorted by user_id), pinned to `version` when given."""
        vid, st = self.versions.get(version)
        if cohort_id not in st.assigner.names:
            return None
        m = st.cohort_members(cohort_id)
        page = m.slice(offset, limit)
        return {"version": vid, "cohort_name": st.assigner.names[cohort_id], "total": m.height,
                "user_id": page.get_column("user_id").to_list(),
                "confidence": np.round(page.get_column("confidence").to_numpy().astype(np.float64), 6).tolist()}

    def reload(self) -> str:
        self.versions.refresh()
        return self.versions.current_id

    def info(self) -> dict[str, Any]:
        vid, st = self.versions.get()
        return {"version": vid, "model_version": st.model_version, "n_users": len(st.stored)}

    def __del__(self) -> None:
        if hasattr(self, "versions"):
            self.versions.stop()


AssignerDeployment = serve.deployment(name="Assigner")(AssignerModel)
