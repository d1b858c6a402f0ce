"""What the CLI's workspace commands do: run, re-cluster, re-name and assign, all through `CohortModel`.

Each step is a plain function so the CLI, tests and notebooks call the same code.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from embeddings.cohorts.cohort_set import CohortSet
from embeddings.cohorts.model import CohortModel, build_namer, resolve_as_of
from embeddings.config import Config, DataConfig
from embeddings.data.columns import CANONICAL
from embeddings.data.schema import ColumnMap, read_events
from embeddings.errors import WorkspaceError
from embeddings.living.lock import holds_lock
from embeddings.memory import release_memory
from embeddings.model.chunked import encode_in_chunks
from embeddings.model.embed import UserEncoder
from embeddings.workspace import Workspace

if TYPE_CHECKING:
    from training.train import TrainResult

log = logging.getLogger("seqcohort")

__all__ = ["RunResult", "assign_events", "column_map", "load_events", "recluster", "rename", "resolve_as_of",
           "run", "train_bundle", "with_maps"]


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


def train_bundle(cfg: Config, events: pl.DataFrame, out: str | Path, *, as_of: datetime | None = None,
                 goal: Any = None, engine: Any = None) -> TrainResult:
    """Train an encoder bundle into `out` (goal-aware with a `goal`; on Ray Train with an `engine`)."""
    from training.train import train  # Lightning is imported only when training

    distributed = engine.trainer() if engine is not None else None
    if goal is None:
        return train(cfg, events, out, as_of=as_of, distributed=distributed)
    from embeddings.evaluation.goals import warn_unlisted_variants
    from training.propensity import train_goal_aware

    warn_unlisted_variants(events, goal)
    return train_goal_aware(cfg, events, goal, out, as_of=as_of, distributed=distributed)


@holds_lock("seqcohort run")  # a refresh or forget at the same time would lose one of the two
def run(
    events_path: str | Path,
    workspace: str | Path,
    cfg: Config,
    maps: list[str] | tuple[str, ...] = (),
    events: pl.DataFrame | None = None,
    goal: Any = None,
    engine: Any = None,  # seqcohort.scale.engine.RayEngine (it reads files with load_events: no import back)
) -> RunResult:
    """train -> embed -> cluster -> name, published atomically as the workspace's new `current`.

    With a `goal` (embeddings.evaluation.goals.Goal) the encoder is trained goal-aware (contrastive +
    propensity head): assignments get a calibrated `propensity` column and each cohort its expected
    goal rate in `profile.extra["goal"]`. With an `engine` (seqcohort.scale), training and embedding run on Ray.
    """
    ws = Workspace(workspace)
    ws.cleanup_staging()
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    if events is None:
        events = load_events(events_path, cfg, maps)
    as_of = resolve_as_of(cfg, events)
    t["load"] = time.perf_counter() - t0
    release_memory()
    with ws.new_version({"events": str(events_path), "as_of": as_of.isoformat(), "config": with_maps(cfg, maps).model_dump(),
                         "steps": ["train", "embed", "cluster", "name"]}) as out:
        t0 = time.perf_counter()
        trained = train_bundle(cfg, events, out / "encoder", as_of=as_of, goal=goal, engine=engine)
        encoder = UserEncoder(trained.bundle, cfg.trainer.accelerator, trained.bundle_dir)
        t["train"] = time.perf_counter() - t0
        release_memory()
        t0 = time.perf_counter()
        embedded = (engine.embed(encoder, events, as_of) if engine is not None
                    else encode_in_chunks(encoder, events, as_of))  # memory of one chunk's features, not the log's
        t["embed"] = time.perf_counter() - t0
        release_memory()
        t0 = time.perf_counter()
        model = CohortModel(cfg, namer=build_namer(cfg, ws.root / "naming_cache"))
        model.fit(events, encoder, as_of=as_of, embeddings=(embedded.user_ids, embedded.vectors))
        model.rename(overrides=ws.overrides())
        t["cluster"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.save(out)
        t["save"] = time.perf_counter() - t0
    assert model.cohorts_ is not None
    return RunResult(ws.current(), model.cohorts_, t, trained.metrics, len(embedded.user_ids), events.height)


def _version_meta(cur: Path) -> dict[str, Any]:
    p = cur / "version.json"
    if not p.is_file():
        raise WorkspaceError(f"{p} is missing; the workspace version is incomplete.")
    d = json.loads(p.read_text())
    return {k: d[k] for k in ("events", "as_of", "config", "source_data", "event_store") if k in d}  # refresh's too


@holds_lock("seqcohort cluster")
def recluster(workspace: str | Path, cfg: Config, events: pl.DataFrame | None = None) -> RunResult:
    """Re-cluster (and re-name) the current version's embeddings; publishes a new version."""
    ws = Workspace(workspace)
    cur = ws.current()
    meta = _version_meta(cur)
    if events is None:  # the version's own source, read as the run read it (its column map, event_default, ...)
        saved = meta.get("config", {}).get("data")
        events = load_events(meta["events"], cfg.model_copy(update={"data": DataConfig(**saved)}) if saved else cfg)
    previous = CohortModel.load(cur, cfg)
    model = CohortModel(cfg, namer=build_namer(cfg, ws.root / "naming_cache"))
    model.fit(events, previous.encoder, as_of=datetime.fromisoformat(meta["as_of"]),
              embeddings=(previous.user_ids_, previous.embeddings_))
    ws.publish(model, {**meta, "steps": ["cluster", "name"]})
    assert model.cohorts_ is not None
    return RunResult(ws.current(), model.cohorts_, n_users=len(previous.user_ids_), n_events=events.height)


@holds_lock("seqcohort name")
def rename(workspace: str | Path, cfg: Config, *, run_namer: bool = True) -> CohortSet:
    """Re-name current's cohorts (no re-embedding or re-clustering); publishes a new version.

    With run_namer=False only the human overrides are (re)applied to the existing names.
    """
    ws = Workspace(workspace)
    meta = _version_meta(ws.current())
    model = ws.load(config=cfg)
    if run_namer:
        model.rename(build_namer(cfg, ws.root / "naming_cache"))
    ws.publish(model, {**meta, "steps": ["name" if run_namer else "overrides"]})
    assert model.cohorts_ is not None
    return model.cohorts_


def apply_overrides_only(workspace: str | Path, cfg: Config) -> CohortSet:
    return rename(workspace, cfg, run_namer=False)


def assign_events(workspace: str | Path, events: pl.DataFrame, as_of: datetime | None = None) -> pl.DataFrame:
    """`Workspace(workspace).load().assign(events)`: what `seqcohort assign` writes."""
    return Workspace(workspace).load().assign(events, as_of=as_of)
