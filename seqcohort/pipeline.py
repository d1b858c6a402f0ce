"""End-to-end pipeline: events -> encoder -> embeddings -> cohorts -> names -> published version.

Each step is a plain function so the CLI, tests and notebooks call the same code.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
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
from embeddings.cohorts.tiers import IntentTiers, TieredNamer
from embeddings.config import Config, DataConfig
from embeddings.data.columns import CANONICAL
from embeddings.data.schema import ColumnMap, read_events
from embeddings.errors import WorkspaceError
from embeddings.model.embed import UserEncoder, read_embeddings, write_embeddings
from embeddings.model.intent import IntentConfig, IntentEncoder, split_embedding
from embeddings.naming import Overrides, make_namer
from embeddings.naming.profile_types import CohortName
from embeddings.workspace import Workspace

log = logging.getLogger("seqcohort")


@dataclass
class RunResult:
    version_dir: Path
    cohorts: CohortSet
    timings: dict[str, float] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    n_users: int = 0
    n_events: int = 0


def with_maps(cfg: Config, maps: list[str] | tuple[str, ...] = ()) -> Config:
    """`cfg` with the CLI's --map pairs folded into data.columns / extra_*: what a version records,
    so that re-reading its source file later (`seqcohort cluster`) reads it as the run did."""
    if not maps:
        return cfg
    cm, default = column_map(cfg, maps), ColumnMap()
    columns = {name: getattr(cm, name) or "" for name in CANONICAL if getattr(cm, name) != getattr(default, name)}
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "columns": columns, "extra_categorical": list(cm.extra_categorical), "extra_numeric": list(cm.extra_numeric)})})


def column_map(cfg: Config, maps: list[str] | tuple[str, ...] = ()) -> ColumnMap:
    pairs = [f"{k}={v}" for k, v in cfg.data.columns.items()] + list(maps)
    cm = ColumnMap.from_pairs(pairs)
    cm.extra_categorical = list(cfg.data.extra_categorical)
    cm.extra_numeric = list(cfg.data.extra_numeric)
    return cm


def load_events(path: str | Path, cfg: Config, maps: list[str] | tuple[str, ...] = ()) -> pl.DataFrame:
    """Read and validate events (strict: raise; lenient: quarantine and report)."""
    df, report = read_events(
        path,
        column_map(cfg, maps),
        mode=cfg.data.mode,
        ts_unit=cfg.data.ts_unit,
        ts_format=cfg.data.ts_format,
        event_default=cfg.data.event_default,
        return_event=cfg.data.return_event,
    )
    log.info(
        "read %d events of %d users from %s%s", df.height, df.get_column("user_id").n_unique(), path,
        f" ({report.n_rejected} rows quarantined to {report.quarantine_path})" if report.n_rejected else "",
    )
    return df


def resolve_as_of(cfg: Config, events: pl.DataFrame) -> datetime:
    if cfg.data.as_of:
        return datetime.fromisoformat(cfg.data.as_of).replace(tzinfo=None)
    return events.get_column("ts").max()  # type: ignore[return-value]


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


def goal_intent(encoder: Any) -> IntentConfig | None:
    """The intent coordinate's scaling of a goal-aware encoder; None for a behaviour-only one."""
    return encoder.intent if isinstance(encoder, IntentEncoder) else None


def fit_clusters(cfg: Config, X: np.ndarray, lengths: np.ndarray | None = None) -> SphericalKMeans:
    """Fit cohorts on users with enough history; everyone is assigned afterwards.

    Users with 1-3 events all look alike and would otherwise form a "new users" cohort of their
    own; fitting without them keeps cohorts behavioural, and they join the nearest one.
    """
    rows = fit_rows(cfg.cluster, lengths)
    return SphericalKMeans.from_config(cfg.cluster).fit(X if rows is None else X[rows])


def build_namer(cfg: Config, workspace: Workspace | None):
    n = cfg.naming
    cache = (workspace.root / "naming_cache") if workspace is not None else None
    if n.namer == "llm":
        return make_namer("llm", base_url=n.base_url, model=n.model, api_key_env=n.api_key_env,
                          timeout_s=n.timeout_s, cache_dir=cache)
    if n.namer == "local":
        return make_namer("local", model_dir=n.model_dir, cache_dir=cache)
    return make_namer("stats")


def name_cohorts(cohorts: list[Cohort], namer: Any, workspace: Workspace | None,
                 tiers_meta: dict[str, Any] | None = None) -> None:
    """Run the namer over all cohorts (in view of each other), then apply human overrides."""
    if tiers_meta is not None:
        namer = TieredNamer(namer, tiers_meta)
    names = namer.name([c.profile for c in cohorts])
    if workspace is not None:
        ov = Overrides(workspace.root)
        names = ov.apply([c.id for c in cohorts], names)
        pinned = set(ov.pinned_ids())
    else:
        pinned = set()
    for c, n in zip(cohorts, names, strict=True):
        c.apply_name(n)
        c.pinned = c.id in pinned


def build_cohort_set(
    cfg: Config,
    events: pl.DataFrame,
    user_ids: np.ndarray,
    X: np.ndarray,
    km: SphericalKMeans | IntentTiers,
    as_of: datetime,
    model_version: str,
    workspace: Workspace | None,
) -> tuple[CohortSet, np.ndarray, np.ndarray]:
    """Profiles + names for a fitted clustering. Returns (cohort set, cohort ids, confidences)."""
    labels, conf = km.predict_confidence(X)
    assignments = pl.DataFrame({"user_id": user_ids.astype(str), "cohort_id": labels})
    profiles = compute_profiles(
        events, assignments, as_of, user_ids=user_ids, X=X, centroids=km.centroids_,
        n_exemplars=cfg.naming.exemplars,
    )
    assert km.centroids_ is not None
    cohorts = [
        Cohort(id=p.cohort_id, name=f"Cohort {p.cohort_id}", description="", size=p.size,
               centroid=km.centroids_[p.cohort_id].tolist(), profile=p)
        for p in profiles
    ]
    meta: dict[str, Any] = {"k_scores": {str(k): v for k, v in (getattr(km, "scores_", None) or {}).items()},
                            "k": km.k_}
    if isinstance(km, IntentTiers):  # the behaviour clusters' own profiles name the tiers' cells
        z = split_embedding(X, km.intent)[0].astype(np.float32)
        beh = pl.DataFrame({"user_id": user_ids.astype(str), "cohort_id": km.behaviour_of(z)})
        meta["tiers"] = {**km.to_dict(), "behaviour_profiles": [p.to_dict() for p in compute_profiles(
            events, beh, as_of, user_ids=user_ids, X=z, centroids=km.behaviour, n_exemplars=cfg.naming.exemplars)]}
    name_cohorts(cohorts, build_namer(cfg, workspace), workspace, meta.get("tiers"))
    model = km.confidence_model.to_dict() if km.confidence_model is not None else None
    cs = CohortSet(cohorts, model_version, as_of.isoformat(), cfg.cluster.confidence_temperature, meta=meta,
                   confidence_model=model)
    return cs, labels, conf


def write_cluster_outputs(
    out: Path, cs: CohortSet, user_ids: np.ndarray, X: np.ndarray, labels: np.ndarray, conf: np.ndarray
) -> None:
    write_assignments(out / "assignments.parquet", user_ids, labels, conf)
    VectorIndex().fit(X, user_ids).save(out / "index")
    cs.save(out / "cohorts.json")


def run(
    events_path: str | Path,
    workspace: str | Path,
    cfg: Config,
    maps: list[str] | tuple[str, ...] = (),
    events: pl.DataFrame | None = None,
    goal: Any = None,
) -> RunResult:
    """train -> embed -> cluster -> name, published atomically as the workspace's new `current`.

    With a `goal` (embeddings.evaluation.goals.Goal) the encoder is trained goal-aware (contrastive + propensity
    head): assignments get a calibrated `propensity` column and each cohort its expected goal rate
    in `profile.extra["goal"]`.
    """
    from training.train import train  # Lightning is imported only when training

    ws = Workspace(workspace)
    ws.cleanup_staging()
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    if events is None:
        events = load_events(events_path, cfg, maps)
    as_of = resolve_as_of(cfg, events)
    t["load"] = time.perf_counter() - t0
    with ws.new_version({"events": str(events_path), "as_of": as_of.isoformat(), "config": with_maps(cfg, maps).model_dump(),
                         "steps": ["train", "embed", "cluster", "name"]}) as out:
        t0 = time.perf_counter()
        if goal is None:
            result = train(cfg, events, out / "encoder", as_of=as_of)
        else:
            from embeddings.evaluation.goals import warn_unlisted_variants
            from training.propensity import train_goal_aware

            warn_unlisted_variants(events, goal)
            result = train_goal_aware(cfg, events, goal, out / "encoder", as_of=as_of)
        t["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = UserEncoder(result.bundle, device=cfg.trainer.accelerator)
        data = enc.featurize(events, as_of)
        X = enc.encode(data)
        write_embeddings(out / "embeddings.parquet", data.user_ids, X, as_of)
        t["embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        km = fit_cohorts(cfg, X, data.lengths, goal_intent(result.bundle.encoder))
        calibrate_confidence(cfg, enc, events, as_of, data.user_ids, X, km)
        t["cluster"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cs, labels, conf = build_cohort_set(cfg, events, data.user_ids, X, km, as_of, enc.version, ws)
        if goal is not None:
            from training.propensity import PropensityHead, add_goal_outputs, add_propensity_column

            propensity = PropensityHead.load(out / "encoder").predict(X)
            add_goal_outputs(cs, labels, propensity, goal)
        write_cluster_outputs(out, cs, data.user_ids, X, labels, conf)
        if goal is not None:
            add_propensity_column(out / "assignments.parquet", data.user_ids, propensity)
        t["name"] = time.perf_counter() - t0
    return RunResult(ws.current(), cs, t, result.metrics, len(data), events.height)


def recluster(workspace: str | Path, cfg: Config, events: pl.DataFrame | None = None) -> RunResult:
    """Re-cluster (and re-name) the current version's embeddings; publishes a new version."""
    ws = Workspace(workspace)
    cur = ws.current()
    user_ids, X = read_embeddings(cur / "embeddings.parquet")
    meta = _version_meta(cur)
    if events is None:  # the version's own source, read as the run read it (its column map, event_default, ...)
        saved = meta.get("config", {}).get("data")
        events = load_events(meta["events"], cfg.model_copy(update={"data": DataConfig(**saved)}) if saved else cfg)
    as_of = datetime.fromisoformat(meta["as_of"])
    enc = UserEncoder.load(cur / "encoder")
    enc_version = enc.version
    with ws.new_version({**meta, "steps": ["cluster", "name"]}) as out:
        shutil.copytree(cur / "encoder", out / "encoder")
        shutil.copy2(cur / "embeddings.parquet", out / "embeddings.parquet")
        counts = user_counts(events, as_of)
        km = fit_cohorts(cfg, X, history_lengths(counts, user_ids), goal_intent(enc.bundle.encoder))
        calibrate_confidence(cfg, enc, events, as_of, user_ids, X, km, counts)
        cs, labels, conf = build_cohort_set(cfg, events, user_ids, X, km, as_of, enc_version, ws)
        write_cluster_outputs(out, cs, user_ids, X, labels, conf)
    return RunResult(ws.current(), cs, n_users=len(user_ids), n_events=events.height)


def rename(workspace: str | Path, cfg: Config, *, run_namer: bool = True) -> CohortSet:
    """Re-name current's cohorts (no re-embedding or re-clustering); publishes a new version.

    With run_namer=False only the human overrides are (re)applied to the existing names.
    """
    ws = Workspace(workspace)
    cur = ws.current()
    cs = CohortSet.load(cur / "cohorts.json")
    if run_namer:
        name_cohorts(cs.cohorts, build_namer(cfg, ws), ws, cs.meta.get("tiers"))
    else:
        name_cohorts(cs.cohorts, _KeepNames(cs.cohorts), ws)
    with ws.new_version({**_version_meta(cur), "steps": ["name" if run_namer else "overrides"]}) as out:
        shutil.copytree(cur / "encoder", out / "encoder")
        for f in ("embeddings.parquet", "assignments.parquet", "index.faiss", "index.ids.json"):
            if (cur / f).exists():
                shutil.copy2(cur / f, out / f)
        cs.save(out / "cohorts.json")
    return cs


def apply_overrides_only(workspace: str | Path, cfg: Config) -> CohortSet:
    return rename(workspace, cfg, run_namer=False)


class _KeepNames:
    """A namer that returns the names cohorts already have (used to re-apply overrides only)."""

    def __init__(self, cohorts: list[Cohort]) -> None:
        self.names = {c.id: CohortName(c.name, c.description, c.suggested_action, c.namer, c.fallback_reason)
                      for c in cohorts}

    def name(self, profiles: list[Any]) -> list[CohortName]:
        return [self.names[p.cohort_id] for p in profiles]


def _version_meta(cur: Path) -> dict[str, Any]:
    import json

    p = cur / "version.json"
    if not p.is_file():
        raise WorkspaceError(f"{p} is missing; the workspace version is incomplete.")
    d = json.loads(p.read_text())
    return {k: d[k] for k in ("events", "as_of", "config") if k in d}


def load_assigner(workspace: str | Path, n_neighbors: int = 5) -> tuple[UserEncoder, Assigner]:
    """Encoder + assigner over the workspace's current version (what `assign` and serving use)."""
    cur = Workspace(workspace).current()
    enc = UserEncoder.load(cur / "encoder")
    cs = CohortSet.load(cur / "cohorts.json")
    index = VectorIndex.load(cur / "index")
    a = pl.read_parquet(cur / "assignments.parquet", columns=["user_id", "cohort_id"])
    lab = dict(zip(a["user_id"].to_list(), a["cohort_id"].to_list(), strict=True))
    return enc, Assigner(cs, index, lab, n_neighbors)


def assign_events(
    workspace: str | Path, events: pl.DataFrame, as_of: datetime | None = None
) -> pl.DataFrame:
    """Assign users in `events` to current cohorts: user_id, cohort_id, cohort_name, confidence, neighbors."""
    enc, assigner = load_assigner(workspace)
    data = enc.featurize(events, as_of)
    X = enc.encode(data)
    res = assigner.assign(X)
    return pl.DataFrame(
        {
            "user_id": data.user_ids.astype(str),
            "cohort_id": [r.cohort_id for r in res],
            "cohort_name": [r.cohort_name for r in res],
            "confidence": pl.Series([r.confidence for r in res], dtype=pl.Float32),
            "neighbors": [r.neighbors for r in res],
            "model_version": [enc.version] * len(res),
        }
    )
