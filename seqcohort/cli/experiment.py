"""`experiment assign | analyze | power`: holdouts, A/B readouts and sample sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from embeddings.errors import ConfigError, SchemaError
from seqcohort.cli.evaluate import _read_table, _write_table
from seqcohort.cli.options import console, handle_errors


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


@click.group()
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
    import polars as pl

    from embeddings.evaluation.experiments import assign_arms

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
    import polars as pl

    from embeddings.evaluation.experiments import analyze
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
    from embeddings.evaluation.experiments import power, sample_size

    kw: dict[str, Any] = {"mde_rel": mde} if relative else {"mde_abs": mde}
    n_c = sample_size(baseline, **kw, alpha=alpha, power=power_, ratio=ratio)
    delta = baseline * mde if relative else mde
    n_t = math.ceil(ratio * n_c)
    console.print(f"baseline {baseline:.2%} -> {baseline + delta:.2%} (effect {delta:+.2%}), alpha {alpha}, "
                  f"power {power_:.0%}: {n_c:,} control and {n_t:,} treatment users ({n_c + n_t:,} in all)")
    if n_per_arm is not None:
        pw = power(n_per_arm, baseline, delta, alpha, ratio=ratio)
        console.print(f"with {n_per_arm:,} control users: power {pw:.1%}")

