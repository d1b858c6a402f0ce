"""CLI: `rfm` export, `experiment assign/analyze/power`, `evaluate` backtest and `run --goal`, end to end."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from seqcohort.cli import cli
from tests.conftest import TINY_SETS, make_events

FAST = [*TINY_SETS, "trainer.max_steps=15", "trainer.batch_size=32", "cluster.k_min=2", "cluster.k_max=4"]


def _sets(pairs: list[str]) -> list[str]:
    return [x for p in pairs for x in ("--set", p)]


def invoke(*args: str) -> str:
    res = CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def events_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ev") / "events.parquet"
    make_events(160, seed=4).write_parquet(p)
    return p


def test_rfm_export_writes_segments(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rfm.csv"
    text = invoke("rfm", "--events", str(events_file), "--out", str(out), "--as-of", "2025-05-01")
    df = pl.read_csv(out)
    assert df.columns == ["user_id", "r", "f", "m", "segment"]
    assert df.height > 100 and df["r"].is_between(1, 5).all()
    assert "RFM segments" in text
    bad = CliRunner().invoke(cli, ["rfm", "--events", str(events_file), "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and "csv or .parquet" in bad.output


def test_experiment_assign_analyze_power(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("\n".join(f"u{i}" for i in range(3000)))
    assign = tmp_path / "assign.parquet"
    invoke("experiment", "assign", "--users", str(users), "--name", "spring", "--out", str(assign))
    a = pl.read_parquet(assign)
    assert a.height == 3000 and set(a["arm"]) == {"holdout", "control", "treatment"}
    assert a.filter(pl.col("is_holdout"))["arm"].unique().to_list() == ["holdout"]
    # deterministic: the same name gives the same arms
    invoke("experiment", "assign", "--users", str(users), "--name", "spring", "--out", str(tmp_path / "b.csv"))
    assert pl.read_csv(tmp_path / "b.csv", schema_overrides={"user_id": pl.String})["arm"].to_list() == a["arm"].to_list()

    conv = a.with_columns(converted=((pl.col("user_id").str.slice(1).cast(pl.Int64) % 10) < 2).cast(pl.Int8))
    outcomes, cohorts = tmp_path / "outcomes.csv", tmp_path / "cohorts.csv"
    conv.select("user_id", "converted").write_csv(outcomes)
    conv.select("user_id", cohort_name=pl.when(pl.col("converted") == 1).then(pl.lit("A")).otherwise(pl.lit("B"))
                ).write_csv(cohorts)
    text = invoke("experiment", "analyze", "--assignments", str(assign), "--outcomes", str(outcomes),
                  "--cohorts", str(cohorts), "--arms", "holdout=0.1,control=0.45,treatment=0.45",
                  "--out", str(tmp_path / "an"))
    assert "treatment" in text and "Peeking" in text and "sample ratio" in text.lower(), text
    d = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert {c["scope"] for c in d["comparisons"]} == {"overall", "A", "B"}

    text = invoke("experiment", "power", "--baseline", "0.1", "--mde", "0.02", "--n", "3841")
    assert "3,841 control" in text and "power 80" in text
    bad = CliRunner().invoke(cli, ["experiment", "assign", "--users", str(users), "--name", "x",
                                   "--arms", "a=0.5,b=0.6", "--out", str(tmp_path / "c.csv")])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_evaluate_backtest_end_to_end(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    text = invoke("evaluate", "--events", str(events_file), "--cutoff", "2025-04-01", "--goal", "purchase",
                  "--goal-alias", "cart", "--horizon", "30d", "--boot", "50", "--intent-weight", "1", "--out", str(out),
                  *_sets(FAST))
    rep = json.loads((out / "report.json").read_text())
    # the alias counts as the goal in the scored outcomes (and in the labels the head was trained on)
    assert rep["goal"] == "purchase or cart within 30 days"
    from embeddings.evaluation.goals import make_labels, parse_goal

    ev = pl.read_parquet(events_file)
    y = make_labels(ev, parse_goal("purchase", "30d", ["cart"]), cutoffs=[datetime(2025, 4, 1)])["label"]
    assert rep["n_positive"] == int(y.sum()) > int(
        make_labels(ev, parse_goal("purchase", "30d"), cutoffs=[datetime(2025, 4, 1)])["label"].sum())
    methods = [r["method"] for r in rep["targeting"]]
    assert methods == ["rfm_segments", "ai_behaviour_cohorts", "goal_aware_cohorts", "propensity_score",
                       "ceiling_rfm_lr_on_outcomes"]
    assert {"rfm_features", "embeddings:behaviour", "embeddings:goal_aware+rfm"} <= set(rep["probe"])
    assert 0 <= rep["calibration"]["brier"] <= 1
    assert (out / "report.md").read_text().startswith("# Backtest report")
    assert "Targeting at 20% budget" in text
    bad = CliRunner().invoke(cli, ["evaluate", "--events", str(events_file), "--cutoff", "2025-05-30",
                                   "--goal", "purchase", "--horizon", "30d"])
    assert bad.exit_code == 2 and "horizon" in bad.output
    bad = CliRunner().invoke(cli, ["run", "--events", str(events_file), "--goal-alias", "cart"])
    assert bad.exit_code == 2 and "--goal-alias needs --goal" in bad.output


@pytest.mark.slow
def test_run_with_goal_adds_propensity_and_expected_rates(events_file: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    text = invoke("run", "--events", str(events_file), "-w", str(ws), "--goal", "purchase", "--horizon", "30d",
                  *_sets(FAST))
    cur = ws / "current"
    a = pl.read_parquet(cur / "assignments.parquet")
    assert "propensity" in a.columns and a["propensity"].is_between(0, 1).all() and a["propensity"].null_count() == 0
    cs = json.loads((cur / "cohorts.json").read_text())
    rates = [c["profile"]["extra"]["goal"]["expected_rate"] for c in cs["cohorts"]]
    assert all(0 < r < 1 for r in rates), rates
    assert "expected purchase within 30 days rate" in " ".join(text.split())
    assert (cur / "encoder" / "propensity.json").is_file()
    # the goal-aware embedding carries the propensity as its last coordinate
    from embeddings.model.embed import read_embeddings
    from embeddings.model.intent import IntentConfig, propensity_from_embedding

    uids, X = read_embeddings(cur / "embeddings.parquet")
    intent = IntentConfig(**json.loads((cur / "encoder" / "propensity.json").read_text())["embedding"])
    p = pl.DataFrame({"user_id": uids.astype(str), "p": propensity_from_embedding(X, intent)})
    joined = a.join(p, on="user_id")
    assert joined.height == a.height
    np.testing.assert_allclose(joined["p"].to_numpy(), joined["propensity"].to_numpy(), rtol=1e-4, atol=1e-6)
    # cohorts are intent tiers x behaviour: names carry the tier, and the highest tier holds the likeliest users
    from embeddings.cohorts.tiers import tier_labels

    labels = tier_labels(5)
    prefixes = [t + s for t in labels for s in (" · ", ", purchase in the last 30 days · ",
                                                 ", no purchase in the last 30 days · ")]
    assert all(c["name"].startswith(tuple(prefixes)) for c in cs["cohorts"])
    if cs["meta"]["tiers"]["split_recent"]:  # cut by "reached the goal in the last 30 days" too: cohorts are pure
        from embeddings.model.intent import recent_of

        rec = pl.DataFrame({"user_id": uids.astype(str), "recent": recent_of(X, intent)}).join(a, on="user_id")
        flags = dict(enumerate(cs["meta"]["tiers"]["cohort_recent"]))
        assert (rec["recent"] == rec["cohort_id"].replace_strict(flags)).all()
    tier_of = dict(enumerate(cs["meta"]["tiers"]["cohort_tier"]))
    per_tier = (joined.with_columns(tier=pl.col("cohort_id").replace_strict(tier_of)).group_by("tier")
                .agg(lo=pl.col("propensity").min(), hi=pl.col("propensity").max()).sort("tier"))
    assert per_tier.height == 5
    assert (per_tier["lo"].to_numpy()[:-1] >= per_tier["hi"].to_numpy()[1:] - 1e-6).all()
    # assigning the same users afresh (as serving does) gives the stored cohorts
    out = tmp_path / "again.parquet"
    invoke("assign", "--events", str(events_file), "--out", str(out), "-w", str(ws))
    again = pl.read_parquet(out).join(a.select("user_id", pl.col("cohort_id").alias("stored")), on="user_id")
    assert again.height == a.height and (again["cohort_id"] == again["stored"]).all()
