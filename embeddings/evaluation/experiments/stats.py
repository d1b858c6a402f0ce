"""Statistical tests for A/B analysis, on scipy.stats and statsmodels: two-proportion z-test,
Welch z-test, SRM, sample size, power, Holm adjustment and a percentile bootstrap.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    samplesize_proportions_2indep_onetail,
    test_proportions_2indep,
)

from embeddings.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "SRM_THRESHOLD",
    "SRMResult",
    "DiffResult",
    "bootstrap_ci",
    "holm",
    "power",
    "sample_size",
    "srm_check",
    "two_proportion_ztest",
    "welch_ztest",
]

#: p-value below which a sample ratio mismatch is flagged (the usual, deliberately strict bar).
SRM_THRESHOLD = 1e-3


@dataclass(frozen=True)
class DiffResult:
    """Difference (treatment - control) with its test statistic, p-value and CI."""

    diff: float  # absolute lift
    rel_lift: float | None  # diff / control mean; None when the control mean is 0
    rel_ci: tuple[float, float] | None  # CI of the relative lift (proportions only)
    stat: float  # z statistic
    p_value: float  # two-sided
    ci: tuple[float, float]  # (1 - alpha) CI of diff
    se_test: float  # SE used by the test (pooled for proportions)
    se_ci: float  # SE used by the CI (unpooled)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}.")


def _z(alpha: float) -> float:
    _check_alpha(alpha)
    return float(stats.norm.ppf(1 - alpha / 2))


def two_proportion_ztest(
    x_control: int, n_control: int, x_treat: int, n_treat: int, *, alpha: float = 0.05
) -> DiffResult:
    """Two-sided pooled z-test of p_treat - p_control, with Wald and Katz log-ratio CIs."""
    if n_control <= 0 or n_treat <= 0:
        raise ConfigError(f"Both groups need users (n_control={n_control}, n_treat={n_treat}).")
    for x, n in ((x_control, n_control), (x_treat, n_treat)):
        if not 0 <= x <= n:
            raise ConfigError(f"Conversions must be between 0 and n, got {x} of {n}.")
    zc = _z(alpha)
    pc, pt = x_control / n_control, x_treat / n_treat
    diff = pt - pc
    counts = (x_treat, n_treat, x_control, n_control)  # statsmodels compares sample 1 - sample 2
    if 0 < x_control + x_treat < n_control + n_treat:
        # Pooled, as the null has one rate. The score test of diff = 0 without the small-sample
        # correction is exactly the pooled z-test and, unlike proportions_ztest, reports the
        # variance it used. It also computes the risk and odds ratios, which divide by zero at
        # a rate of 0 or 1.
        with np.errstate(divide="ignore", invalid="ignore"):
            test = test_proportions_2indep(
                *counts, value=0, method="score", compare="diff", correction=False
            )
        z, p, se_test = float(test.statistic), float(test.pvalue), math.sqrt(test.variance)
    else:
        # All-or-nothing data has no variance: there is no evidence of a difference.
        z, p, se_test = 0.0, 1.0, 0.0
    # Unpooled (Wald): under the alternative the rates differ.
    lo, hi = confint_proportions_2indep(*counts, method="wald", compare="diff", alpha=alpha)
    rel_ci = None
    if x_control > 0 and x_treat > 0:
        rr_lo, rr_hi = confint_proportions_2indep(
            *counts, method="log", compare="ratio", alpha=alpha
        )
        rel_ci = (float(rr_lo) - 1, float(rr_hi) - 1)
    return DiffResult(
        diff=diff,
        rel_lift=diff / pc if pc > 0 else None,
        rel_ci=rel_ci,
        stat=z,
        p_value=p,
        ci=(float(lo), float(hi)),
        se_test=se_test,
        se_ci=float(hi - lo) / (2 * zc),
    )


def welch_ztest(
    mean_control: float,
    var_control: float,
    n_control: int,
    mean_treat: float,
    var_treat: float,
    n_treat: int,
    *,
    alpha: float = 0.05,
) -> DiffResult:
    """Welch z-test of mean_treat - mean_control for a continuous outcome, from summaries.

    SE = sqrt(s_c^2 / n_c + s_t^2 / n_t) with sample variances (ddof=1). The normal
    approximation is what A/B tools use at the sample sizes an analysis allows (min_users).
    """
    if n_control < 2 or n_treat < 2:
        raise ConfigError("The mean difference test needs at least 2 users per group.")
    zc = _z(alpha)
    se = math.sqrt(var_control / n_control + var_treat / n_treat)
    diff = mean_treat - mean_control
    z = diff / se if se > 0 else 0.0
    return DiffResult(
        diff=diff,
        rel_lift=diff / mean_control if mean_control != 0 else None,
        rel_ci=None,
        stat=z,
        p_value=float(2 * stats.norm.sf(abs(z))),
        ci=(diff - zc * se, diff + zc * se),
        se_test=se,
        se_ci=se,
    )


@dataclass(frozen=True)
class SRMResult:
    """Sample ratio mismatch check: chi-square goodness of fit of arm counts to the plan."""

    observed: dict[str, int]
    expected: dict[str, float]  # expected counts
    chi2: float
    p_value: float
    flagged: bool  # p < threshold, or users in arms the plan does not have
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def srm_check(
    observed: Mapping[str, int],
    expected_split: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SRMResult:
    """Chi-square test of observed arm counts against the planned split (weights, any scale)."""
    total_w = float(sum(expected_split.values()))
    if not expected_split or any(not w > 0 for w in expected_split.values()):
        raise ConfigError(f"expected_split needs positive weights, got {dict(expected_split)}.")
    unexpected = {a: int(n) for a, n in observed.items() if a not in expected_split and n > 0}
    arms = list(expected_split)
    obs = np.array([int(observed.get(a, 0)) for a in arms], dtype=np.float64)
    n = obs.sum()
    exp = np.array([expected_split[a] / total_w for a in arms]) * n
    if n == 0:
        chi2, p = 0.0, 1.0
    elif len(arms) == 1:
        chi2, p = 0.0, 1.0  # one planned arm: every user belongs in it
    else:
        res = stats.chisquare(obs, f_exp=exp)
        chi2, p = float(res.statistic), float(res.pvalue)
    flagged = p < threshold or bool(unexpected)
    shares = (
        ", ".join(f"{a} {o / n:.2%} vs {e / n:.2%}" for a, o, e in zip(arms, obs, exp, strict=True))
        if n
        else ""
    )
    if unexpected:
        message = f"SRM: users in arms not in the plan: {unexpected}. Check the assignment."
    elif flagged:
        message = (
            f"SRM detected (chi2={chi2:.2f}, p={p:.2g} < {threshold:g}): observed {shares}. "
            "The arms are not what randomisation promised (assignment bug, bot filtering, "
            "logging loss); do not trust the lift until this is explained."
        )
    else:
        message = f"No sample ratio mismatch (chi2={chi2:.2f}, p={p:.3g}): {shares}."
    return SRMResult(
        observed={a: int(observed.get(a, 0)) for a in arms} | unexpected,
        expected=dict(zip(arms, exp.tolist(), strict=True)),
        chi2=chi2,
        p_value=p,
        flagged=flagged,
        threshold=threshold,
        message=message,
    )


def _resolve_mde(baseline: float, mde_abs: float | None, mde_rel: float | None) -> float:
    if (mde_abs is None) == (mde_rel is None):
        raise ConfigError("Give exactly one of mde_abs (e.g. 0.02) or mde_rel (e.g. 0.2).")
    if not 0 < baseline < 1:
        raise ConfigError(f"baseline rate must be in (0, 1), got {baseline}.")
    delta = mde_abs if mde_abs is not None else baseline * float(mde_rel)  # type: ignore[arg-type]
    if delta == 0 or not 0 < baseline + delta < 1:
        raise ConfigError(
            f"The effect must be non-zero and keep the rate in (0, 1): {baseline} + {delta}."
        )
    return float(delta)


def _check_ratio(ratio: float) -> None:
    if ratio <= 0:
        raise ConfigError(f"ratio (n_treatment / n_control) must be > 0, got {ratio}.")


def sample_size(
    baseline_rate: float,
    mde_abs: float | None = None,
    *,
    mde_rel: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> int:
    """Users needed in the control arm (treatment: ceil(ratio * n)) to detect the effect."""
    delta = _resolve_mde(baseline_rate, mde_abs, mde_rel)
    if not 0 < power < 1:
        raise ConfigError(f"power must be in (0, 1), got {power}.")
    _check_ratio(ratio)
    _check_alpha(alpha)
    # Pooled variance under the null, unpooled under the alternative (Fleiss, no continuity
    # correction): the variances `two_proportion_ztest` uses. Sample 1 is control (rate
    # prop2 + diff), sample 2 treatment with nobs2 = ratio * nobs1.
    n = samplesize_proportions_2indep_onetail(
        -delta, baseline_rate + delta, power, ratio=ratio, alpha=alpha
    )
    return math.ceil(float(n))


def power(
    n_per_arm: int,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    *,
    ratio: float = 1.0,
) -> float:
    """Power of the two-sided z-test for absolute effect `mde`, `n_per_arm` control users."""
    delta = _resolve_mde(baseline, mde, None)
    if n_per_arm <= 0:
        raise ConfigError(f"n_per_arm must be positive, got {n_per_arm}.")
    _check_ratio(ratio)
    _check_alpha(alpha)
    # The inverse of `sample_size` (same variances); it also counts the opposite tail, which
    # `sample_size` may ignore as negligible at any power worth planning for.
    pw = power_proportions_2indep(
        -delta, baseline + delta, n_per_arm, ratio=ratio, alpha=alpha, return_results=False
    )
    return float(pw)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given); controls the family-wise error."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


def bootstrap_ci(
    statistic_fn: Callable[..., Any],
    *arrays: np.ndarray | Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    paired: bool = False,
    max_elements: int = 20_000_000,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic_fn(*arrays)`; arrays resampled apart or `paired`.

    A `statistic_fn` with an `axis` keyword (numpy style, `lambda a, b, axis=-1: ...`) is called
    on (batch, n) resample matrices, any other once per resample. A NaN bound means the
    statistic was undefined in some resamples.
    """
    if not arrays:
        raise ConfigError("bootstrap_ci needs at least one array.")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}.")
    _check_alpha(alpha)
    data = [np.asarray(a) for a in arrays]
    if any(a.ndim != 1 or a.size < 2 for a in data):
        raise ConfigError("bootstrap_ci needs 1-D arrays of at least 2 values.")
    if paired and len({a.size for a in data}) > 1:
        raise ConfigError(f"paired=True needs arrays of one length, got {[a.size for a in data]}.")
    with warnings.catch_warnings():
        # scipy warns (in BCa terms) on a NaN bound; here NaN is an answer the caller reads.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            data,
            statistic_fn,
            n_resamples=n_boot,
            # bounds the (batch, n) resample matrices in memory
            batch=max(1, max_elements // max(a.size for a in data)),
            paired=paired,
            confidence_level=1 - alpha,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
