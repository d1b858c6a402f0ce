"""FAISS vector index over user embeddings, with user ids, cosine similarity and atomic save."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from embeddings.errors import NotFittedError, WorkspaceError
from embeddings.fsutil import atomic_path, atomic_write_json

FLAT_MAX = 50_000  # exact search up to this many vectors; IVF above (docs/decisions.md#faiss-index-by-size)
IVF_TRAIN_PER_LIST = 40  # vectors per inverted list that IVF's coarse k-means is trained on (FAISS asks 30-256)


def as_f32(x: np.ndarray) -> np.ndarray:
    """Convert at the boundary: C-contiguous float32, 2-D."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = as_f32(x).copy()
    faiss.normalize_L2(x)
    return x


class VectorIndex:
    """Inner-product index of L2-normalised vectors (= cosine).

    `kind` "auto" is exact ("flat") up to `FLAT_MAX` vectors and an inverted file ("ivf": sqrt(n)
    lists, `nprobe` searched) above, which builds in seconds where HNSW takes minutes; "hnsw" on request.
    """

    def __init__(self, kind: str = "auto", hnsw_m: int = 32, ef_search: int = 64, nprobe: int = 32,
                 seed: int = 0) -> None:
        self.kind, self.hnsw_m, self.ef_search, self.nprobe, self.seed = kind, hnsw_m, ef_search, nprobe, seed
        self.index_: faiss.Index | None = None
        self.ids_: np.ndarray | None = None

    def fit(self, X: np.ndarray, ids: np.ndarray) -> VectorIndex:
        X = l2_normalize(X)
        if len(ids) != len(X):
            raise ValueError(f"{len(ids)} ids for {len(X)} vectors")
        kind = self.kind if self.kind != "auto" else ("flat" if len(X) <= FLAT_MAX else "ivf")
        if kind == "flat":
            index = faiss.IndexFlatIP(X.shape[1])
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(X.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
        elif kind == "ivf":
            index = self._ivf(X)
        else:
            raise ValueError(f"unknown index kind {kind!r}; use auto, flat, ivf or hnsw")
        index.add(X)
        self.kind, self.index_, self.ids_ = kind, index, np.asarray(ids, dtype=object)
        return self

    def _ivf(self, X: np.ndarray) -> faiss.Index:
        nlist = max(1, int(round(np.sqrt(len(X)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(X.shape[1]), X.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        n_train = min(len(X), IVF_TRAIN_PER_LIST * nlist)
        rows = np.sort(np.random.default_rng(self.seed).choice(len(X), n_train, replace=False))
        index.cp.seed = self.seed
        index.train(X[rows])
        index.nprobe = min(self.nprobe, nlist)
        return index

    def _check(self) -> faiss.Index:
        if self.index_ is None:
            raise NotFittedError("VectorIndex is empty: call fit(X, ids) or VectorIndex.load(path).")
        return self.index_

    def __len__(self) -> int:
        return 0 if self.index_ is None else int(self.index_.ntotal)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns (similarities (n, k) float32, positions (n, k) int64; -1 where fewer exist)."""
        index = self._check()
        k = min(k, len(self))
        if k == 0:
            n = len(as_f32(Q))
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        return index.search(l2_normalize(Q), k)

    def search_ids(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        sims, pos = self.search(Q, k)
        assert self.ids_ is not None
        return sims, [[str(self.ids_[p]) for p in row if p >= 0] for row in pos]

    def save(self, path: str | Path) -> Path:
        """Writes `<path>.faiss` and `<path>.ids.json` atomically."""
        index = self._check()
        path = Path(path)
        with atomic_path(path.with_suffix(".faiss")) as tmp:
            faiss.write_index(index, str(tmp))
        assert self.ids_ is not None
        atomic_write_json(path.with_suffix(".ids.json"), {"kind": self.kind, "nprobe": self.nprobe,
                                                          "ids": [str(i) for i in self.ids_]})
        return path

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        path = Path(path)
        f, j = path.with_suffix(".faiss"), path.with_suffix(".ids.json")
        if not f.is_file() or not j.is_file():
            raise WorkspaceError(f"Index {f} (or its ids file {j}) is missing; re-run `seqcohort cluster`.")
        meta = json.loads(j.read_text())
        self = cls(kind=meta["kind"], nprobe=meta.get("nprobe", 32))
        self.index_ = faiss.read_index(str(f))
        if self.kind == "ivf":  # nprobe is a search setting, not stored in the FAISS file
            ivf = faiss.extract_index_ivf(self.index_)
            ivf.nprobe = min(self.nprobe, ivf.nlist)
        self.ids_ = np.asarray(meta["ids"], dtype=object)
        if len(self.ids_) != self.index_.ntotal:
            raise WorkspaceError(f"Index {f} holds {self.index_.ntotal} vectors but {len(self.ids_)} ids.")
        return self
