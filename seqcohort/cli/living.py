"""`refresh`, `changes` and `forget`: keeping a workspace's cohorts current, telling what changed, deleting people."""

from __future__ import annotations

from pathlib import Path

import click

from embeddings.errors import SeqcohortError
from seqcohort.cli.engine import connected, engine_options, make_engine
from seqcohort.cli.options import (
    config_options,
    console,
    handle_errors,
    load_cfg,
    map_option,
    workspace_option,
)


@click.command()
@workspace_option
@click.option("--events", "events_path", required=True, type=click.Path(exists=True),
              help="New events (any format `run` reads); events already in the workspace are skipped.")
@click.option("--retrain", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Retrain the encoder: auto = when measured drift passes refresh.retrain_* thresholds.")
@map_option
@engine_options
@config_options
@handle_errors
def refresh(workspace: str, events_path: str, retrain: str, maps: tuple[str, ...], engine: str, address: str | None,
            workers: int, storage: str | None, config_path: str | None, sets: tuple[str, ...]) -> None:
    """Add new events: re-embed the users who have them, keep ids and names, publish a version with changes.

    Nothing new in EVENTS publishes nothing. Settings: the workspace's own, or --config; --set on top.
    Run it from cron, Airflow or a Ray job (docs/living-cohorts.md).
    """
    from seqcohort.refresh import refresh as run_refresh
    from seqcohort.refresh import workspace_config

    # without --config: the settings the workspace was made with, --set on top
    cfg = load_cfg(config_path, sets) if config_path else workspace_config(workspace, sets)
    ray_engine = make_engine(engine, address, workers, storage)
    with connected(ray_engine):
        res = run_refresh(workspace, events_path, cfg, maps, retrain, engine=ray_engine)
    console.print(("[green]" if res.version_dir else "[yellow]") + res.message + "[/]", highlight=False)


@click.command()
@workspace_option
@click.option("--since", default=None, metavar="VERSION", help="Earlier version to compare with (default: the parent).")
@click.option("--cohort", "cohort_id", type=int, default=None, help="Only members who entered or left this cohort.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .csv or .parquet.")
@handle_errors
def changes(workspace: str, since: str | None, cohort_id: int | None, out: str) -> None:
    """Members who entered or left each cohort since VERSION: the delta a destination syncs."""
    from embeddings.fsutil import atomic_path
    from embeddings.living.activation import changes_since

    df = changes_since(workspace, since, cohort_id)
    path = Path(out)
    if path.suffix not in (".csv", ".parquet"):
        raise SeqcohortError(f"--out {out}: use a .csv or .parquet file name.")
    with atomic_path(path) as tmp:
        df.write_csv(tmp) if path.suffix == ".csv" else df.write_parquet(tmp)
    n_in = int((df["change"] == "entered").sum())
    console.print(f"{n_in:,} entered, {df.height - n_in:,} left -> {path}")


@click.command()
@workspace_option
@click.option("--users", "users_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with one user id a line.")
@click.option("--user", "user_ids", multiple=True, metavar="ID", help="A user id (repeatable).")
@config_options
@handle_errors
def forget(workspace: str, users_file: str | None, user_ids: tuple[str, ...], config_path: str | None,
           sets: tuple[str, ...]) -> None:
    """Delete users from every version, index, cache and the event store; later refreshes keep them out."""
    from embeddings.living.forget import forget as run_forget

    ids = list(user_ids)
    if users_file:
        ids += [line.strip() for line in Path(users_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise SeqcohortError("forget needs --users FILE (one id a line) or --user ID.")
    from seqcohort.refresh import workspace_config

    cfg = load_cfg(config_path, sets) if config_path else workspace_config(workspace, sets)
    res = run_forget(workspace, ids, keep_versions=cfg.refresh.keep_versions)
    console.print(f"forgot {res.forgotten:,} of {res.requested:,} user(s); {res.unknown:,} unknown to the workspace "
                  f"(suppressed for later refreshes all the same); published {res.version}; audit {res.audit}",
                  highlight=False)
