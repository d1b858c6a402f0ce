"""Tests for embeddings.evaluation.experiments: hashed arms, tests and CIs, SRM, sample size, readout."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
from scipy import stats

from embeddings.errors import ConfigError, SchemaError
from embeddings.evaluation.experiments import (
    PEEKING_WARNING,
    analyze,
    assign_arms,
    bootstrap_ci,
    holm,
    power,
    sample_size,
    srm_check,
    two_proportion_ztest,
    welch_ztest,
)

ARMS = {"holdout": 0.1, "control": 0.45, "treatment": 0.45}
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
# Pinned: BLAKE2b of "welcome-2024:<salt>:<id>"; a change here means every live experiment moves.
EXPECTED = {
    "alice": "control",
    "bob": "control",
    "carol": "treatment",
    "dave": "treatment",
    "erin": "control",
    "frank": "treatment",
    "grace": "treatment",
    "heidi": "control",
}
EXPECTED_SALT_V2 = {
    "alice": "holdout",
    "bob": "treatment",
    "carol": "treatment",
    "dave": "treatment",
    "erin": "control",
    "frank": "control",
    "grace": "control",
    "heidi": "holdout",
}


# --------------------------------------------------------------------------- assignment


def _arms(df: pl.DataFrame) -> dict[str, str]:
    return dict(zip(df["user_id"].to_list(), df["arm"].to_list(), strict=True))


def test_assignment_is_pinned_and_stable() -> None:
    first = assign_arms(NAMES, "welcome-2024", ARMS)
    assert first.columns == ["user_id", "arm", "is_holdout"]
    assert _arms(first) == EXPECTED
    assert first.equals(assign_arms(pl.Series(NAMES), "welcome-2024", ARMS))
    salted = assign_arms(NAMES, "welcome-2024", ARMS, salt="v2")
    assert _arms(salted) == EXPECTED_SALT_V2
    assert salted.filter(pl.col("is_holdout"))["user_id"].to_list() == ["alice", "heidi"]


def test_assignment_is_stable_across_processes() -> None:
    code = textwrap.dedent(
        f"""
        import json
        from embeddings.evaluation.experiments import assign_arms
        a = assign_arms({NAMES!r}, "welcome-2024", {ARMS!r}, salt="v2")
        print(json.dumps(dict(zip(a["user_id"].to_list(), a["arm"].to_list()))))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's own hash() would change
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == EXPECTED_SALT_V2


def test_assignment_balance_and_holdout_share() -> None:
    ids = [f"user-{i}" for i in range(100_000)]
    two = assign_arms(ids, "balance", {"control": 0.5, "treatment": 0.5})
    counts = two.group_by("arm").len().sort("arm")["len"].to_numpy()
    assert stats.chisquare(counts).pvalue > 0.001
    three = assign_arms(ids, "balance", ARMS)
    observed = dict(three.group_by("arm").len().iter_rows())
    expected = [ARMS[a] * len(ids) for a in ARMS]
    assert stats.chisquare([observed[a] for a in ARMS], expected).pvalue > 0.001
    holdout_share = three["is_holdout"].mean()
    assert abs(holdout_share - 0.1) < 0.005  # sd is 0.00095 at n = 100,000
    assert (three.filter(pl.col("is_holdout"))["arm"] == "holdout").all()


def test_adding_users_never_moves_existing_ones() -> None:
    old = assign_arms([f"u{i}" for i in range(5_000)], "grow", ARMS)
    new = assign_arms(
        [f"new{i}" for i in range(3_000)] + [f"u{i}" for i in range(5_000)], "grow", ARMS
    )
    merged = old.join(new, on="user_id", suffix="_new")
    assert merged.height == 5_000
    assert (merged["arm"] == merged["arm_new"]).all()


def test_assignment_errors_and_duplicates(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        assign_arms(NAMES, "x", {"control": 0.5, "treatment": 0.4})
    with pytest.raises(ConfigError, match="> 0"):
        assign_arms(NAMES, "x", {"control": 1.0, "treatment": 0.0})
    with pytest.raises(ConfigError, match="experiment name"):
        assign_arms(NAMES, "", ARMS)
    with pytest.raises(SchemaError, match="null"):
        assign_arms(pl.Series(["a", None]), "x", ARMS)
    with caplog.at_level(logging.WARNING):
        out = assign_arms(["a", "b", "a"], "x", ARMS)
    assert out["user_id"].to_list() == ["a", "b"]
    assert "duplicate" in caplog.text


# --------------------------------------------------------------------------- tests and CIs


def test_two_proportion_ztest_known_values() -> None:
    # 200/1000 vs 250/1000. Pooled p = 0.225, SE = sqrt(.225 * .775 * 2/1000) = 0.0186748,
    # z = 0.05 / 0.0186748 = 2.6774, p = 2 * (1 - Phi(2.6774)) = 0.00742.
    # Unpooled SE = sqrt(.2*.8/1000 + .25*.75/1000) = 0.0186414; CI = 0.05 +- 1.959964 * SE.
    r = two_proportion_ztest(200, 1000, 250, 1000)
    assert r.diff == pytest.approx(0.05)
    assert r.rel_lift == pytest.approx(0.25)
    assert r.se_test == pytest.approx(0.0186748, abs=1e-7)
    assert r.stat == pytest.approx(2.67740, abs=1e-4)
    assert r.p_value == pytest.approx(0.0074196, abs=1e-6)
    assert r.se_ci == pytest.approx(0.0186414, abs=1e-7)
    assert r.ci == pytest.approx((0.013464, 0.086536), abs=1e-6)
    # Katz CI of the risk ratio 1.25: exp(log 1.25 +- 1.96 sqrt(.75/250 + .8/200)) - 1
    assert r.rel_ci == pytest.approx((0.060946, 0.472742), abs=1e-5)
    # no variance at all: no evidence
    assert two_proportion_ztest(0, 500, 0, 500).p_value == 1.0


def test_welch_ztest_matches_scipy_statistic() -> None:
    rng = np.random.default_rng(0)
    c, t = rng.normal(10, 2, 400), rng.normal(10.5, 3, 600)
    r = welch_ztest(c.mean(), c.var(ddof=1), c.size, t.mean(), t.var(ddof=1), t.size)
    ref = stats.ttest_ind(t, c, equal_var=False)
    assert r.stat == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(ref.statistic)))


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []  # a family with no tested comparison


def test_srm_check() -> None:
    skewed = srm_check({"control": 5_500, "treatment": 4_500}, {"control": 0.5, "treatment": 0.5})
    assert skewed.chi2 == pytest.approx(100.0)  # 2 * 500^2 / 5000
    assert skewed.flagged and skewed.p_value < 1e-20
    assert "SRM detected" in skewed.message
    fine = srm_check({"control": 5_050, "treatment": 4_950}, {"control": 0.5, "treatment": 0.5})
    assert not fine.flagged and fine.p_value == pytest.approx(0.3173, abs=1e-4)  # chi2 = 1
    stray = srm_check({"control": 50, "treatment": 50, "oops": 3}, {"control": 1, "treatment": 1})
    assert stray.flagged and "oops" in stray.message


def test_sample_size_and_power() -> None:
    # Pooled-variance (Fleiss, no continuity correction) formula, baseline 0.10 -> 0.12:
    # (1.959964 * sqrt(2 * .11 * .89) + 0.841621 * sqrt(.1 * .9 + .12 * .88))^2 / .02^2 = 3840.9
    assert sample_size(0.10, 0.02) == 3841
    assert sample_size(0.10, mde_rel=0.2) == 3841
    assert sample_size(0.10, -0.02) == 3213  # a drop to 0.08 has less variance (3212.94)
    assert sample_size(0.10, 0.02, power=0.9) == 5142  # 5141.31
    # k = 2: pbar = (.1 + 2 * .12) / 3, s0 = sqrt(pbar qbar 1.5), s1 = sqrt(.09 + .1056 / 2)
    # -> (1.959964 * .388243 + .841621 * .377889)^2 / .0004 = 2910.5 control users
    n2 = sample_size(0.10, 0.02, ratio=2.0)
    assert n2 == 2911
    assert power(3841, 0.10, 0.02) >= 0.8 > power(3840, 0.10, 0.02)
    assert power(n2, 0.10, 0.02, ratio=2.0) >= 0.8 > power(n2 - 1, 0.10, 0.02, ratio=2.0)
    assert power(100_000, 0.10, 0.02) > 0.999
    # both tails count: with no real effect a two-sided test rejects alpha of the time
    assert power(100, 0.10, 1e-9) == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(ConfigError, match="exactly one"):
        sample_size(0.1)
    with pytest.raises(ConfigError, match="exactly one"):
        sample_size(0.1, 0.02, mde_rel=0.2)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        sample_size(0.95, 0.1)


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, 2_000)
    se = 2.0 / np.sqrt(x.size)

    def vec_mean(a: np.ndarray, axis: int = -1) -> np.ndarray:
        return a.mean(axis=axis)

    lo, hi = bootstrap_ci(vec_mean, x, n_boot=2_000, seed=0)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(vec_mean, x, n_boot=2_000, seed=0) == (lo, hi)  # seeded
    # a plain (non-vectorised) statistic gives a similar interval
    lo2, hi2 = bootstrap_ci(lambda a: float(np.mean(a)), x, n_boot=500, seed=0)
    assert lo2 == pytest.approx(lo, abs=0.05) and hi2 == pytest.approx(hi, abs=0.05)
    # two independent groups, different sizes, chunked resampling
    y = rng.normal(6.0, 2.0, 3_000)
    lo3, hi3 = bootstrap_ci(
        lambda a, b, axis=-1: b.mean(axis=axis) - a.mean(axis=axis),
        x,
        y,
        n_boot=400,
        max_elements=100_000,
    )
    d = y.mean() - x.mean()
    assert lo3 < d < hi3
    assert hi3 - lo3 == pytest.approx(2 * 1.96 * np.sqrt(4 / 2_000 + 4 / 3_000), rel=0.2)
    # paired arrays share indices
    lo4, hi4 = bootstrap_ci(
        lambda a, b, axis=-1: (a - b).mean(axis=axis), x, x, n_boot=100, paired=True
    )
    assert lo4 == hi4 == 0.0
    with pytest.raises(ConfigError):
        bootstrap_ci(vec_mean, x, x[:10], paired=True)
    with pytest.raises(ConfigError, match="at least 2"):
        bootstrap_ci(vec_mean, x[:1])
    # a statistic undefined in some resamples gives a NaN bound, not an error
    with_zero = np.r_[0.0, np.ones(9)]  # about 35% of resamples miss the zero
    ci = bootstrap_ci(lambda a, axis=-1: np.where((a == 0).any(axis), 1.0, np.nan), with_zero)
    assert np.isnan(ci).any()


# --------------------------------------------------------------------------- analyze


def _experiment(
    groups: dict[str, tuple[int, int]], cohort: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Assignments and outcomes with `conversions` of `n` users converted per arm."""
    ids, arms, conv = [], [], []
    for arm, (n, x) in groups.items():
        ids += [f"{cohort or ''}{arm}-{i}" for i in range(n)]
        arms += [arm] * n
        conv += [1] * x + [0] * (n - x)
    a = pl.DataFrame({"user_id": ids, "arm": arms})
    if cohort is not None:
        a = a.with_columns(cohort=pl.lit(cohort))
    return a, pl.DataFrame({"user_id": ids, "converted": conv})


def test_analyze_known_values(caplog: pytest.LogCaptureFixture) -> None:
    a, o = _experiment({"control": (1000, 200), "treatment": (1000, 250)})
    with caplog.at_level(logging.WARNING):
        res = analyze(a, o, expected_split={"control": 0.5, "treatment": 0.5})
    c = res.comparison("treatment")
    assert c.status == "ok" and res.metric == "converted" and res.metric_kind == "proportion"
    assert (c.n, c.conversions, c.rate, c.rate_control) == (1000, 250, 0.25, 0.2)
    assert c.abs_lift == pytest.approx(0.05) and c.rel_lift == pytest.approx(0.25)
    assert c.z == pytest.approx(2.6774, abs=1e-4)
    assert c.p_value == pytest.approx(0.0074196, abs=1e-6)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.013464, 0.086536), abs=1e-6)
    assert c.p_holm == pytest.approx(c.p_value) and c.significant
    assert res.srm is not None and not res.srm.flagged
    # the peeking warning is both in the result and in the log
    assert res.peeking_warning == PEEKING_WARNING and "sample_size" in PEEKING_WARNING
    assert "Peeking" in caplog.text
    table = res.to_table()
    assert "treatment" in table and "+5.00%" in table and "Peeking" in table
    md = res.to_markdown()
    assert md.count("\n|") == 3 and "| overall | treatment | 1,000 | 25.00% |" in md
    json.dumps(res.to_dict())  # JSON-friendly


def test_analyze_flags_srm() -> None:
    a, o = _experiment({"control": (5_500, 550), "treatment": (4_500, 450)})
    res = analyze(a, o, expected_split={"control": 0.5, "treatment": 0.5})
    assert res.srm is not None and res.srm.flagged and res.srm.p_value < 0.001
    assert any("SRM detected" in n for n in res.notes)
    assert "SRM detected" in res.to_table()


def test_analyze_marks_insufficient_arms() -> None:
    a, o = _experiment({"control": (1000, 100), "treatment": (1000, 130), "tiny": (50, 10)})
    res = analyze(a, o, min_users=100)
    tiny = res.comparison("tiny")
    assert tiny.status == "insufficient" and "tiny has 50 users" in (tiny.reason or "")
    assert tiny.p_value is None and tiny.abs_lift is None and tiny.ci_low is None
    assert res.comparison("treatment").status == "ok"
    assert "insufficient: tiny has 50 users" in res.to_table()
    # Holm family only holds the tested comparison
    assert res.comparison("treatment").p_holm == pytest.approx(res.comparison("treatment").p_value)


def test_analyze_per_cohort_and_reconciliation() -> None:
    a1, o1 = _experiment({"control": (400, 40), "treatment": (400, 80)}, cohort="bargain")
    a2, o2 = _experiment({"control": (300, 90), "treatment": (30, 9)}, cohort="loyal")
    assignments = pl.concat([a1, a2])
    # 100 assigned users lose their outcome row (20 of them had converted: now counted as 0),
    # 7 outcome rows belong to users who were never assigned.
    lost = [f"bargaintreatment-{i}" for i in range(60, 160)]  # users 0..79 converted
    dropped = o1.filter(pl.col("user_id").is_in(lost))
    stray = pl.DataFrame({"user_id": [f"ghost{i}" for i in range(7)], "converted": [1] * 7})
    outcomes = pl.concat([o1.join(dropped, on="user_id", how="anti"), o2, stray])
    res = analyze(assignments, outcomes, min_users=50)
    rec = res.reconciliation
    assert rec["n_assigned"] == 1130
    assert rec["n_missing_outcome"] == 100
    assert rec["n_outcome_unassigned"] == 7
    assert any("count as not converted" in n for n in res.notes)

    bargain = res.comparison("treatment", scope="bargain")
    assert (bargain.n, bargain.conversions) == (400, 60)  # 80 - 20 lost with the rows
    assert bargain.rate_control == pytest.approx(0.1)
    ref = two_proportion_ztest(40, 400, 60, 400)
    assert bargain.p_value == pytest.approx(ref.p_value)
    loyal = res.comparison("treatment", scope="loyal")
    assert loyal.status == "insufficient"  # 30 treatment users < 50
    overall = res.comparison("treatment")
    assert (overall.n, overall.n_control) == (430, 700)
    assert overall.conversions == 69 and overall.conversions_control == 130
    assert {(x.scope, x.arm) for x in res.arms} >= {("overall", "control"), ("loyal", "treatment")}


def test_analyze_value_metric_and_duplicates() -> None:
    rng = np.random.default_rng(3)
    ids = [f"u{i}" for i in range(2_000)]
    arms = ["control"] * 1_000 + ["treatment"] * 1_000
    values = np.concatenate([rng.exponential(10, 1_000), rng.exponential(12, 1_000)])
    outcomes = pl.DataFrame({"user_id": ids, "value": values})
    # a second order of u0 is added to u0's value
    outcomes = pl.concat([outcomes, pl.DataFrame({"user_id": ["u0"], "value": [5.0]})])
    res = analyze(pl.DataFrame({"user_id": ids, "arm": arms}), outcomes)
    assert res.metric_kind == "mean"
    c = res.comparison("treatment")
    ctrl = values[:1_000].copy()
    ctrl[0] += 5.0
    ref = welch_ztest(
        ctrl.mean(),
        ctrl.var(ddof=1),
        1_000,
        values[1_000:].mean(),
        values[1_000:].var(ddof=1),
        1_000,
    )
    assert c.abs_lift == pytest.approx(ref.diff) and c.p_value == pytest.approx(ref.p_value)
    assert res.reconciliation["n_outcome_rows_merged"] == 1


def test_analyze_input_errors() -> None:
    a, o = _experiment({"control": (200, 20), "treatment": (200, 30)})
    with pytest.raises(ConfigError, match="control arm 'baseline'"):
        analyze(a, o, control="baseline")
    with pytest.raises(SchemaError, match="converted"):
        analyze(a, o.rename({"converted": "y"}))
    conflicting = pl.concat([a, pl.DataFrame({"user_id": ["control-0"], "arm": ["treatment"]})])
    with pytest.raises(SchemaError, match="more than one arm"):
        analyze(conflicting, o)
    with pytest.raises(SchemaError, match="0/1"):
        analyze(a, o.with_columns(pl.col("converted") * 2), kind="proportion")
    res = analyze(a, o, planned_n_per_arm=1_000)
    assert any("Interim look" in n for n in res.notes)


def test_analyze_cohort_without_control_and_strict_json() -> None:
    a1, o1 = _experiment({"control": (200, 20), "treatment": (200, 30)}, cohort="big")
    a2, o2 = _experiment({"treatment": (150, 15)}, cohort="solo")
    nulls = pl.DataFrame(
        {"user_id": [None, "bigcontrol-0"], "converted": [1, None]},
        schema={"user_id": pl.String, "converted": pl.Int64},
    )
    res = analyze(pl.concat([a1, a2]), pl.concat([o1, o2, nulls]))
    solo = res.comparison("treatment", scope="solo")
    assert solo.status == "insufficient" and "control has 0 users" in (solo.reason or "")
    assert solo.rate_control is None and solo.rate == pytest.approx(0.1)
    assert res.reconciliation["n_outcome_rows_no_user"] == 1
    assert res.reconciliation["n_outcome_rows_null"] == 1
    json.dumps(res.to_dict(), allow_nan=False)
    with pytest.raises(KeyError):
        res.comparison("treatment", scope="nowhere")
