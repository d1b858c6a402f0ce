"""`seqcohort synth` and `seqcohort dataset`: event logs to work on."""

from __future__ import annotations

import time
from pathlib import Path

import click

from seqcohort.cli.options import console, handle_errors


@click.command()
@click.option("--users", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--short-share", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of users with only 1-3 events (cold start).")
@handle_errors
def synth(users: int, out: str, seed: int, short_share: float) -> None:
    """Write synthetic events with planted archetypes (events.parquet, truth.parquet, archetypes.json)."""
    import pyarrow.parquet as pq

    from embeddings.synthetic import synth as sy

    t0 = time.perf_counter()
    paths = sy.write_parts(users, Path(out), seed=seed, short_share=short_share)  # bounded memory at any size
    n_events = pq.ParquetFile(paths["events"]).metadata.num_rows
    console.print(f"wrote {n_events:,} events of {users:,} users in {time.perf_counter() - t0:.1f}s:")
    for name, p in paths.items():
        console.print(f"  {name}: {p}")


@click.command()
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), default="../shared/datasets", show_default=True,
              help="The datasets folder, or the dataset's own folder.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Parquet file to write.")
@handle_errors
def dataset(name: str, root: str, out: str) -> None:
    """Convert a public dataset (cdnow, completejourney) into canonical events parquet for `run`/`evaluate`."""
    from embeddings.data.datasets import load_dataset
    from embeddings.evaluation.goals import event_variants
    from embeddings.fsutil import atomic_path

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

