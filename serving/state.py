"""What the deployments hold, per workspace version, and how they follow `current` without downtime.

A version is loaded completely off the request path, then published by one reference assignment,
so a request sees either the old or the new version, never a half-loaded one. The last few
versions stay in memory so a request pinned to an older version (a members cursor, an embedding
made just before a swap) still gets a consistent answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import polars as pl

from embeddings.cohorts.cohort_set import Assigner, CohortSet
from embeddings.cohorts.model import CohortModel
from embeddings.errors import WorkspaceError
from embeddings.features.featurizer import SequenceData
from embeddings.model.embed import UserEncoder
from embeddings.workspace import Workspace

log = logging.getLogger("seqcohort.serving")
T = TypeVar("T")
_VID = re.compile(r"^[A-Za-z0-9T._-]{1,80}$")


def _steps(vdir: Path) -> list[str]:
    try:
        return list(json.loads((vdir / "version.json").read_text()).get("steps", []))
    except (OSError, ValueError):
        return []


class Versions(Generic[T]):
    """The current version's state plus a small LRU of recent ones, loaded by `loader(dir)`."""

    def __init__(self, workspace: str | Path, loader: Callable[[str, Path], T], keep: int = 3) -> None:
        self.ws = Workspace(workspace)
        self.loader, self.keep = loader, keep
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, T] = OrderedDict()
        self.current_id: str = ""
        self.current: T | None = None
        self._stop = threading.Event()
        self.refresh()

    def _load(self, vid: str) -> T:
        if vid in self._cache:
            self._cache.move_to_end(vid)
            return self._cache[vid]
        if not _VID.match(vid) or not (self.ws.versions_dir / vid).is_dir():
            raise WorkspaceError(f"version {vid!r} does not exist in {self.ws.versions_dir}")
        state = self.loader(vid, self.ws.versions_dir / vid)
        self._cache[vid] = state
        while len(self._cache) > self.keep:
            old = next(iter(self._cache))
            if old == self.current_id:
                self._cache.move_to_end(old)
                if len(self._cache) <= self.keep + 1:
                    break
                continue
            self._cache.pop(old)
        return state

    def get(self, vid: str | None = None) -> tuple[str, T]:
        """(id, state) of version `vid` (loaded on demand), or of the current one."""
        cur, cid = self.current, self.current_id
        if vid is None or vid == cid:
            assert cur is not None
            return cid, cur
        with self._lock:
            return vid, self._load(vid)

    def is_loaded(self, vid: str | None) -> bool:
        """True when `get(vid)` answers from memory (no loading from disk)."""
        return vid is None or vid == self.current_id or vid in self._cache

    def refresh(self) -> bool:
        """Follow the workspace's `current` link; True if a new version was swapped in."""
        vid = self.ws.current_id()
        if vid == self.current_id:
            return False
        with self._lock:
            state = self._load(vid)  # fully loaded before anyone can see it
            self.current, self.current_id = state, vid  # the swap
            if "forget" in _steps(self.ws.versions_dir / vid):  # `forget` rewrote the older versions on disk
                for old in [v for v in self._cache if v != vid]:
                    self._cache.pop(old)
        log.info("serving workspace version %s", vid)
        return True

    def watch(self, interval_s: Callable[[], float]) -> threading.Thread:
        """Poll `current` in a daemon thread every interval_s() seconds (0: paused)."""

        def loop() -> None:
            while not self._stop.wait(max(interval_s(), 0.2)):
                if interval_s() <= 0:
                    continue
                try:
                    self.refresh()
                except Exception:  # a half-written workspace must not kill the watcher
                    log.exception("could not load the workspace's current version; keeping %s", self.current_id)

        t = threading.Thread(target=loop, name="seqcohort-version-watch", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------------------------- encoder
@dataclass
class EncoderState:
    version: str
    encoder: UserEncoder
    extra_cols: list[str]

    @classmethod
    def load(cls, vid: str, path: Path) -> EncoderState:
        enc = UserEncoder.load(path / "encoder")
        cfg = enc.featurizer.config
        return cls(vid, enc, list(cfg.extra_categorical) + list(cfg.extra_numeric))

    def embed_sessions(self, sessions: list[dict[str, Any]]) -> np.ndarray:
        """Sessions ({ts: [epoch us], event: [...], ..., as_of: epoch us}) -> (n, dim) float32.

        Sessions are featurised per distinct as_of (recency depends on it) and encoded in one pass;
        a session's embedding does not depend on the others in the batch.
        """
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(sessions):
            groups.setdefault(int(s["as_of"]), []).append(i)
        parts: list[SequenceData] = []
        order: list[int] = []
        for as_of_us, idx in groups.items():
            parts.append(self.encoder.featurize_columns(self._columns([sessions[i] for i in idx]), _dt(as_of_us)))
            order.extend(idx)  # zero-padded ids sort in insertion order
        X = self.encoder.encode(_concat(parts) if len(parts) > 1 else parts[0]).vectors
        out = np.empty_like(X)
        out[np.asarray(order)] = X
        return out

    def _columns(self, sessions: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Canonical event columns of the sessions; user ids are their zero-padded positions."""
        cols: dict[str, list[Any]] = {k: [] for k in ("user_id", "ts", "event", "item", "category", "amount")}
        for j, s in enumerate(sessions):
            cols["user_id"].extend([f"{j:08d}"] * len(s["ts"]))
            for k in ("ts", "event", "item", "category", "amount"):
                cols[k].extend(s[k])
        n = len(cols["ts"])
        for c in self.extra_cols:  # extra model columns the API does not carry: missing values
            cols[c] = [None] * n
        return cols


def _dt(us: int):
    from datetime import datetime, timedelta

    return datetime(1970, 1, 1) + timedelta(microseconds=us)


def _concat(parts: list[SequenceData]) -> SequenceData:
    """Stack featurised user sets; per-user arrays (user_ids, context, ...) are concatenated too."""
    offs, base = [np.zeros(1, dtype=np.int64)], 0
    for p in parts:
        offs.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    extra: dict[str, Any] = {}
    for f in dataclasses.fields(parts[0]):
        if f.name in ("user_ids", "offsets", "fields", "as_of"):
            continue
        vals = [getattr(p, f.name) for p in parts]
        if all(isinstance(v, np.ndarray) and len(v) == len(p) for v, p in zip(vals, parts, strict=True)):
            extra[f.name] = np.concatenate(vals)
    return dataclasses.replace(
        parts[0],
        user_ids=np.concatenate([p.user_ids for p in parts]),
        offsets=np.concatenate(offs).astype(np.int64),
        fields={k: np.concatenate([p.fields[k] for p in parts]) for k in parts[0].fields},
        **extra,
    )


# ------------------------------------------------------------------------------------ assigner
@dataclass
class AssignerState:
    version: str
    model_version: str
    cohorts: CohortSet
    assigner: Assigner
    members: pl.DataFrame  # user_id, cohort_id, confidence sorted by (cohort_id, user_id)
    stored: dict[str, int]  # user_id -> row in members / X
    user_ids: np.ndarray
    X: np.ndarray  # stored embeddings, rows = members rows

    @classmethod
    def load(cls, vid: str, path: Path, n_neighbors: int = 5) -> AssignerState:
        model = CohortModel.load(path, n_neighbors=n_neighbors)
        assert model.cohorts_ is not None and model.assignments_ is not None
        cs, ids, X = model.cohorts_, model.user_ids_, model.embeddings_
        a = model.assignments_.select("user_id", "cohort_id", "confidence")
        emb = pl.DataFrame({"user_id": ids.astype(str), "_row": np.arange(len(ids))})
        a = a.join(emb, on="user_id", how="left").sort(["cohort_id", "user_id"])
        rows = a.get_column("_row").to_numpy()
        has = ~np.isnan(rows.astype(np.float64))
        Xs = np.zeros((a.height, X.shape[1]), dtype=np.float32)
        Xs[has] = X[rows[has].astype(np.int64)]
        members = a.drop("_row")
        uids = members.get_column("user_id").to_numpy().astype(object)
        return cls(vid, cs.model_version, cs, model.assigner, members, {u: i for i, u in enumerate(uids.tolist())},
                   uids, Xs)

    def assign(self, X: np.ndarray) -> list[dict[str, Any]]:
        return [{"cohort_id": r.cohort_id, "cohort_name": r.cohort_name, "confidence": r.confidence,
                 "neighbors": r.neighbors} for r in self.assigner.assign(X)]

    def lookup(self, user_id: str) -> dict[str, Any] | None:
        """The stored assignment of a known user, with neighbours other than the user itself."""
        i = self.stored.get(user_id)
        if i is None:
            return None
        cid = int(self.members["cohort_id"][i])
        nb: list[str] = []
        k = self.assigner.n_neighbors
        if self.assigner.index is not None and k > 0:
            nb = [u for u in self.assigner.index.search_ids(self.X[i : i + 1], k + 1)[1][0] if u != user_id][:k]
        return {"cohort_id": cid, "cohort_name": self.assigner.names[cid],
                "confidence": float(self.members["confidence"][i]), "neighbors": nb}

    def cohort_members(self, cohort_id: int) -> pl.DataFrame:
        return self.members.filter(pl.col("cohort_id") == cohort_id)
