"""CLI commands `evaluate` (backtest), `experiment` (assign / analyze / power) and `rfm` (export)."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl

from embeddings.backtest import Snapshot
from embeddings.config import Config
from embeddings.errors import ConfigError, SchemaError, SeqcohortError
from embeddings.goals import Goal
from seqcohort.cli import (
    _cfg,
    cli,
    config_options,
    console,
    goal_alias_option,
    handle_errors,
    map_option,
    parse_ts,
)

log = logging.getLogger("seqcohort")


# ----------------------------------------------------------------------------- the backtested pipeline


class PipelineProducer:
    """The seqcohort pipeline as a backtest producer: (pre-cut-off events, cutoff) -> Snapshot.

    Trains a behaviour-only encoder (-> "ai_behaviour_cohorts") and a goal-aware encoder with a
    propensity head (-> "goal_aware_cohorts" and calibrated propensity) on the events it is given,
    clustering each embedding space with the configured spherical k-means. The goal-aware
    embeddings carry the propensity as one coordinate, weighted by `intent_weight`.
    """

    def __init__(self, cfg: Config, goal: Goal, workdir: str | Path, *, behaviour: bool = True,
                 bce_weight: float = 0.0, intent_weight: float = 0.5, n_cutoffs: int = 4) -> None:
        self.cfg, self.goal, self.workdir = cfg, goal, Path(workdir)
        self.behaviour, self.bce_weight, self.intent_weight = behaviour, bce_weight, intent_weight
        self.n_cutoffs = n_cutoffs

    def __call__(self, events: pl.DataFrame, cutoff: datetime) -> Snapshot:
        from embeddings.embed import UserEncoder
        from seqcohort.pipeline import fit_clusters, fit_cohorts
        from training.propensity import PropensityHead, train_goal_aware
        from training.train import train

        snap = Snapshot(user_ids=np.zeros(0, dtype=object))
        if self.behaviour:
            res = train(self.cfg, events, self.workdir / "behaviour", as_of=cutoff)
            enc = UserEncoder(res.bundle, device=self.cfg.trainer.accelerator)
            X = enc.encode(enc.featurize(events, cutoff))
            snap.user_ids = enc.last_user_ids
            snap.embeddings["behaviour"] = X
            km = fit_clusters(self.cfg, X)
            snap.segmentations["ai_behaviour_cohorts"] = km.predict(X)
            snap.info["behaviour_k"] = int(km.k_)
            snap.info["behaviour_train_seconds"] = res.seconds
        res = train_goal_aware(self.cfg, events, self.goal, self.workdir / "goal_aware", as_of=cutoff,
                               bce_weight=self.bce_weight, intent_weight=self.intent_weight,
                               n_cutoffs=self.n_cutoffs)
        enc = UserEncoder(res.bundle, device=self.cfg.trainer.accelerator)
        Xg = enc.encode(enc.featurize(events, cutoff))
        if len(snap.user_ids) and not np.array_equal(snap.user_ids, enc.last_user_ids):
            raise SeqcohortError("behaviour and goal-aware encoders embedded different users.")
        snap.user_ids = enc.last_user_ids
        head = PropensityHead.load(self.workdir / "goal_aware")
        snap.embeddings["goal_aware"] = Xg
        km = fit_cohorts(self.cfg, Xg, intent=head.intent)
        seg = km.predict(Xg)
        snap.segmentations["goal_aware_cohorts"] = seg
        snap.info["goal_aware_k"] = int(km.k_)
        snap.propensity = head.predict(Xg)
        snap.tie_orders["goal_aware_cohorts"] = expected_rate_order(seg, snap.propensity)
        snap.info["goal_aware_train_seconds"] = res.seconds
        snap.info["propensity_head"] = head.meta.get("head")
        snap.info["propensity_calibration"] = head.meta.get("calibration")
        return snap


def expected_rate_order(segments: np.ndarray, propensity: np.ndarray) -> list[str]:
    """Segments by their expected goal rate (mean calibrated propensity of members), best first."""
    segments = np.asarray(segments).astype(str)
    names = sorted(set(segments.tolist()))
    rate = {s: float(np.mean(propensity[segments == s])) for s in names}
    return sorted(names, key=lambda s: (-rate[s], s))


def write_report(report: Any, out: str | Path) -> tuple[Path, Path]:
    from embeddings.fsutil import atomic_write_json, atomic_write_text

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    return (atomic_write_json(d / "report.json", report.to_dict()),
            atomic_write_text(d / "report.md", report.to_markdown()))


# ----------------------------------------------------------------------------- evaluate


@cli.command()
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
    from embeddings.backtest import run_backtest
    from embeddings.goals import parse_goal, warn_unlisted_variants
    from seqcohort import pipeline

    cfg = _cfg(config_path, sets)
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


# ----------------------------------------------------------------------------- rfm


def _write_table(df: pl.DataFrame, out: str | Path) -> Path:
    from embeddings.fsutil import atomic_path

    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise SeqcohortError(f"--out {out}: use a .csv or .parquet file name.")
    with atomic_path(out) as tmp:
        df.write_csv(tmp) if out.suffix == ".csv" else df.write_parquet(tmp)
    return out


def _read_table(path: str | Path, what: str) -> pl.DataFrame:
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


@cli.command()
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
    from embeddings.rfm import MARKETER_ORDER, RFMSegmenter, rfm_features
    from seqcohort import pipeline

    cfg = _cfg(config_path, sets)
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


# ----------------------------------------------------------------------------- experiment


def parse_arms(text: str) -> dict[str, float]:
    """'holdout=0.1,control=0.45,treatment=0.45' -> ordered dict of weights."""
    arms: dict[str, float] = {}
    for part in text.split(","):
        name, sep, w = part.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--arms {text!r}: write name=weight pairs, e.g. holdout=0.1,control=0.45,treatment=0.45.")
        try:
            arms[name.strip()] = float(w)
        except ValueError:
            raise ConfigError(f"--arms: weight of {name.strip()!r} is not a number: {w!r}.") from None
    return arms


@cli.group()
def experiment() -> None:
    """Experiments: assign users to arms, analyse outcomes, plan sample sizes."""


@experiment.command("assign")
@click.option("--users", required=True, type=click.Path(), help="Users: .csv/.parquet with user_id, or .txt.")
@click.option("--name", required=True, help="Experiment name (seeds the hash).")
@click.option("--arms", default="holdout=0.1,control=0.45,treatment=0.45", show_default=True)
@click.option("--salt", default="", help="Extra hash input to re-randomise.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .csv or .parquet.")
@handle_errors
def experiment_assign(users: str, name: str, arms: str, salt: str, out: str) -> None:
    """Deterministic hashed arms: user_id, arm, is_holdout (+ the input's other columns)."""
    from embeddings.experiments import assign_arms

    u = _read_table(users, "--users")
    if "user_id" not in u.columns:
        raise SchemaError(f"--users {users} has no user_id column (columns: {u.columns}).")
    u = u.with_columns(pl.col("user_id").cast(pl.String)).unique("user_id", keep="first", maintain_order=True)
    a = assign_arms(u["user_id"], name, parse_arms(arms), salt)
    extra = [c for c in u.columns if c not in a.columns]
    if extra:
        a = a.join(u.select("user_id", *extra), on="user_id", how="left", maintain_order="left")
    path = _write_table(a, out)
    console.print(f"assigned {a.height:,} users of experiment {name!r} -> {path}")
    for arm, n in a.group_by("arm", maintain_order=True).len().iter_rows():
        console.print(f"  {n:>7,}  {arm}")


@experiment.command("analyze")
@click.option("--assignments", required=True, type=click.Path(), help="user_id, arm [, cohort] (.csv/.parquet).")
@click.option("--outcomes", required=True, type=click.Path(), help="user_id and converted (0/1) or value.")
@click.option("--cohorts", "cohorts_path", type=click.Path(), default=None,
              help="user_id + cohort / cohort_name / segment (e.g. a cohort or RFM export): per-cohort results.")
@click.option("--metric", default=None, help="Outcome column (default: converted, else value).")
@click.option("--control", default="control", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option("--min-users", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--arms", "expected", default=None, help="Planned split for the SRM check, e.g. control=0.5,treatment=0.5.")
@click.option("--planned-n", type=click.IntRange(min=1), default=None, help="Pre-planned users per arm.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write analysis.json and analysis.md here.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def experiment_analyze(assignments: str, outcomes: str, cohorts_path: str | None, metric: str | None, control: str,
                       alpha: float, min_users: int, expected: str | None, planned_n: int | None, out: str | None,
                       as_json: bool) -> None:
    """Per-arm conversion, lift vs control with CI and z-test, per cohort and overall; SRM and peeking checks."""
    from embeddings.experiments import analyze
    from embeddings.fsutil import atomic_write_json, atomic_write_text

    a = _read_table(assignments, "--assignments").with_columns(pl.col("user_id").cast(pl.String))
    o = _read_table(outcomes, "--outcomes").with_columns(pl.col("user_id").cast(pl.String))
    if cohorts_path:
        c = _read_table(cohorts_path, "--cohorts").with_columns(pl.col("user_id").cast(pl.String))
        col = next((x for x in ("cohort", "cohort_name", "segment", "cohort_id") if x in c.columns), None)
        if col is None:
            raise SchemaError(f"--cohorts {cohorts_path} needs a cohort, cohort_name, segment or cohort_id column.")
        a = a.drop("cohort", strict=False).join(
            c.select("user_id", pl.col(col).cast(pl.String).alias("cohort")).unique("user_id"),
            on="user_id", how="left").with_columns(pl.col("cohort").fill_null("(none)"))
    a = a.select([x for x in ("user_id", "arm", "cohort") if x in a.columns])
    res = analyze(a, o, control=control, alpha=alpha, min_users=min_users, metric=metric,
                  expected_split=parse_arms(expected) if expected else None, planned_n_per_arm=planned_n)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, default=str))
    else:
        click.echo(res.to_table())
    if out:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "analysis.json", res.to_dict())
        atomic_write_text(d / "analysis.md", res.to_markdown() + "\n")
        console.print(f"wrote {d / 'analysis.json'} and {d / 'analysis.md'}")


@experiment.command("power")
@click.option("--baseline", required=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Control conversion rate, e.g. 0.1.")
@click.option("--mde", required=True, type=float, help="Minimum detectable effect, absolute (0.02 = +2 points).")
@click.option("--relative", is_flag=True, help="Read --mde as relative to the baseline (0.2 = +20%).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option("--power", "power_", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.8,
              show_default=True)
@click.option("--ratio", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Treatment users per control user.")
@click.option("--n", "n_per_arm", type=click.IntRange(min=1), default=None, help="Also: power with this many per arm.")
@handle_errors
def experiment_power(baseline: float, mde: float, relative: bool, alpha: float, power_: float, ratio: float,
                     n_per_arm: int | None) -> None:
    """Users needed per arm to detect an effect (two-sided two-proportion z-test)."""
    from embeddings.experiments import power, sample_size

    kw: dict[str, Any] = {"mde_rel": mde} if relative else {"mde_abs": mde}
    n_c = sample_size(baseline, **kw, alpha=alpha, power=power_, ratio=ratio)
    delta = baseline * mde if relative else mde
    n_t = int(np.ceil(ratio * n_c))
    console.print(f"baseline {baseline:.2%} -> {baseline + delta:.2%} (effect {delta:+.2%}), alpha {alpha}, "
                  f"power {power_:.0%}: {n_c:,} control and {n_t:,} treatment users ({n_c + n_t:,} in all)")
    if n_per_arm is not None:
        pw = power(n_per_arm, baseline, delta, alpha, ratio=ratio)
        console.print(f"with {n_per_arm:,} control users: power {pw:.1%}")
