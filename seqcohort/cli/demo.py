"""`seqcohort demo`: synthetic data -> train -> named cohorts -> served, in one command."""

from __future__ import annotations

import time
from pathlib import Path

import click

from seqcohort.cli.options import config_options, console, handle_errors, load_cfg, workspace_option
from seqcohort.cli.serve import serve_workspace


@click.command()
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
    from embeddings.config import CONFIG_DIR
    from embeddings.synthetic import synth as sy
    from seqcohort import pipeline
    from seqcohort.report import print_cohorts, print_run_summary

    cfg = load_cfg(config_path or str(CONFIG_DIR / "demo.yaml"), sets)
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
    import polars as pl

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
        serve_workspace(workspace, "127.0.0.1", port, None)

