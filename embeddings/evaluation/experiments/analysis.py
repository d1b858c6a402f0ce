"""Analyse an experiment: per arm vs control, overall and per cohort, with the checks that keep
an A/B readout honest (sample ratio mismatch, minimum sample, peeking, unmatched users).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl

from embeddings.errors import ConfigError, SchemaError
from embeddings.evaluation.experiments.stats import (
    DiffResult,
    SRMResult,
    holm,
    srm_check,
    two_proportion_ztest,
    welch_ztest,
)

logger = logging.getLogger(__name__)

__all__ = ["AnalysisResult", "ArmSummary", "Comparison", "PEEKING_WARNING", "analyze"]

OVERALL = "overall"
NO_COHORT = "(none)"

PEEKING_WARNING = (
    "Peeking: every look at these results is another chance for noise to cross the significance "
    "line. Checking repeatedly and stopping the first time p < alpha inflates the false-positive "
    "rate far above alpha (about 25% instead of 5% after 20 looks). Fix the sample size before the "
    "experiment with sample_size(baseline_rate, mde_abs, alpha, power) and read the result "
    "once, when every arm has reached it; treat earlier looks as monitoring only."
)


@dataclass
class ArmSummary:
    """Users, conversions (sum of the metric) and rate (mean of the metric) of one arm in a scope."""

    scope: str  # "overall" or a cohort name
    arm: str
    n: int
    conversions: float  # sum of the metric: conversions for 0/1 outcomes, total value otherwise
    rate: float | None  # mean of the metric per user; None without users


@dataclass
class Comparison:
    """One arm against the control within one scope."""

    scope: str  # "overall" or a cohort name
    arm: str
    control: str
    n: int
    n_control: int
    conversions: float
    conversions_control: float
    rate: float | None  # None for an arm without users
    rate_control: float | None
    status: Literal["ok", "insufficient"]
    reason: str | None = None  # why a comparison is insufficient
    abs_lift: float | None = None  # rate - rate_control
    rel_lift: float | None = None  # abs_lift / rate_control
    ci_low: float | None = None  # (1 - alpha) CI of abs_lift
    ci_high: float | None = None
    rel_ci_low: float | None = None  # CI of rel_lift (proportions; Katz log method)
    rel_ci_high: float | None = None
    z: float | None = None
    p_value: float | None = None  # two-sided, unadjusted
    p_holm: float | None = None  # Holm-adjusted within its family (overall, or all cohorts)
    significant: bool | None = None  # p_holm < alpha


@dataclass
class AnalysisResult:
    """Everything an experiment readout needs; render with to_table / to_markdown / to_dict."""

    metric: str
    metric_kind: Literal["proportion", "mean"]
    control: str
    alpha: float
    min_users: int
    arms: list[ArmSummary]
    comparisons: list[Comparison]
    srm: SRMResult | None
    reconciliation: dict[str, int]  # how assignments and outcomes matched up
    notes: list[str] = field(default_factory=list)
    peeking_warning: str = PEEKING_WARNING

    def comparison(self, arm: str, scope: str = OVERALL) -> Comparison:
        """The comparison of `arm` vs control in `scope` ("overall" or a cohort)."""
        for c in self.comparisons:
            if c.arm == arm and c.scope == scope:
                return c
        raise KeyError(f"No comparison for arm {arm!r} in scope {scope!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the whole result."""
        return asdict(self)

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        pct = self.metric_kind == "proportion"
        conf = f"{1 - self.alpha:.0%} CI"
        what = "rate" if pct else "mean"
        header = [
            "scope",
            "arm",
            "n",
            what,
            f"ctrl {what}",
            "abs lift",
            "rel lift",
            conf,
            "p",
            "p holm",
            "status",
        ]
        rows = []
        for c in self.comparisons:
            ok = c.status == "ok"
            rows.append(
                [
                    c.scope,
                    c.arm,
                    f"{c.n:,}",
                    _fmt(c.rate, pct),
                    _fmt(c.rate_control, pct),
                    _fmt(c.abs_lift, pct, signed=True) if ok else "-",
                    _fmt(c.rel_lift, True, signed=True) if ok else "-",
                    f"[{_fmt(c.ci_low, pct, signed=True)}, {_fmt(c.ci_high, pct, signed=True)}]"
                    if ok
                    else "-",
                    _fmt_p(c.p_value),
                    _fmt_p(c.p_holm),
                    ("significant" if c.significant else "n.s.")
                    if ok
                    else f"insufficient: {c.reason}",
                ]
            )
        return header, rows

    def _preamble(self) -> list[str]:
        rec = self.reconciliation
        lines = [
            f"metric: {self.metric} ({self.metric_kind}), control arm: {self.control}, "
            f"alpha: {self.alpha}, min users per arm: {self.min_users}",
            f"users: {rec['n_assigned']:,} assigned, {rec['n_missing_outcome']:,} of them without "
            f"an outcome row (counted as 0), {rec['n_outcome_unassigned']:,} outcome rows for "
            "unassigned users (excluded)",
            self.srm.message if self.srm is not None else "SRM: not checked (no expected_split).",
        ]
        return lines

    def to_table(self) -> str:
        """Plain-text report: preamble, an aligned comparison table, notes and the peeking warning."""
        header, rows = self._rows()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        table = [fmt.format(*header), "  ".join("-" * w for w in widths)]
        table += [fmt.format(*r) for r in rows]
        table = [line.rstrip() for line in table]
        notes = [f"note: {n}" for n in self.notes]
        return "\n".join([*self._preamble(), "", *table, "", *notes, self.peeking_warning])

    def to_markdown(self) -> str:
        """Markdown report (a bulleted preamble, a table, notes and the peeking warning)."""
        header, rows = self._rows()
        lines = [f"- {line}" for line in self._preamble()]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        for note in self.notes:
            lines += ["", f"> **Note:** {note}"]
        lines += ["", f"> **Warning:** {self.peeking_warning}"]
        return "\n".join(lines)


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _fmt(x: float | None, pct: bool, *, signed: bool = False) -> str:
    if x is None:
        return "-"
    sign = "+" if signed else ""
    return f"{x:{sign}.2%}" if pct else f"{x:{sign}.4g}"


def _prepare_assignments(assignments: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Canonical (user_id, arm, cohort) with duplicate rows removed; conflicts raise."""
    missing = [c for c in ("user_id", "arm") if c not in assignments.columns]
    if missing:
        raise SchemaError(
            f"assignments are missing column(s) {missing}; got {assignments.columns}."
        )
    cols = [pl.col("user_id").cast(pl.String), pl.col("arm").cast(pl.String)]
    if "cohort" in assignments.columns:
        cols.append(pl.col("cohort").cast(pl.String).fill_null(NO_COHORT))
    a = assignments.select(cols)
    for col in ("user_id", "arm"):
        if a[col].null_count():
            raise SchemaError(f"assignments have {a[col].null_count()} null {col!r} value(s).")
    deduped = a.unique(maintain_order=True)
    n_dupes = a.height - deduped.height
    conflicted = deduped.filter(pl.col("user_id").is_duplicated())["user_id"].unique()
    if conflicted.len():
        raise SchemaError(
            f"{conflicted.len()} user(s) appear in more than one arm or cohort, e.g. "
            f"{conflicted.head(5).to_list()}; each user must have exactly one assignment."
        )
    return deduped, n_dupes


def _prepare_outcomes(
    outcomes: pl.DataFrame, metric: str | None, kind: str
) -> tuple[pl.DataFrame, str, Literal["proportion", "mean"], dict[str, int]]:
    if kind not in ("auto", "proportion", "mean"):
        raise ConfigError(f"kind must be 'auto', 'proportion' or 'mean', got {kind!r}.")
    if "user_id" not in outcomes.columns:
        raise SchemaError(f"outcomes need a 'user_id' column; got {outcomes.columns}.")
    if metric is None:
        metric = next((c for c in ("converted", "value") if c in outcomes.columns), None)
        if metric is None:
            raise SchemaError(
                "outcomes need a 'converted' (0/1) or 'value' column, or pass metric=<column>; "
                f"got {outcomes.columns}."
            )
    elif metric not in outcomes.columns:
        raise SchemaError(f"outcomes have no metric column {metric!r}; got {outcomes.columns}.")
    o = outcomes.select(
        pl.col("user_id").cast(pl.String), pl.col(metric).cast(pl.Float64).alias("y")
    )
    n_no_user = o["user_id"].null_count()
    o = o.drop_nulls("user_id").with_columns(pl.col("y").fill_nan(None))
    n_null = o["y"].null_count()
    o = o.drop_nulls("y")
    binary = bool(o["y"].is_in([0.0, 1.0]).all())
    if kind == "auto":
        kind = "proportion" if binary else "mean"
    elif kind == "proportion" and not binary:
        raise SchemaError(f"metric {metric!r} has values other than 0/1; use kind='mean'.")
    n_rows = o.height
    # One outcome per user: converted if any row converted; values add up (e.g. several orders).
    o = o.group_by("user_id").agg(pl.col("y").max() if kind == "proportion" else pl.col("y").sum())
    counts = {
        "n_outcome_rows_no_user": n_no_user,
        "n_outcome_rows_null": n_null,
        "n_outcome_rows_merged": n_rows - o.height,
    }
    return o, metric, kind, counts  # type: ignore[return-value]


def _compare(
    scope: str,
    arm: str,
    control: str,
    s: dict[str, dict[str, float]],
    *,
    kind: str,
    alpha: float,
    min_users: int,
) -> Comparison:
    t, c = s[arm], s[control]
    need = max(min_users, 2 if kind == "mean" else 1)  # a variance needs two users
    base = Comparison(
        scope=scope,
        arm=arm,
        control=control,
        n=int(t["n"]),
        n_control=int(c["n"]),
        conversions=t["total"],
        conversions_control=c["total"],
        rate=t["mean"] if t["n"] else None,
        rate_control=c["mean"] if c["n"] else None,
        status="ok",
    )
    short = [
        f"{name} has {int(x['n'])} users" for name, x in ((arm, t), (control, c)) if x["n"] < need
    ]
    if short:
        base.status = "insufficient"
        base.reason = "; ".join(short) + f" (< min_users={need})"
        return base
    r: DiffResult
    if kind == "proportion":
        r = two_proportion_ztest(
            int(c["total"]), int(c["n"]), int(t["total"]), int(t["n"]), alpha=alpha
        )
    else:
        r = welch_ztest(
            c["mean"], c["var"], int(c["n"]), t["mean"], t["var"], int(t["n"]), alpha=alpha
        )
    base.abs_lift, base.rel_lift = r.diff, r.rel_lift
    base.ci_low, base.ci_high = r.ci
    if r.rel_ci is not None:
        base.rel_ci_low, base.rel_ci_high = r.rel_ci
    base.z, base.p_value = r.stat, r.p_value
    return base


def analyze(
    assignments: pl.DataFrame,
    outcomes: pl.DataFrame,
    *,
    control: str = "control",
    alpha: float = 0.05,
    min_users: int = 100,
    expected_split: Mapping[str, float] | None = None,
    metric: str | None = None,
    kind: Literal["auto", "proportion", "mean"] = "auto",
    planned_n_per_arm: int | None = None,
) -> AnalysisResult:
    """Compare every arm with the control, overall and within each cohort.

    Args:
        assignments: user_id, arm and optionally cohort (one row per user).
        outcomes: user_id and the metric: `converted` (0/1), `value`, or the column `metric`.
            Several rows of one user are merged (max for 0/1, sum for values).
        control: the arm the others are compared with.
        alpha: two-sided significance level and 1 - CI level.
        min_users: comparisons where either arm has fewer users are marked "insufficient" and
            get no lift, CI or p-value.
        expected_split: planned arm weights (e.g. the dict given to assign_arms) for the SRM
            check; without it SRM is not checked.
        kind: "proportion" (two-proportion z-test), "mean" (Welch z-test) or "auto" (0/1 data
            is a proportion).
        planned_n_per_arm: the pre-planned sample size; arms below it get an interim-look note.

    Assigned users without an outcome row count as 0 (not converted); outcome rows of users who
    were never assigned are excluded. Both counts are reported in `reconciliation`.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}.")
    a, n_dupes = _prepare_assignments(assignments)
    arm_names = a["arm"].unique(maintain_order=True).to_list()
    if control not in arm_names:
        raise ConfigError(
            f"The control arm {control!r} is not in the assignments' arms {arm_names}."
        )
    if expected_split is not None:
        arm_names = [x for x in expected_split if x in arm_names] + [
            x for x in arm_names if x not in expected_split
        ]
    arm_names = [control] + [x for x in arm_names if x != control]
    o, metric, metric_kind, counts = _prepare_outcomes(outcomes, metric, kind)

    joined = a.join(o, on="user_id", how="left")
    n_missing = int(joined["y"].null_count())
    joined = joined.with_columns(pl.col("y").fill_null(0.0))
    reconciliation = {
        "n_assigned": a.height,
        "n_assignment_rows_duplicated": n_dupes,
        "n_with_outcome": a.height - n_missing,
        "n_missing_outcome": n_missing,
        "n_outcome_unassigned": int(o.join(a, on="user_id", how="anti").height),
        **counts,
    }

    has_cohort = "cohort" in a.columns
    if has_cohort and (a["cohort"] == OVERALL).any():
        raise SchemaError(f"A cohort is named {OVERALL!r}, which is reserved; rename it.")
    scoped = [joined.with_columns(scope=pl.lit(OVERALL))]
    if has_cohort:
        scoped.append(joined.with_columns(scope=pl.col("cohort")))
    stats_df = (
        pl.concat([s.select("scope", "arm", "y") for s in scoped])
        .group_by("scope", "arm")
        .agg(
            n=pl.len(),
            total=pl.col("y").sum(),
            mean=pl.col("y").mean(),
            var=pl.col("y").var(ddof=1).fill_null(0.0),
        )
    )
    scopes = [OVERALL] + (sorted(a["cohort"].unique().to_list()) if has_cohort else [])
    table: dict[str, dict[str, dict[str, float]]] = {sc: {} for sc in scopes}
    for row in stats_df.iter_rows(named=True):
        table[row["scope"]][row["arm"]] = row
    empty = {"n": 0, "total": 0.0, "mean": float("nan"), "var": 0.0}

    arms_out: list[ArmSummary] = []
    comparisons: list[Comparison] = []
    for sc in scopes:
        s = {arm: table[sc].get(arm, empty) for arm in arm_names}
        arms_out += [
            ArmSummary(
                sc, arm, int(s[arm]["n"]), s[arm]["total"], s[arm]["mean"] if s[arm]["n"] else None
            )
            for arm in arm_names
        ]
        comparisons += [
            _compare(sc, arm, control, s, kind=metric_kind, alpha=alpha, min_users=min_users)
            for arm in arm_names[1:]
        ]
    for family in (
        [c for c in comparisons if c.scope == OVERALL],
        [c for c in comparisons if c.scope != OVERALL],
    ):
        tested = [c for c in family if c.p_value is not None]
        for c, p_adj in zip(tested, holm([c.p_value for c in tested]), strict=True):  # type: ignore[misc]
            c.p_holm, c.significant = p_adj, p_adj < alpha

    srm = None
    if expected_split is not None:
        observed = {arm: int(table[OVERALL].get(arm, empty)["n"]) for arm in arm_names}
        srm = srm_check(observed, expected_split)
        if srm.flagged:
            logger.warning("analyze: %s", srm.message)

    notes = _notes(reconciliation, comparisons, metric_kind, planned_n_per_arm, arms_out, srm)
    logger.warning("analyze: %s", PEEKING_WARNING)
    return AnalysisResult(
        metric=metric,
        metric_kind=metric_kind,
        control=control,
        alpha=alpha,
        min_users=min_users,
        arms=arms_out,
        comparisons=comparisons,
        srm=srm,
        reconciliation=reconciliation,
        notes=notes,
    )


def _notes(
    rec: dict[str, int],
    comparisons: Sequence[Comparison],
    kind: str,
    planned_n_per_arm: int | None,
    arms: Sequence[ArmSummary],
    srm: SRMResult | None,
) -> list[str]:
    what = "not converted" if kind == "proportion" else "a value of 0"
    notes = [
        f"{rec['n_missing_outcome']:,} assigned users have no outcome row and count as {what}; "
        f"{rec['n_outcome_unassigned']:,} users with outcomes were never assigned and are excluded."
    ]
    if rec["n_outcome_rows_no_user"]:
        notes.append(
            f"{rec['n_outcome_rows_no_user']:,} outcome rows had no user_id and were ignored."
        )
    if rec["n_outcome_rows_null"]:
        notes.append(
            f"{rec['n_outcome_rows_null']:,} outcome rows had a null metric and were ignored."
        )
    if rec["n_outcome_rows_merged"]:
        notes.append(
            f"{rec['n_outcome_rows_merged']:,} extra outcome rows were merged into their user's."
        )
    if rec["n_assignment_rows_duplicated"]:
        notes.append(
            f"{rec['n_assignment_rows_duplicated']:,} duplicate assignment rows were dropped."
        )
    insufficient = [c for c in comparisons if c.status == "insufficient"]
    if insufficient:
        notes.append(f"{len(insufficient)} comparison(s) have too few users and were not tested.")
    if srm is not None and srm.flagged:
        notes.append(srm.message)
    if planned_n_per_arm is not None:
        short = [
            f"{x.arm} {x.n / planned_n_per_arm:.0%}"
            for x in arms
            if x.scope == OVERALL and x.n < planned_n_per_arm
        ]
        if short:
            notes.append(
                f"Interim look: arms below the planned {planned_n_per_arm:,} users per arm "
                f"({', '.join(short)}); do not stop on this result."
            )
    notes.append(
        "Significance uses Holm-adjusted p-values within each family (overall; all cohorts)."
    )
    return notes
