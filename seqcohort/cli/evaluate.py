"""`evaluate` (backtest against RFM) and `rfm` (the manual RFM segments)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from embeddings.errors import SchemaError, SeqcohortError
from seqcohort.cli.options import (
    config_options,
    console,
    goal_alias_option,
    handle_errors,
    load_cfg,
    map_option,
    parse_ts,
)

if TYPE_CHECKING:  # polars and the evaluation stack (scipy, statsmodels) load when a command runs, not for --help
    import polars as pl


def write_report(report: Any, out: str | Path) -> tuple[Path, Path]:
    from embeddings.fsutil import atomic_write_json, atomic_write_text

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    return (atomic_write_json(d / "report.json", report.to_dict()),
            atomic_write_text(d / "report.md", report.to_markdown()))


@click.command()
@click.option("--events", required=True, type=click.Path(), help="Events file (parquet/csv/jsonl).")
@click.option("--cutoff", required=True, help="Backtest cut-off (ISO); the pipeline only sees events up to it.")
@click.option("--goal", required=True, help="Event type (e.g. purchase), 'churn' or 'churn:<event>'.")
@click.option("--horizon", default="90d", show_default=True, help="Goal horizon after the cut-off, e.g. 90d.")
@click.option("--budget", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              help="Share of users a campaign targets.")
@goal_alias_option
@click.option("--intent-weight", type=click.FloatRange(0, min_open=True), default=0.5, show_default=True,
              help="Weight of the propensity coordinate in the goal-aware embedding (vs unit behaviour).")
@click.option("--bce-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of a propensity BCE loss on the encoder next to the contrastive loss "
                   "(0: the head is fitted on the trained embedding only).")
@click.option("--boot", type=click.IntRange(min=10), default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write report.json and report.md here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@map_option
@config_options
@handle_errors
def evaluate(events: str, cutoff: str, goal: str, horizon: str, budget: float, aliases: tuple[str, ...],
             intent_weight: float, bce_weight: float, boot: int, out: str | None, as_json: bool,
             maps: tuple[str, ...], config_path: str | None, sets: tuple[str, ...]) -> None:
    """Backtest: run the pipeline on events up to --cutoff and score it on what happened after."""
    from embeddings.evaluation.backtest import run_backtest
    from embeddings.evaluation.goals import parse_goal, warn_unlisted_variants
    from seqcohort import pipeline
    from seqcohort.evaluation import PipelineProducer

    cfg = load_cfg(config_path, sets)
    g = parse_goal(goal, horizon, aliases)
    cut = parse_ts(cutoff)
    assert cut is not None
    ev = pipeline.load_events(events, cfg, maps)
    warn_unlisted_variants(ev, g)
    with tempfile.TemporaryDirectory(prefix="seqcohort-backtest-") as tmp:
        producer = PipelineProducer(cfg, g, tmp, bce_weight=bce_weight, intent_weight=intent_weight)
        report = run_backtest(ev, cut, g, producer, budget=budget, n_boot=boot, seed=cfg.trainer.seed)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(report.to_table())
    if out:
        j, m = write_report(report, out)
        console.print(f"wrote {j} and {m}")


def _write_table(df: pl.DataFrame, out: str | Path) -> Path:
    from embeddings.fsutil import atomic_path

    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise SeqcohortError(f"--out {out}: use a .csv or .parquet file name.")
    with atomic_path(out) as tmp:
        df.write_csv(tmp) if out.suffix == ".csv" else df.write_parquet(tmp)
    return out


def _read_table(path: str | Path, what: str) -> pl.DataFrame:
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise SeqcohortError(f"{what} file {p} does not exist.")
    if p.suffix == ".parquet":
        return pl.read_parquet(p)
    if p.suffix in (".csv", ".tsv"):
        return pl.read_csv(p, separator="\t" if p.suffix == ".tsv" else ",", infer_schema_length=10000,
                           schema_overrides={"user_id": pl.String})
    if p.suffix in (".txt", ""):
        ids = [line.strip() for line in p.read_text().splitlines() if line.strip()]
        return pl.DataFrame({"user_id": pl.Series(ids, dtype=pl.String)})
    raise SeqcohortError(f"{what} file {p}: use .csv, .parquet or .txt (one user id per line).")


@click.command()
@click.option("--events", required=True, type=click.Path(), help="Events file (parquet/csv/jsonl).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .csv or .parquet.")
@click.option("--as-of", default=None, help="Score users as of this time (ISO; default: the latest event).")
@click.option("--monetary-event", default=None,
              help="Event type that counts as a transaction (default: 'purchase' if present, else every event).")
@map_option
@config_options
@handle_errors
def rfm(events: str, out: str, as_of: str | None, monetary_event: str | None, maps: tuple[str, ...],
        config_path: str | None, sets: tuple[str, ...]) -> None:
    """Export the manual RFM segments: user_id, r, f, m, segment (like any cohort export)."""
    from embeddings.evaluation.rfm import MARKETER_ORDER, RFMSegmenter, rfm_features
    from seqcohort import pipeline

    cfg = load_cfg(config_path, sets)
    ev = pipeline.load_events(events, cfg, maps)
    t = parse_ts(as_of) or pipeline.resolve_as_of(cfg, ev)
    if monetary_event is None and (ev["event"] == "purchase").any():
        monetary_event = "purchase"
    feats = rfm_features(ev, t, monetary_event=monetary_event)
    if feats.height == 0:
        raise SchemaError(f"No events at or before {t}; nothing to segment.")
    seg = RFMSegmenter().fit_predict(feats)
    path = _write_table(seg.select("user_id", "r", "f", "m", "segment"), out)
    counts = dict(seg.group_by("segment").len().iter_rows())
    console.print(f"wrote RFM segments of {seg.height:,} users as of {t} -> {path}")
    for s in MARKETER_ORDER:
        if s in counts:
            console.print(f"  {counts[s]:>7,}  {s}")

