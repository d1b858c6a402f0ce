"""`CohortModel`: the one object that turns embeddings into cohorts and places users in them.

It owns every step between an encoder and a published cohort set: clustering (spherical k-means,
or intent tiers x behaviour clusters for a goal-aware encoder), the calibrated confidence, the
short-history head, profiles, names and the FAISS index of the fitted users. `seqcohort run`,
`cluster`, `name`, `assign`, `evaluate`, serving and the benchmarks all go through it, so what is
evaluated is what is published and served.

    model = CohortModel(config).fit(events, encoder)     # -> self
    model.assign(new_events)                             # polars: user_id, cohort_id, cohort_name, ...
    model.save("dir"); CohortModel.load("dir")           # a workspace version's files

Learned state ends in `_` (scikit-learn style) and is only set by `fit`, `rename` and `load`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.calibrate import calibrate_confidence, history_lengths, user_counts
from embeddings.cohorts.cluster import SphericalKMeans, fit_rows
from embeddings.cohorts.cohort_set import Assigner, Cohort, CohortSet, write_assignments
from embeddings.cohorts.index import VectorIndex
from embeddings.cohorts.profile import compute_profiles
from embeddings.cohorts.projection import compute_map, save_map
from embeddings.cohorts.tiers import IntentTiers, TieredNamer
from embeddings.config import Config
from embeddings.errors import NotFittedError, WorkspaceError
from embeddings.model.bundle import read_propensity_meta, save_text_cache
from embeddings.model.chunked import encode_in_chunks
from embeddings.model.embed import Embeddings, UserEncoder, read_embeddings, write_embeddings
from embeddings.model.intent import (
    IntentConfig,
    IntentEncoder,
    propensity_from_embedding,
    split_embedding,
)
from embeddings.naming import Namer, Overrides, make_namer
from embeddings.naming.distinct import distinct_names
from embeddings.naming.profile_types import CohortName

log = logging.getLogger("seqcohort")

ENCODER_DIR, EMBEDDINGS, ASSIGNMENTS, COHORTS, INDEX, MAP = (
    "encoder", "embeddings.parquet", "assignments.parquet", "cohorts.json", "index", "map.json")


def build_namer(cfg: Config, cache_dir: str | Path | None = None) -> Namer:
    """The namer the config's `naming` section asks for (LLM namers cache their answers in `cache_dir`)."""
    n = cfg.naming
    if n.namer == "llm":
        return make_namer("llm", base_url=n.base_url, model=n.model, api_key_env=n.api_key_env,
                          timeout_s=n.timeout_s, cache_dir=cache_dir)
    if n.namer == "local":
        return make_namer("local", model_dir=n.model_dir, cache_dir=cache_dir)
    return make_namer("stats")


def goal_intent(encoder: UserEncoder) -> IntentConfig | None:
    """The intent coordinate's scaling of a goal-aware encoder; None for a behaviour-only one."""
    module = encoder.bundle.encoder
    return module.intent if isinstance(module, IntentEncoder) else None


def fit_clusters(cfg: Config, X: np.ndarray, lengths: np.ndarray | None = None) -> SphericalKMeans:
    """Behaviour clusters fitted on users with enough history; everyone is assigned afterwards.

    Users with 1-3 events all look alike and would otherwise form a "new users" cohort of their
    own; fitting without them keeps cohorts behavioural, and they join the nearest one.
    """
    rows = fit_rows(cfg.cluster, lengths)
    return SphericalKMeans.from_config(cfg.cluster).fit(X if rows is None else X[rows])


def fit_cohorts(cfg: Config, X: np.ndarray, lengths: np.ndarray | None = None,
                intent: IntentConfig | None = None) -> SphericalKMeans | IntentTiers:
    """Behaviour clusters of X; with a goal (`intent`), intent tiers x behaviour clusters."""
    if intent is None:
        return fit_clusters(cfg, X, lengths)
    z = split_embedding(X, intent)[0].astype(np.float32)
    km = fit_clusters(cfg, z, lengths)
    assert km.centroids_ is not None
    min_size = max(1, int(np.ceil(cfg.cluster.min_cluster_frac * len(X))))
    tiers = IntentTiers.fit(X, intent, km.centroids_, shares=list(cfg.cluster.intent_tiers), min_size=min_size,
                            temperature=cfg.cluster.confidence_temperature, scores=getattr(km, "scores_", None),
                            split_recent=cfg.cluster.split_recent)
    if tiers.recent_share_top is not None:
        log.info("goal-aware cohorts: %.1f%% of the top intent tier reached the goal in the last %g days; "
                 "tiers %s by it (cluster.split_recent=%s)", 100 * tiers.recent_share_top, intent.recent_days,
                 "split" if tiers.split_recent else "not split", cfg.cluster.split_recent)
    return tiers


class _KeepNames:
    """A namer that returns the names cohorts already have (re-applying overrides only)."""

    def __init__(self, cohorts: list[Cohort]) -> None:
        self.names = {c.id: CohortName(c.name, c.description, c.suggested_action, c.namer, c.fallback_reason)
                      for c in cohorts}

    def name(self, profiles: list[Any]) -> list[CohortName]:
        return [self.names[p.cohort_id] for p in profiles]


class CohortModel:
    """Cohorts of an encoder's embeddings: fit, assign, rename, save and load.

    Args:
        config: the whole seqcohort config; `cluster` and `naming` are read here.
        namer: names cohorts (default: the one `config.naming` asks for).
        n_neighbors: nearest stored users returned with each assignment as evidence.
    """

    def __init__(self, config: Config | None = None, *, namer: Namer | None = None, n_neighbors: int = 5) -> None:
        self.config = config if config is not None else Config()
        self.namer = namer
        self.n_neighbors = n_neighbors
        self.cohorts_: CohortSet | None = None
        self.user_ids_: np.ndarray = np.zeros(0, dtype=object)
        self.embeddings_: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self.assignments_: pl.DataFrame | None = None  # user_id, cohort_id, confidence[, propensity]
        self.index_: VectorIndex | None = None
        self._encoder: UserEncoder | None = None
        self._encoder_dir: Path | None = None
        self._assigner: Assigner | None = None

    # ------------------------------------------------------------------------------ fitting
    def fit(self, events: pl.DataFrame, encoder: UserEncoder, *, as_of: datetime | None = None,
            embeddings: Embeddings | None = None) -> CohortModel:
        """Cluster `encoder`'s embeddings of `events`, calibrate, profile and name the cohorts.

        `embeddings` (user_ids, vectors) skips encoding when they were computed already with
        this encoder; `as_of` defaults to `config.data.as_of`, else the latest event.
        """
        cfg = self.config
        as_of = as_of or resolve_as_of(cfg, events)
        counts = None
        if embeddings is None:
            user_ids, X, lengths = encode_in_chunks(encoder, events, as_of)
        else:
            user_ids, X = embeddings
            counts = user_counts(events, as_of)
            lengths = history_lengths(counts, user_ids)
        km = fit_cohorts(cfg, X, lengths, goal_intent(encoder))
        calibrate_confidence(cfg, encoder, events, as_of, user_ids, X, km, counts)
        labels, conf = km.predict_confidence(X)
        profiles = compute_profiles(events, pl.DataFrame({"user_id": user_ids.astype(str), "cohort_id": labels}),
                                    as_of, user_ids=user_ids, X=X, centroids=km.centroids_,
                                    n_exemplars=cfg.naming.exemplars)
        assert km.centroids_ is not None
        cohorts = [Cohort(id=p.cohort_id, name=f"Cohort {p.cohort_id}", description="", size=p.size,
                          centroid=km.centroids_[p.cohort_id].tolist(), profile=p) for p in profiles]
        meta: dict[str, Any] = {"k_scores": {str(k): v for k, v in (getattr(km, "scores_", None) or {}).items()}, "k": km.k_}
        if isinstance(km, IntentTiers):  # the behaviour clusters' own profiles name the tiers' cells
            z = split_embedding(X, km.intent)[0].astype(np.float32)
            beh = pl.DataFrame({"user_id": user_ids.astype(str), "cohort_id": km.behaviour_of(z)})
            meta["tiers"] = {**km.to_dict(), "behaviour_profiles": [p.to_dict() for p in compute_profiles(
                events, beh, as_of, user_ids=user_ids, X=z, centroids=km.behaviour,
                n_exemplars=cfg.naming.exemplars)]}
        confidence = km.confidence_model.to_dict() if km.confidence_model is not None else None
        self.cohorts_ = CohortSet(cohorts, encoder.version, as_of.isoformat(), cfg.cluster.confidence_temperature,
                                  meta=meta, confidence_model=confidence)
        self._name(self.namer or build_namer(cfg), self.cohorts_.meta.get("tiers"))
        columns: dict[str, Any] = {"user_id": pl.Series(np.asarray(user_ids).astype(str), dtype=pl.String),
                                   "cohort_id": pl.Series(labels, dtype=pl.Int64),
                                   "confidence": pl.Series(conf, dtype=pl.Float32)}
        intent = goal_intent(encoder)
        if intent is not None:
            propensity = propensity_from_embedding(X, intent)
            columns["propensity"] = pl.Series(propensity, dtype=pl.Float32)
            self._add_goal_rates(labels, propensity, _goal_text(encoder))
        self.assignments_ = pl.DataFrame(columns)
        self.user_ids_, self.embeddings_ = np.asarray(user_ids).astype(object), X
        self.index_ = VectorIndex().fit(X, user_ids)
        self._encoder, self._encoder_dir, self._assigner = encoder, encoder.path, None
        return self

    def _add_goal_rates(self, labels: np.ndarray, propensity: np.ndarray, goal: str) -> None:
        """Each cohort's expected goal rate (mean calibrated propensity) -> profile.extra["goal"]."""
        assert self.cohorts_ is not None
        overall = float(np.mean(propensity)) if len(propensity) else float("nan")
        for c in self.cohorts_.cohorts:
            p = propensity[np.asarray(labels) == c.id]
            rate = float(p.mean()) if len(p) else float("nan")
            c.profile.extra["goal"] = {
                "goal": goal,
                "expected_rate": rate,
                "relative": rate / overall if overall > 0 else None,
                "propensity_p10": float(np.quantile(p, 0.1)) if len(p) else None,
                "propensity_p90": float(np.quantile(p, 0.9)) if len(p) else None,
            }

    def updated(self, events: pl.DataFrame, embeddings: Embeddings, cohort_ids: np.ndarray, confidence: np.ndarray,
                *, as_of: datetime) -> CohortModel:
        """A new model over these users and assignments with the same cohorts: profiles (sizes, exemplars)
        recomputed from `events`, names and centroids kept. What `seqcohort refresh` publishes."""
        cs = self._check()
        user_ids, X = np.asarray(embeddings[0]).astype(str), embeddings[1]
        labels = pl.DataFrame({"user_id": pl.Series(user_ids, dtype=pl.String),
                               "cohort_id": pl.Series(cohort_ids, dtype=pl.Int64)})
        by_id = np.zeros((int(cs.ids.max()) + 1, cs.centroids.shape[1]), dtype=np.float32)
        by_id[cs.ids] = cs.centroids  # compute_profiles indexes centroids by cohort id
        profiles = {p.cohort_id: p for p in compute_profiles(events, labels, as_of, user_ids=user_ids, X=X,
                                                             centroids=by_id, n_exemplars=self.config.naming.exemplars)}
        cohorts = []
        for c in cs.cohorts:
            p = profiles.get(c.id) or replace(c.profile, size=0, share=0.0, exemplars=[], as_of=as_of.isoformat())
            cohorts.append(replace(c, size=p.size, profile=p))
        new = CohortModel(self.config, namer=self.namer, n_neighbors=self.n_neighbors)
        new.cohorts_ = CohortSet(cohorts, cs.model_version, as_of.isoformat(), cs.confidence_temperature,
                                 meta=dict(cs.meta), confidence_model=cs.confidence_model)
        columns: dict[str, Any] = {"user_id": labels["user_id"], "cohort_id": labels["cohort_id"],
                                   "confidence": pl.Series(confidence, dtype=pl.Float32)}
        intent = goal_intent(self.encoder)
        if intent is not None:
            columns["propensity"] = pl.Series(propensity_from_embedding(X, intent), dtype=pl.Float32)
            new._add_goal_rates(np.asarray(cohort_ids), columns["propensity"].to_numpy(), _goal_text(self.encoder))
        new.assignments_ = pl.DataFrame(columns)
        new.user_ids_, new.embeddings_ = user_ids.astype(object), X
        new.index_ = VectorIndex().fit(X, user_ids)
        new._encoder, new._encoder_dir = self._encoder, self._encoder_dir
        return new

    def relabeled(self, mapping: dict[int, int]) -> CohortModel:
        """This model with cohort ids renamed by `mapping` (old -> new; all ids), e.g. to match an earlier version."""
        cs = self._check()
        if cs.meta.get("tiers"):
            raise WorkspaceError("goal-aware cohorts (intent tiers) cannot be relabelled; publish a new run instead.")
        for c in cs.cohorts:
            c.id = c.profile.cohort_id = mapping[c.id]
        assert self.assignments_ is not None
        self.assignments_ = self.assignments_.with_columns(
            cohort_id=pl.col("cohort_id").replace_strict(mapping, return_dtype=pl.Int64))
        self._assigner = None
        return self

    # ------------------------------------------------------------------------------ naming
    def _name(self, namer: Any, tiers_meta: dict[str, Any] | None = None, overrides: Overrides | None = None) -> None:
        cohorts = self._check().cohorts
        self._assigner = None  # it holds the names
        if tiers_meta is not None:
            namer = TieredNamer(namer, tiers_meta)
        names = namer.name([c.profile for c in cohorts])
        pinned: set[int] = set()
        if overrides is not None:
            names = overrides.apply([c.id for c in cohorts], names)
            pinned = set(overrides.pinned_ids())
        # no two names alike up to a "(cohort N)" suffix: name what differs, else report a merge candidate
        locked = frozenset(i for i, c in enumerate(cohorts) if overrides is not None and overrides.get(c.id))
        names, merges = distinct_names([c.profile for c in cohorts], names, locked)
        self._check().meta["merge_candidates"] = merges
        for c, n in zip(cohorts, names, strict=True):
            c.apply_name(n)
            c.pinned = c.id in pinned

    def rename(self, namer: Namer | None = None, *, overrides: Overrides | None = None) -> CohortModel:
        """Re-name the cohorts without refitting (`namer` None: keep the names, re-apply `overrides`)."""
        cs = self._check()
        if namer is None:
            self._name(_KeepNames(cs.cohorts), None, overrides)
        else:
            self._name(namer, cs.meta.get("tiers"), overrides)
        return self

    # ------------------------------------------------------------------------------ assigning
    def _check(self) -> CohortSet:
        if self.cohorts_ is None:
            raise NotFittedError("CohortModel is not fitted: call fit(events, encoder) or CohortModel.load(dir).")
        return self.cohorts_

    @property
    def encoder(self) -> UserEncoder:
        """The encoder the cohorts were fitted on (loaded from the version on first use)."""
        if self._encoder is None:
            if self._encoder_dir is None:
                raise NotFittedError("CohortModel has no encoder: call fit(events, encoder) or CohortModel.load(dir).")
            self._encoder = UserEncoder.load(self._encoder_dir, device=self.config.trainer.accelerator)
        return self._encoder

    @property
    def assigner(self) -> Assigner:
        """Nearest centroid (or tier x cluster) with calibrated confidence and stored neighbours."""
        if self._assigner is None:
            a = self.assignments_
            stored = dict(zip(a["user_id"].to_list(), a["cohort_id"].to_list(), strict=True)) if a is not None else {}
            self._assigner = Assigner(self._check(), self.index_, stored, self.n_neighbors)
        return self._assigner

    def assign(self, events: pl.DataFrame, *, as_of: datetime | None = None) -> pl.DataFrame:
        """Place every user of `events` (even with one event) in a cohort.

        Returns user_id, cohort_id, cohort_name, confidence, [propensity for a goal-aware model],
        neighbors (nearest stored users), model_version; users sorted by id.
        """
        got = encode_in_chunks(self.encoder, events, as_of or events.get_column("ts").max())
        return self.assign_embeddings(Embeddings(got.user_ids, got.vectors))

    def assign_embeddings(self, embeddings: Embeddings) -> pl.DataFrame:
        """`assign` for embeddings made with this model's encoder: (user_ids, vectors)."""
        user_ids, X = embeddings
        res = self.assigner.assign(X)
        cols: dict[str, Any] = {
            "user_id": pl.Series(np.asarray(user_ids).astype(str), dtype=pl.String),
            "cohort_id": pl.Series([r.cohort_id for r in res], dtype=pl.Int64),
            "cohort_name": pl.Series([r.cohort_name for r in res], dtype=pl.String),
            "confidence": pl.Series([r.confidence for r in res], dtype=pl.Float32),
        }
        intent = goal_intent(self.encoder)
        if intent is not None:
            cols["propensity"] = pl.Series(propensity_from_embedding(X, intent), dtype=pl.Float32)
        cols["neighbors"] = pl.Series([r.neighbors for r in res], dtype=pl.List(pl.String))
        cols["model_version"] = pl.Series([self._check().model_version] * len(res), dtype=pl.String)
        return pl.DataFrame(cols)

    @property
    def labels_(self) -> np.ndarray:
        """Cohort id of each fitted user, rows as `user_ids_`."""
        if self.assignments_ is None:
            raise NotFittedError("CohortModel is not fitted: call fit(events, encoder) or CohortModel.load(dir).")
        return self.assignments_["cohort_id"].to_numpy()

    def cohort_table(self) -> pl.DataFrame:
        """id, name, size, share, description of every cohort."""
        return self._check().table()

    # ------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the version files (encoder/, embeddings, assignments, index, cohorts.json) into `path`."""
        cs, out = self._check(), Path(path)
        out.mkdir(parents=True, exist_ok=True)
        src = self._encoder_dir or (self._encoder.path if self._encoder is not None else None)
        if src is None:
            raise WorkspaceError("CohortModel.save needs the encoder's bundle directory: load the encoder with "
                                 "UserEncoder.load(dir) (or train it with seqcohort.Encoder.train) before fitting.")
        if Path(src).resolve() != (out / ENCODER_DIR).resolve():
            shutil.copytree(src, out / ENCODER_DIR, dirs_exist_ok=True)
        if self._encoder is not None:  # titles encoded since the bundle was loaded (a refresh's new ones)
            save_text_cache(out / ENCODER_DIR, self._encoder.featurizer)
        assert self.assignments_ is not None and self.index_ is not None
        write_embeddings(out / EMBEDDINGS, self.user_ids_, self.embeddings_, datetime.fromisoformat(cs.as_of))
        a = self.assignments_
        write_assignments(out / ASSIGNMENTS, a["user_id"].to_numpy(), a["cohort_id"].to_numpy(),
                          a["confidence"].to_numpy(), a["propensity"].to_numpy() if "propensity" in a.columns else None)
        self.index_.save(out / INDEX)
        cs.save(out / COHORTS)
        save_map(out / MAP, compute_map(self.user_ids_, self.embeddings_, a["cohort_id"].to_numpy(), cs.centroids,
                                        cs.ids, np.array([c.size for c in cs.cohorts])))  # the studio's 2-D map
        return out

    @classmethod
    def load(cls, path: str | Path, config: Config | None = None, *, n_neighbors: int = 5) -> CohortModel:
        """A model from a version directory (the encoder itself is loaded on first use)."""
        path = Path(path)
        missing = [f for f in (ENCODER_DIR, EMBEDDINGS, ASSIGNMENTS, COHORTS) if not (path / f).exists()]
        if missing:
            raise WorkspaceError(f"{path} is not a complete cohort model: {missing} missing. Publish one with "
                                 "`seqcohort run` (or CohortModel.save).")
        m = cls(config, n_neighbors=n_neighbors)
        m.cohorts_ = CohortSet.load(path / COHORTS)
        m.user_ids_, m.embeddings_ = read_embeddings(path / EMBEDDINGS)
        m.assignments_ = pl.read_parquet(path / ASSIGNMENTS)
        m.index_ = VectorIndex.load(path / INDEX)
        m._encoder_dir = path / ENCODER_DIR
        return m


def resolve_as_of(cfg: Config, events: pl.DataFrame) -> datetime:
    """`config.data.as_of`, else the latest event's time."""
    if cfg.data.as_of:
        return datetime.fromisoformat(cfg.data.as_of).replace(tzinfo=None)
    return events.get_column("ts").max()  # type: ignore[return-value]


def _goal_text(encoder: UserEncoder) -> str:
    meta = read_propensity_meta(encoder.path) if encoder.path is not None else None
    return str(((meta or {}).get("goal") or {}).get("text", "goal"))
