"""`seqcohort refresh`: new events -> re-embed changed users -> reassign (or refit with matched ids) -> new version.

The rules (docs/living-cohorts.md): events already stored are skipped, late ones merged, forgotten
users' dropped, all counted; a file with nothing new publishes nothing. Users without new events
have their recency moved and keep their cohort unless it moved them past `refresh.switch_margin`.
Clusters are kept unless the fit to them fell by `refresh.refit_fit_drop`; the encoder is kept
unless `--retrain always`, or `auto` and a measured drift passed its threshold. Ids and names
carry over by member overlap (embeddings/living/matching.py); overrides win.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from embeddings.cohorts.model import CohortModel, build_namer
from embeddings.config import Config, DataConfig
from embeddings.errors import WorkspaceError
from embeddings.fsutil import atomic_write_json
from embeddings.living import changes as ch
from embeddings.living import store as st
from embeddings.living.lock import workspace_lock
from embeddings.living.matching import CarryNames, match_ids, retention
from embeddings.living.retention import prune_versions
from embeddings.living.update import (
    decide,
    event_mix_shift,
    fit_quality,
    oov_share,
    reassign,
    updated_embeddings,
)
from embeddings.model.chunked import encode_in_chunks
from embeddings.model.embed import Embeddings, UserEncoder
from embeddings.naming import make_namer
from embeddings.workspace import Workspace
from seqcohort.pipeline import load_events, train_bundle

log = logging.getLogger("seqcohort")


@dataclass
class RefreshResult:
    version_dir: Path | None  # None: nothing new, nothing published
    message: str
    counts: dict[str, int] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _meta(cur: Path) -> dict[str, Any]:
    p = cur / "version.json"
    if not p.is_file():
        raise WorkspaceError(f"{p} is missing; the workspace version is incomplete.")
    return json.loads(p.read_text())


def _source_cfg(cfg: Config, meta: dict[str, Any], root: Path) -> Config:
    """`cfg` reading files as the run that made the workspace did (its column map, event_default, ...).

    Kept in the version's meta and in `store/source.json`, since a version published by another
    command (`cluster`, `name`) may carry fewer keys.
    """
    source = root / st.STORE_DIR / "source.json"
    saved = meta.get("source_data") or (json.loads(source.read_text()) if source.is_file() else None)
    saved = saved or (meta.get("config") or {}).get("data")
    return cfg.model_copy(update={"data": DataConfig(**saved)}) if saved else cfg


def _store_file(ws: Workspace, meta: dict[str, Any]) -> Path | None:
    """The event store the current version was made from (None: a run's version, not refreshed yet)."""
    if meta.get("event_store"):
        return ws.root / meta["event_store"]
    src = Path(meta.get("events") or "")
    return src if src.parent.resolve() == (ws.root / st.STORE_DIR).resolve() else None


def _store(ws: Workspace, meta: dict[str, Any], cfg: Config, supp: st.Suppression) -> pl.DataFrame:
    """The events the current version was made from: its event store, or (first refresh) its source file."""
    path = _store_file(ws, meta)
    if path is not None:
        if not path.is_file():
            raise WorkspaceError(f"The event store {path} named by {ws.current()}/version.json is missing; "
                                 "run `seqcohort run` again to rebuild the workspace.")
        return pl.read_parquet(path)
    src = meta.get("events")
    if not src or not Path(src).exists():
        raise WorkspaceError(f"The current version was made from {src!r}, which is gone. The first refresh reads "
                             "it once to build the workspace's event store: put it back, or run `seqcohort run` again.")
    source_cfg = _source_cfg(cfg, meta, ws.root)
    atomic_write_json(ws.root / st.STORE_DIR / "source.json", source_cfg.data.model_dump())
    events = load_events(src, source_cfg)
    return events.filter(~supp.contains(events.get_column("user_id"))) if len(supp) else events


def workspace_config(workspace: str | Path, sets: list[str] | tuple[str, ...] = ()) -> Config:
    """The config the current version was made with (model, trainer, cluster ...), `sets` applied on top:
    what a refresh uses when no --config is given, so a retrain or refit matches the run."""
    from pydantic import ValidationError

    from embeddings.config import _explain, parse_overrides

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {**a, **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                        for k, v in b.items()}}

    saved = _meta(Workspace(workspace).current()).get("config") or {}
    try:
        return Config.model_validate(merge(saved, parse_overrides(sets)))
    except ValidationError as e:
        raise _explain(e, "the workspace's config + --set") from None


def refresh(workspace: str | Path, events_path: str | Path, cfg: Config, maps: list[str] | tuple[str, ...] = (),
            retrain: str = "auto", events: pl.DataFrame | None = None, engine: Any = None) -> RefreshResult:
    """Add the events in `events_path` to the workspace and publish a refreshed version (see module doc).

    With an `engine` (seqcohort.scale.engine.RayEngine) re-embedding and retraining run on Ray.
    """
    if retrain not in ("auto", "always", "never"):
        raise WorkspaceError(f"--retrain {retrain!r}: use auto, always or never.")
    ws = Workspace(workspace)
    ws.current()  # a clear error for a workspace with no version
    with workspace_lock(ws.root, "seqcohort refresh"):
        ws.cleanup_staging()
        return _refresh(ws, events_path, cfg, maps, retrain, events, engine)


def _refresh(ws: Workspace, events_path: str | Path, cfg: Config, maps: list[str] | tuple[str, ...], retrain: str,
             new: pl.DataFrame | None, engine: Any = None) -> RefreshResult:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    cur = ws.current()
    meta = _meta(cur)
    in_use = _store_file(ws, meta)
    st.remove_unused(ws.root, [in_use] if in_use is not None else [])
    supp = st.Suppression(ws.root)
    stored = _store(ws, meta, cfg, supp)
    source_cfg = _source_cfg(cfg, meta, ws.root)
    if new is None:
        new = load_events(events_path, source_cfg, maps)
    prev_as_of = datetime.fromisoformat(meta["as_of"])
    m = st.merge(stored, new, prev_as_of, supp, source=str(events_path))
    counts = {"read": m.n_read, "duplicate": m.n_duplicate, "late": m.n_late, "suppressed": m.n_suppressed,
              "new": m.fresh.height}
    t["read"] = time.perf_counter() - t0
    if not m.fresh.height:
        return RefreshResult(None, f"no new events in {events_path}: {m.n_read:,} read, {m.n_duplicate:,} already "
                             f"in the workspace, {m.n_suppressed:,} of forgotten users; nothing published", counts)
    as_of = max(prev_as_of, m.fresh.get_column("ts").max())  # type: ignore[type-var]
    previous = CohortModel.load(cur, cfg)
    prev_assign = previous.assignments_
    assert prev_assign is not None and previous.cohorts_ is not None
    changed = m.changed_users
    t0 = time.perf_counter()
    emb, moved_only = updated_embeddings(previous, engine.encoder(previous.encoder) if engine else previous.encoder,
                                         m.events, changed, as_of)
    titles = previous.encoder.featurizer.item_text_
    if engine is not None and titles is not None and "text" in m.fresh.columns:
        titles.vectors(m.fresh.get_column("text").unique().to_list())  # Ray's actors encoded them; the bundle keeps them
    t["embed"] = time.perf_counter() - t0
    C = previous.cohorts_.centroids
    fit_before, fit_after = fit_quality(previous.embeddings_, C), fit_quality(emb.vectors, C)
    fit_drop = max(0.0, (fit_before - fit_after) / fit_before) if fit_before > 0 else 0.0
    oov = oov_share(previous.encoder, m.fresh)
    tiers = bool(previous.cohorts_.meta.get("tiers"))
    decision = decide(cfg, retrain, oov, fit_drop)
    if tiers and decision["refit"]:
        decision.update(refit=False, retrain=False, why=decision["why"] + "; goal-aware cohorts are only "
                        "reassigned by refresh (run again to refit them)")
    log.info("refresh: %d new events of %d users; %s", m.fresh.height, len(changed), decision["why"])
    store_rel = f"{st.STORE_DIR}/events-{secrets.token_hex(4)}.parquet"
    new_meta = {"events": str((ws.root / store_rel).resolve()), "as_of": as_of.isoformat(),
                "config": cfg.model_copy(update={"data": DataConfig(extra_categorical=source_cfg.data.extra_categorical,
                                                                    extra_numeric=source_cfg.data.extra_numeric)}
                                         ).model_dump(),
                "source_data": source_cfg.data.model_dump(), "event_store": store_rel,
                "steps": ["refresh"] + (["train"] if decision["retrain"] else []) + (["cluster"] if decision["refit"] else [])
                + ["name"], "refresh": {"counts": counts, "decision": decision}}
    t0 = time.perf_counter()
    with ws.new_version(new_meta) as out:
        st.write_store(ws.root / store_rel, m.events)
        if decision["retrain"]:
            trained = train_bundle(cfg, m.events, out / "encoder", as_of=as_of, engine=engine)
            encoder = UserEncoder(trained.bundle, cfg.trainer.accelerator, trained.bundle_dir)
            if engine is not None:
                emb = engine.encoder(encoder).encode(m.events, as_of=as_of)
                emb = Embeddings(np.asarray(emb.user_ids).astype(str), emb.vectors)
            else:
                emb = Embeddings(*encode_in_chunks(encoder, m.events, as_of)[:2])
        if decision["refit"]:
            model = _refit(cfg, previous, encoder if decision["retrain"] else previous.encoder, m.events, emb, as_of)
        else:
            cids, conf = reassign(previous, emb, moved_only, cfg.refresh.switch_margin)
            model = previous.updated(m.events, emb, cids, conf, as_of=as_of)
        model = _carry_names(cfg, ws, previous, model, tiers)
        t["cohorts"] = time.perf_counter() - t0
        model.save(out)
        assert model.assignments_ is not None and model.cohorts_ is not None
        changes = ch.diff(prev_assign, model.assignments_, changed, "refit" if decision["refit"] else "recency")
        ch.write_changes(out / ch.CHANGES, changes)
        prev_c = {} if decision["retrain"] else ch.member_means(prev_assign, previous.user_ids_,  # another space
                                                                 previous.embeddings_)
        new_c = ch.member_means(model.assignments_, model.user_ids_, model.embeddings_)
        drift = {
            "previous": cur.name, "as_of": as_of.isoformat(), "previous_as_of": prev_as_of.isoformat(),
            "events": counts,
            "users": {"total": len(emb.user_ids), "new": int((changes["reason"] == "new_user").sum()),
                      "with_new_events": len(changed), "moved": changes.height,
                      "moved_by": dict(changes.group_by("reason").len().iter_rows())},
            "population": {"fit_before": round(fit_before, 6), "fit_after": round(fit_after, 6),
                           "fit_drop": round(fit_drop, 6), "oov_share": round(oov, 6),
                           "event_mix_shift": round(event_mix_shift(stored, m.fresh), 6)},
            "cohorts": ch.cohort_drift(prev_assign, model.assignments_, prev_c, new_c,
                                       {c.id: c.name for c in model.cohorts_.cohorts}),
            "decision": decision,
            "retrain_recommended": decision["retrain_recommended"], "why": decision["retrain_why"],
        }
        ch.write_drift(out / ch.DRIFT, drift)
    st.remove_unused(ws.root, [ws.root / store_rel])
    pruned = prune_versions(ws, cfg.refresh.keep_versions)
    t["publish"] = time.perf_counter() - t0 - t.get("cohorts", 0.0)
    msg = (f"published {ws.current_id()}: {counts['new']:,} new events ({counts['late']:,} late) of {len(changed):,} "
           f"users, {counts['duplicate']:,} already seen, {counts['suppressed']:,} of forgotten users dropped; "
           f"{changes.height:,} users changed cohort; "
           + ("encoder retrained, " if decision["retrain"] else "") + ("clusters refitted" if decision["refit"] else
                                                                       "clusters kept") + f" ({decision['why']})"
           + (f"; pruned {len(pruned)} old version(s)" if pruned else ""))
    return RefreshResult(ws.current(), msg, counts, decision, drift, t)


def _refit(cfg: Config, previous: CohortModel, encoder: UserEncoder, events: pl.DataFrame, emb: Embeddings,
           as_of: datetime) -> CohortModel:
    """New clusters on everyone, each taking the id of the previous cohort it overlaps (Hungarian)."""
    assert previous.cohorts_ is not None and previous.assignments_ is not None
    model = CohortModel(cfg, namer=make_namer("stats")).fit(events, encoder, as_of=as_of, embeddings=emb)
    assert model.assignments_ is not None and model.cohorts_ is not None
    high = int(previous.cohorts_.meta.get("id_high", max(c.id for c in previous.cohorts_.cohorts)))
    mapping = match_ids(previous.assignments_, model.assignments_, high + 1, cfg.refresh.match_min)
    model.relabeled(mapping)
    model.cohorts_.meta["id_high"] = max(high, *mapping.values())
    return model


def _carry_names(cfg: Config, ws: Workspace, previous: CohortModel, model: CohortModel, tiers: bool) -> CohortModel:
    """Names kept for cohorts that kept at least `refresh.name_keep` of their members; others named afresh."""
    assert previous.cohorts_ is not None and previous.assignments_ is not None and model.assignments_ is not None
    if tiers:
        return model.rename(overrides=ws.overrides())
    from embeddings.naming.profile_types import CohortName

    kept = retention(previous.assignments_, model.assignments_)
    keep = {i for i, r in kept.items() if r >= cfg.refresh.name_keep}
    names = {c.id: CohortName(c.name, c.description, c.suggested_action, c.namer, c.fallback_reason)
             for c in previous.cohorts_.cohorts}
    model.rename(CarryNames(build_namer(cfg, ws.root / "naming_cache"), names, keep))
    return model.rename(overrides=ws.overrides())
