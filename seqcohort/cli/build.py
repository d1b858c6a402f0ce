"""`run`, `train`, `embed`, `cluster`, `assign`: building and using cohorts."""

from __future__ import annotations

import time
from pathlib import Path

import click

from embeddings.errors import ConfigError
from seqcohort.cli.engine import connected, engine_options, make_engine
from seqcohort.cli.options import (
    config_options,
    console,
    goal_alias_option,
    handle_errors,
    load_cfg,
    map_option,
    parse_ts,
    workspace_option,
)


@click.command()
@click.option("--events", required=True, type=click.Path(), help="Events file (parquet/csv/jsonl).")
@click.option("--goal", default=None, help="Goal-aware cohorts: an event type (e.g. purchase), 'churn' or "
              "'churn:<event>'; adds a calibrated propensity per user and an expected goal rate per cohort.")
@click.option("--horizon", default="90d", show_default=True, help="Goal horizon, e.g. 30d, 12w, 3m.")
@goal_alias_option
@workspace_option
@map_option
@engine_options
@config_options
@handle_errors
def run(events: str, goal: str | None, horizon: str, aliases: tuple[str, ...], workspace: str,
        maps: tuple[str, ...], engine: str, address: str | None, workers: int, storage: str | None,
        config_path: str | None, sets: tuple[str, ...]) -> None:
    """Train -> embed -> cluster -> name; publish a new version as the workspace's `current`."""
    from embeddings.evaluation.goals import parse_goal
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts, print_run_summary

    cfg = load_cfg(config_path, sets)
    if aliases and not goal:
        raise ConfigError("--goal-alias needs --goal: name the goal's event type, e.g. --goal purchase "
                          "--goal-alias purchase_coupon.")
    ray_engine = make_engine(engine, address, workers, storage)
    with connected(ray_engine):
        res = pipeline.run(events, workspace, cfg, maps, goal=parse_goal(goal, horizon, aliases) if goal else None,
                           engine=ray_engine)
    print_run_summary(console, res)
    print_cohorts(console, res.cohorts)
    for c in res.cohorts.cohorts if goal else []:
        g = c.profile.extra.get("goal", {})
        console.print(f"  cohort {c.id:>3}  {c.name}: expected {g.get('goal')} rate {g.get('expected_rate', 0):.1%}")


@click.command()
@click.option("--events", required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@map_option
@engine_options
@config_options
@handle_errors
def train(events: str, out: str, maps: tuple[str, ...], engine: str, address: str | None, workers: int,
          storage: str | None, config_path: str | None, sets: tuple[str, ...]) -> None:
    """Train an encoder bundle on an event log."""
    from seqcohort import pipeline
    from training.train import train as train_fn

    cfg = load_cfg(config_path, sets)
    ev = pipeline.load_events(events, cfg, maps)
    ray_engine = make_engine(engine, address, workers, storage)
    with connected(ray_engine):
        res = train_fn(cfg, ev, out, as_of=pipeline.resolve_as_of(cfg, ev),
                       distributed=ray_engine.trainer() if ray_engine is not None else None)
    console.print(f"bundle {res.bundle.version} -> {out} in {res.seconds:.1f}s "
                  f"({res.sequences_per_s:,.0f} training sequences/s); metrics: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in res.metrics.items()))


@click.command()
@click.option("--events", required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="embeddings.parquet to write (--engine ray: also a directory or URI of parquet parts).")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="Encoder bundle (default: the workspace's current encoder).")
@click.option("--as-of", default=None, help="Time recency is measured against (ISO; default: latest event).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Users per encoder pass (default: 128 on the CPU, 4096 on a GPU).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="What the encoder computes in: bfloat16 / float16 autocast run faster on a GPU, "
                   "within about 6e-3 / 7e-4 of float32.")
@click.option("--device", default="auto", show_default=True,
              help="Torch device to embed on: auto (the GPU when torch sees one), cpu, cuda, cuda:1, ...")
@click.option("--fused/--no-fused", default=True, show_default=True,
              help="float32 on the CPU: the encoder in fused ops (same vectors within ~1e-6, faster); "
                   "--no-fused runs the PyTorch modules as they are.")
@workspace_option
@map_option
@engine_options
@config_options
@handle_errors
def embed(events: str, out: str, bundle: str | None, as_of: str | None, batch_size: int | None, dtype: str, device: str,
          fused: bool, workspace: str, maps: tuple[str, ...], engine: str, address: str | None, workers: int,
          storage: str | None, config_path: str | None, sets: tuple[str, ...]) -> None:
    """Embed every user of an event log with a bundle (batch re-embedding).

    With --engine ray, EVENTS may be a URI (s3://bucket/events/) and Ray Data reads, partitions by
    user and encodes on an actor pool: the same embeddings as one process (docs/scaling.md).
    """
    from embeddings.model.chunked import embed_events
    from embeddings.model.embed import UserEncoder
    from embeddings.workspace import Workspace
    from seqcohort import pipeline

    cfg = load_cfg(config_path, sets)
    bundle_dir = Path(bundle) if bundle else Workspace(workspace).path("encoder")
    ray_engine = make_engine(engine, address, workers, storage)
    if ray_engine is not None:
        from seqcohort.scale.embed import EmbedJob, embed_files

        if dtype != "float32":
            raise ConfigError(f"--dtype {dtype} is for one process; the Ray actors encode in float32. "
                              "Leave out --dtype or --engine ray.")

        t0 = time.perf_counter()
        with connected(ray_engine):
            n, _ = embed_files(events, bundle_dir, out, cfg, maps, as_of=parse_ts(as_of),
                               job=EmbedJob(actors=workers, batch_size=batch_size))
        dt = time.perf_counter() - t0
        console.print(f"embedded {n:,} users in {dt:.1f}s ({n / dt:,.0f} users/s on Ray, {workers} actors) -> {out}")
        return
    enc = UserEncoder.load(bundle_dir, device=device, dtype=dtype, fused=fused)
    ev = pipeline.load_events(events, cfg, maps)
    t0 = time.perf_counter()
    ids, _ = embed_events(enc, ev, out, as_of=parse_ts(as_of), batch_size=batch_size, show_progress=True)
    dt = time.perf_counter() - t0
    console.print(f"embedded {len(ids):,} users in {dt:.1f}s ({len(ids) / dt:,.0f} users/s on {enc.device}) -> {out}")


@click.command()
@workspace_option
@click.option("--events", type=click.Path(), default=None,
              help="Events for profiles (default: the file the current version was built from).")
@map_option
@config_options
@handle_errors
def cluster(workspace: str, events: str | None, maps: tuple[str, ...], config_path: str | None,
            sets: tuple[str, ...]) -> None:
    """Re-cluster and re-name the current embeddings (e.g. --set cluster.k=10); publishes a version."""
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts

    cfg = load_cfg(config_path, sets)
    ev = pipeline.load_events(events, cfg, maps) if events else None
    res = pipeline.recluster(workspace, cfg, ev)
    print_cohorts(console, res.cohorts)


@click.command()
@click.option("--events", required=True, type=click.Path(), help="Events of the users to assign.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .parquet or .csv.")
@click.option("--as-of", default=None, help="Time recency is measured against (ISO; default: latest event).")
@workspace_option
@map_option
@config_options
@handle_errors
def assign(events: str, out: str, as_of: str | None, workspace: str, maps: tuple[str, ...],
           config_path: str | None, sets: tuple[str, ...]) -> None:
    """Assign new users (even with one event) to the current cohorts."""
    from embeddings.fsutil import atomic_path
    from seqcohort import pipeline

    cfg = load_cfg(config_path, sets)
    ev = pipeline.load_events(events, cfg, maps)
    df = pipeline.assign_events(workspace, ev, parse_ts(as_of))
    with atomic_path(out) as tmp:
        if str(out).endswith(".csv"):
            df.with_columns(df["neighbors"].list.join(";")).write_csv(tmp)
        else:
            df.write_parquet(tmp)
    counts = df.group_by("cohort_name").len().sort("len", descending=True)
    console.print(f"assigned {df.height:,} users -> {out}")
    for name, n in counts.iter_rows():
        console.print(f"  {n:>7,}  {name}")

