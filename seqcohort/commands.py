"""CLI commands beyond the core pipeline: cohorts (table, rename, pin), name, export, demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import polars as pl

from embeddings.errors import SeqcohortError
from seqcohort.cli import _cfg, cli, config_options, console, handle_errors, workspace_option


@cli.group(invoke_without_command=True)
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Print cohorts.json instead of the table.")
@click.pass_context
@handle_errors
def cohorts(ctx: click.Context, workspace: str, as_json: bool) -> None:
    """Print the current cohorts; `rename` and `pin` set human overrides."""
    ctx.obj = {"workspace": workspace}
    if ctx.invoked_subcommand is not None:
        return
    from embeddings.cohorts import CohortSet
    from embeddings.workspace import Workspace
    from seqcohort.report import print_cohorts

    cs = CohortSet.load(Workspace(workspace).path("cohorts.json"))
    if as_json:
        click.echo(json.dumps(cs.to_dict(), indent=2))
    else:
        print_cohorts(console, cs)


def _overrides_and_check(workspace: str, cohort_id: int):
    from embeddings.cohorts import CohortSet
    from embeddings.naming import Overrides
    from embeddings.workspace import Workspace

    ws = Workspace(workspace)
    cs = CohortSet.load(ws.path("cohorts.json"))
    try:
        cs.by_id(cohort_id)
    except KeyError:
        raise SeqcohortError(
            f"No cohort {cohort_id} in {ws.current()}; valid ids: {[c.id for c in cs.cohorts]}."
        ) from None
    return ws, Overrides(ws.root)


@cohorts.command("rename")
@click.argument("cohort_id", type=int)
@click.argument("name")
@click.option("--description", default=None)
@click.pass_context
@handle_errors
def cohorts_rename(ctx: click.Context, cohort_id: int, name: str, description: str | None) -> None:
    """Give cohort COHORT_ID a human name that wins over any namer and survives re-naming."""
    from embeddings.config import load_config
    from seqcohort import pipeline

    ws, ov = _overrides_and_check(ctx.obj["workspace"], cohort_id)
    ov.rename(cohort_id, name, description)
    pipeline.apply_overrides_only(ws.root, load_config())
    console.print(f"cohort {cohort_id} is now {name!r} (override saved in {ws.root / 'overrides.json'})")


@cohorts.command("pin")
@click.argument("cohort_id", type=int)
@click.option("--unpin", is_flag=True, help="Remove the pin.")
@click.pass_context
@handle_errors
def cohorts_pin(ctx: click.Context, cohort_id: int, unpin: bool) -> None:
    """Pin cohort COHORT_ID's current name so later namers keep it."""
    from embeddings.cohorts import CohortSet

    ws, ov = _overrides_and_check(ctx.obj["workspace"], cohort_id)
    if unpin:
        ov.unpin(cohort_id)
        console.print(f"cohort {cohort_id} unpinned")
        return
    c = CohortSet.load(ws.path("cohorts.json")).by_id(cohort_id)
    ov.pin(cohort_id, c.name, c.description)
    console.print(f"cohort {cohort_id} pinned as {c.name!r}")


@cli.command()
@workspace_option
@click.option("--namer", type=click.Choice(["stats", "llm", "local"]), default=None,
              help="Namer to use (default: naming.namer from the config).")
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1.")
@click.option("--model", default=None, help="Model name for --namer llm.")
@click.option("--model-dir", default=None, help="transformers model directory for --namer local.")
@config_options
@handle_errors
def name(workspace: str, namer: str | None, base_url: str | None, model: str | None, model_dir: str | None,
         config_path: str | None, sets: tuple[str, ...]) -> None:
    """Re-name the current cohorts without re-embedding or re-clustering; publishes a new version."""
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts

    cfg = _cfg(config_path, sets)
    for key, val in (("namer", namer), ("base_url", base_url), ("model", model), ("model_dir", model_dir)):
        if val is not None:
            setattr(cfg.naming, key, val)
    cs = pipeline.rename(workspace, cfg)
    print_cohorts(console, cs)
    fell_back = [c for c in cs.cohorts if c.fallback_reason]
    if fell_back:
        console.print(f"[yellow]{len(fell_back)} cohort(s) fell back to the statistics namer:[/] "
                      + "; ".join(f"{c.id}: {c.fallback_reason}" for c in fell_back))


@cli.command()
@workspace_option
@click.option("--out", required=True, type=click.Path(), help="Output file (.csv or .parquet) or directory.")
@click.option("--cohort", "cohort_ids", type=int, multiple=True, help="Only these cohort ids (repeatable).")
@handle_errors
def export(workspace: str, out: str, cohort_ids: tuple[int, ...]) -> None:
    """Export members of the current cohorts (user_id, cohort_id, cohort_name, confidence) in one step."""
    from seqcohort.export import export_members

    path, n = export_members(workspace, out, list(cohort_ids))
    console.print(f"exported {n:,} members -> {path}")


@cli.command()
@workspace_option
@click.option("--users", type=click.IntRange(min=200), default=4000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--serve/--no-serve", "do_serve", default=True, show_default=True,
              help="Serve the cohorts over HTTP when done.")
@click.option("--port", type=int, default=8000, show_default=True)
@config_options
@handle_errors
def demo(workspace: str, users: int, seed: int, do_serve: bool, port: int, config_path: str | None,
         sets: tuple[str, ...]) -> None:
    """Synthetic data -> train -> named cohorts (-> served): the whole product in one command."""
    from embeddings import synth as sy
    from embeddings.config import CONFIG_DIR
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts, print_run_summary

    cfg = _cfg(config_path or str(CONFIG_DIR / "demo.yaml"), sets)
    t0 = time.perf_counter()
    data_dir = Path(workspace) / "data"
    data = sy.generate(users, seed=seed)
    paths = sy.write(data, data_dir)
    console.print(f"[bold]1/3[/] synthetic data: {users:,} users, {data.events.height:,} events, "
                  f"{len(data.archetypes)} planted archetypes -> {paths['events']}")
    console.print("[bold]2/3[/] train -> embed -> cluster -> name")
    res = pipeline.run(paths["events"], workspace, cfg)
    print_run_summary(console, res)
    print_cohorts(console, res.cohorts)
    from seqcohort.report import archetype_agreement, twin_summary

    agree = archetype_agreement(pl.read_parquet(res.version_dir / "assignments.parquet"), data.truth)
    console.print(
        f"agreement with the planted archetypes: adjusted Rand index {agree['ari']:.3f} "
        f"(users with 4+ events: {agree['ari_long']:.3f}); short-history users (1-3 events) in their "
        f"archetype's main cohort: {agree['short_accuracy']:.0%} (chance {agree['short_chance']:.0%}); "
        f"RFM twins (same recency, frequency, spend; differ in order or hour): {twin_summary(agree)}. Total {time.perf_counter() - t0:.0f}s"
    )
    if do_serve:
        console.print("[bold]3/3[/] serving")
        from seqcohort.serve_cmd import serve_workspace

        serve_workspace(workspace, "127.0.0.1", port, None)
