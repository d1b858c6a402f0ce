"""`seqcohort` command line: a thin wrapper over seqcohort.pipeline and the library packages.

Every project error is printed as one paragraph (no traceback) and exits with code 2.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from embeddings.errors import ConfigError, SeqcohortError

console = Console(stderr=False)
err_console = Console(stderr=True)
EXIT_USAGE = 2


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "faiss", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Project errors -> one clean paragraph on stderr and exit code 2; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SeqcohortError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            err_console.print("interrupted: nothing was published; the workspace's `current` is unchanged.")
            sys.exit(130)

    return wrapper


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                      help="Override any config key, e.g. --set trainer.max_steps=200 (repeatable).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                      help="YAML config file (see configs/seqcohort.yaml).")(fn)
    return fn


def map_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--map", "maps", multiple=True, metavar="CANONICAL=COLUMN",
                        help="Map your column to a canonical one, e.g. --map user_id=CustomerID (repeatable).")(fn)


def goal_alias_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--goal-alias", "aliases", multiple=True, metavar="EVENT",
                        help="Another event type that counts as the goal (repeatable), e.g. purchase_coupon: in "
                             "the labels the propensity is trained on, the scored outcomes and the RFM baseline.")(fn)


def workspace_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--workspace", "-w", type=click.Path(file_okay=False), default="workspace",
                        show_default=True, help="Workspace directory (versions + current).")(fn)


def _cfg(config_path: str | None, sets: tuple[str, ...]):
    from embeddings.config import load_config

    return load_config(config_path, sets)


def parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise SeqcohortError(f"--as-of {value!r} is not an ISO timestamp; use e.g. 2026-01-01T00:00:00.") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors (for batch jobs).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def cli(quiet: bool, verbose: bool) -> None:
    """seqcohort: event sequences -> transformer embeddings -> named cohorts, served."""
    _setup_logging(quiet, verbose)


@cli.command()
@click.option("--users", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--short-share", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of users with only 1-3 events (cold start).")
@handle_errors
def synth(users: int, out: str, seed: int, short_share: float) -> None:
    """Write synthetic events with planted archetypes (events.parquet, truth.parquet, archetypes.json)."""
    from embeddings import synth as sy

    t0 = time.perf_counter()
    data = sy.generate(users, seed=seed, short_share=short_share)
    paths = sy.write(data, Path(out))
    console.print(f"wrote {data.events.height:,} events of {users:,} users in {time.perf_counter() - t0:.1f}s:")
    for name, p in paths.items():
        console.print(f"  {name}: {p}")


@cli.command()
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), default="../shared/datasets", show_default=True,
              help="The datasets folder, or the dataset's own folder.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Parquet file to write.")
@handle_errors
def dataset(name: str, root: str, out: str) -> None:
    """Convert a public dataset (cdnow, completejourney) into canonical events parquet for `run`/`evaluate`."""
    from embeddings.datasets import load_dataset
    from embeddings.fsutil import atomic_path
    from embeddings.goals import event_variants

    events = load_dataset(name, root)
    with atomic_path(out) as tmp:
        events.write_parquet(tmp)
    types = events.group_by("event").len().sort("len", descending=True)
    console.print(f"wrote {events.height:,} events of {events['user_id'].n_unique():,} users "
                  f"({events['ts'].min()} .. {events['ts'].max()}) to {out}")
    console.print("event types: " + ", ".join(f"{e} ({n:,})" for e, n in types.iter_rows()))
    extra = event_variants(events, "purchase")
    if extra:
        console.print("for a purchase goal, count every purchase type: "
                      + " ".join(f"--goal-alias {e}" for e in extra))


@cli.command()
@click.option("--events", required=True, type=click.Path(), help="Events file (parquet/csv/jsonl).")
@click.option("--goal", default=None, help="Goal-aware cohorts: an event type (e.g. purchase), 'churn' or "
              "'churn:<event>'; adds a calibrated propensity per user and an expected goal rate per cohort.")
@click.option("--horizon", default="90d", show_default=True, help="Goal horizon, e.g. 30d, 12w, 3m.")
@goal_alias_option
@workspace_option
@map_option
@config_options
@handle_errors
def run(events: str, goal: str | None, horizon: str, aliases: tuple[str, ...], workspace: str,
        maps: tuple[str, ...], config_path: str | None, sets: tuple[str, ...]) -> None:
    """Train -> embed -> cluster -> name; publish a new version as the workspace's `current`."""
    from embeddings.goals import parse_goal
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts, print_run_summary

    cfg = _cfg(config_path, sets)
    if aliases and not goal:
        raise ConfigError("--goal-alias needs --goal: name the goal's event type, e.g. --goal purchase "
                          "--goal-alias purchase_coupon.")
    res = pipeline.run(events, workspace, cfg, maps, goal=parse_goal(goal, horizon, aliases) if goal else None)
    print_run_summary(console, res)
    print_cohorts(console, res.cohorts)
    for c in res.cohorts.cohorts if goal else []:
        g = c.profile.extra.get("goal", {})
        console.print(f"  cohort {c.id:>3}  {c.name}: expected {g.get('goal')} rate {g.get('expected_rate', 0):.1%}")


@cli.command()
@click.option("--events", required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@map_option
@config_options
@handle_errors
def train(events: str, out: str, maps: tuple[str, ...], config_path: str | None, sets: tuple[str, ...]) -> None:
    """Train an encoder bundle on an event log."""
    from seqcohort import pipeline
    from training.train import train as train_fn

    cfg = _cfg(config_path, sets)
    ev = pipeline.load_events(events, cfg, maps)
    res = train_fn(cfg, ev, out, as_of=pipeline.resolve_as_of(cfg, ev))
    console.print(f"bundle {res.bundle.version} -> {out} in {res.seconds:.1f}s "
                  f"({res.sequences_per_s:,.0f} training sequences/s); metrics: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in res.metrics.items()))


@cli.command()
@click.option("--events", required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="embeddings.parquet to write.")
@click.option("--bundle", type=click.Path(file_okay=False), default=None,
              help="Encoder bundle (default: the workspace's current encoder).")
@click.option("--as-of", default=None, help="Time recency is measured against (ISO; default: latest event).")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="Torch device to embed on: auto (the GPU when torch sees one), cpu, cuda, cuda:1, ...")
@workspace_option
@map_option
@config_options
@handle_errors
def embed(events: str, out: str, bundle: str | None, as_of: str | None, batch_size: int, device: str,
          workspace: str, maps: tuple[str, ...], config_path: str | None, sets: tuple[str, ...]) -> None:
    """Embed every user of an event log with a bundle (batch re-embedding)."""
    from embeddings.embed import UserEncoder, embed_events
    from embeddings.workspace import Workspace
    from seqcohort import pipeline

    cfg = _cfg(config_path, sets)
    bundle_dir = Path(bundle) if bundle else Workspace(workspace).path("encoder")
    enc = UserEncoder.load(bundle_dir, device=device)
    ev = pipeline.load_events(events, cfg, maps)
    t0 = time.perf_counter()
    ids, _ = embed_events(enc, ev, out, as_of=parse_ts(as_of), batch_size=batch_size, show_progress=True)
    dt = time.perf_counter() - t0
    console.print(f"embedded {len(ids):,} users in {dt:.1f}s ({len(ids) / dt:,.0f} users/s on {enc.device}) -> {out}")


@cli.command()
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

    cfg = _cfg(config_path, sets)
    ev = pipeline.load_events(events, cfg, maps) if events else None
    res = pipeline.recluster(workspace, cfg, ev)
    print_cohorts(console, res.cohorts)


@cli.command()
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

    cfg = _cfg(config_path, sets)
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


def main() -> None:
    from seqcohort import commands, evaluate_cmd, serve_cmd  # noqa: F401  (registers the remaining commands)

    cli(prog_name="seqcohort")


if __name__ == "__main__":
    main()
