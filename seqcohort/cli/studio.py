"""`report` and `lookalike`: the studio's shareable report and seed-list audiences from the command line."""

from __future__ import annotations

from pathlib import Path

import click

from embeddings.errors import SeqcohortError
from seqcohort.cli.options import console, handle_errors, workspace_option


@click.command()
@workspace_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--version", "version", default=None, help="A workspace version id (default: current).")
@handle_errors
def report(workspace: str, out: str, version: str | None) -> None:
    """Write the cohort list, map and profiles as one self-contained HTML file (no server, no network)."""
    from seqcohort.studio_report import write_report

    path = write_report(workspace, out, version)
    console.print(f"report -> {path} ({path.stat().st_size / 1e6:.1f} MB; open it in any browser)")


def read_seed_ids(path: str | Path) -> list[str]:
    """User ids from a CSV with a `user_id` column, or one id per line (a header line `user_id` is skipped)."""
    import polars as pl

    p = Path(path)
    text = p.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    if "," in first:
        df = pl.read_csv(p, infer_schema=False)
        if "user_id" not in df.columns:
            raise SeqcohortError(f"{p} has columns {df.columns} but no `user_id`; name the id column user_id "
                                 "or give one id per line.")
        ids = df["user_id"].drop_nulls().to_list()
    else:
        ids = [line.strip().strip('"') for line in text.splitlines()]
        ids = [u for u in ids if u and u != "user_id"]
    if not ids:
        raise SeqcohortError(f"{p} holds no user ids; give a CSV with a user_id column or one id per line.")
    return ids


@click.command()
@workspace_option
@click.option("--seeds", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Seed audience: CSV with a user_id column, or one id per line.")
@click.option("--size", required=True, type=click.IntRange(1), help="How many lookalikes to write.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .csv or .parquet (user_id, score).")
@handle_errors
def lookalike(workspace: str, seeds: str, size: int, out: str) -> None:
    """The known users most similar to a seed audience (seeds excluded), ranked by cosine to its centre."""
    import polars as pl

    from embeddings.cohorts.audience import lookalikes
    from embeddings.fsutil import atomic_path
    from embeddings.workspace import Workspace

    model = Workspace(workspace).load()
    assert model.index_ is not None
    rows = {str(u): i for i, u in enumerate(model.user_ids_)}
    r = lookalikes(model.index_, rows, model.embeddings_, read_seed_ids(seeds), size)
    df = pl.DataFrame({"user_id": pl.Series(r.user_ids, dtype=pl.String), "score": pl.Series(r.scores, dtype=pl.Float64)})
    with atomic_path(out) as tmp:
        df.write_parquet(tmp) if str(out).endswith(".parquet") else df.write_csv(tmp)
    if r.unknown_seeds:
        console.print(f"[yellow]{len(r.unknown_seeds)} seed id(s) are not users of this version and were ignored[/] "
                      f"(e.g. {', '.join(r.unknown_seeds[:3])})")
    console.print(f"{df.height:,} lookalikes of {r.n_seeds:,} seeds -> {out}")
