"""Plain statistical tests for A/B analysis: two-proportion z-test, Welch test, SRM, sample size,
power, Holm adjustment and a percentile bootstrap. Formulas are written out, no statsmodels.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

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


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}.")
    return float(stats.norm.ppf(1 - alpha / 2))


def two_proportion_ztest(
    x_control: int, n_control: int, x_treat: int, n_treat: int, *, alpha: float = 0.05
) -> DiffResult:
    """Two-sided z-test of p_treat - p_control.

    z = (p_t - p_c) / sqrt(p (1 - p) (1/n_c + 1/n_t)), p = pooled rate (the null has one rate);
    CI = (p_t - p_c) +- z_{1-alpha/2} sqrt(p_c (1 - p_c) / n_c + p_t (1 - p_t) / n_t) (Wald,
    unpooled, since under the alternative the rates differ). Relative lift CI: Katz log method
    for the risk ratio, exp(log(p_t/p_c) +- z sqrt((1-p_t)/x_t + (1-p_c)/x_c)) - 1.
    """
    if n_control <= 0 or n_treat <= 0:
        raise ConfigError(f"Both groups need users (n_control={n_control}, n_treat={n_treat}).")
    for x, n in ((x_control, n_control), (x_treat, n_treat)):
        if not 0 <= x <= n:
            raise ConfigError(f"Conversions must be between 0 and n, got {x} of {n}.")
    zc = _z(alpha)
    pc, pt = x_control / n_control, x_treat / n_treat
    diff = pt - pc
    pooled = (x_control + x_treat) / (n_control + n_treat)
    se_test = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treat))
    se_ci = math.sqrt(pc * (1 - pc) / n_control + pt * (1 - pt) / n_treat)
    # All-or-nothing data has no variance: there is no evidence of a difference.
    z = diff / se_test if se_test > 0 else 0.0
    p = float(2 * stats.norm.sf(abs(z)))
    rel = diff / pc if pc > 0 else None
    rel_ci = None
    if x_control > 0 and x_treat > 0:
        log_rr = math.log(pt / pc)
        se_log = math.sqrt((1 - pt) / x_treat + (1 - pc) / x_control)
        rel_ci = (math.exp(log_rr - zc * se_log) - 1, math.exp(log_rr + zc * se_log) - 1)
    return DiffResult(
        diff=diff,
        rel_lift=rel,
        rel_ci=rel_ci,
        stat=z,
        p_value=p,
        ci=(diff - zc * se_ci, diff + zc * se_ci),
        se_test=se_test,
        se_ci=se_ci,
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
    else:
        chi2 = float(((obs - exp) ** 2 / exp).sum())
        p = float(stats.chi2.sf(chi2, df=len(arms) - 1)) if len(arms) > 1 else 1.0
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


def _power_terms(baseline: float, delta: float, ratio: float) -> tuple[float, float]:
    """sqrt of the null (pooled) and alternative variance factors, per control user."""
    if ratio <= 0:
        raise ConfigError(f"ratio (n_treatment / n_control) must be > 0, got {ratio}.")
    p1, p2 = baseline, baseline + delta
    pbar = (p1 + ratio * p2) / (1 + ratio)
    s0 = math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio))
    s1 = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio)
    return s0, s1


def sample_size(
    baseline_rate: float,
    mde_abs: float | None = None,
    *,
    mde_rel: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> int:
    """Users needed in the control arm to detect the effect with a two-sided z-test.

    n_c = (z_{1-alpha/2} sqrt(pbar qbar (1 + 1/k)) + z_{power} sqrt(p1 q1 + p2 q2 / k))^2 / delta^2
    with p2 = p1 + delta, k = ratio = n_treatment / n_control, pbar = (p1 + k p2) / (1 + k): the
    pooled-variance (Fleiss, no continuity correction) formula that matches `two_proportion_ztest`.
    The treatment arm needs ceil(ratio * n_c). Example: baseline 0.10, mde_abs 0.02 -> 3841.
    """
    delta = _resolve_mde(baseline_rate, mde_abs, mde_rel)
    if not 0 < power < 1:
        raise ConfigError(f"power must be in (0, 1), got {power}.")
    s0, s1 = _power_terms(baseline_rate, delta, ratio)
    z_a, z_b = _z(alpha), float(stats.norm.ppf(power))
    return math.ceil((z_a * s0 + z_b * s1) ** 2 / delta**2)


def power(
    n_per_arm: int,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    *,
    ratio: float = 1.0,
) -> float:
    """Power of the two-sided z-test with `n_per_arm` control users (treatment ratio * n).

    The inverse of `sample_size` (same formula, ignoring the negligible opposite tail):
    Phi((|delta| sqrt(n) - z_{1-alpha/2} s0) / s1). `mde` is absolute.
    """
    delta = _resolve_mde(baseline, mde, None)
    if n_per_arm <= 0:
        raise ConfigError(f"n_per_arm must be positive, got {n_per_arm}.")
    s0, s1 = _power_terms(baseline, delta, ratio)
    return float(stats.norm.cdf((abs(delta) * math.sqrt(n_per_arm) - _z(alpha) * s0) / s1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given); controls the family-wise error."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _accepts_axis(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "axis" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def bootstrap_ci(
    statistic_fn: Callable[..., Any],
    *arrays: np.ndarray | Sequence[float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    paired: bool = False,
    max_elements: int = 20_000_000,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic_fn(*arrays)`.

    Each array is resampled with replacement on its own (independent groups, e.g. treatment and
    control), or with shared indices when `paired` (columns of one sample). If `statistic_fn`
    takes an `axis` keyword (numpy style, e.g. `lambda a, b, axis=-1: a.mean(axis) -
    b.mean(axis)`), it is called on (chunk, n) resample matrices with axis=-1; otherwise once
    per resample.
    """
    if not arrays:
        raise ConfigError("bootstrap_ci needs at least one array.")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}.")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}.")
    data = [np.asarray(a) for a in arrays]
    if any(a.ndim != 1 or a.size == 0 for a in data):
        raise ConfigError("bootstrap_ci needs non-empty 1-D arrays.")
    if paired and len({a.size for a in data}) > 1:
        raise ConfigError(f"paired=True needs arrays of one length, got {[a.size for a in data]}.")
    rng = np.random.default_rng(seed)
    vectorised = _accepts_axis(statistic_fn)
    chunk = max(1, max_elements // max(a.size for a in data)) if vectorised else 1
    values = np.empty(n_boot, dtype=np.float64)
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        if paired:
            idx = rng.integers(0, data[0].size, size=(b, data[0].size))
            samples = [a[idx] for a in data]
        else:
            samples = [a[rng.integers(0, a.size, size=(b, a.size))] for a in data]
        if vectorised:
            values[done : done + b] = np.asarray(statistic_fn(*samples, axis=-1), dtype=float)
        else:
            values[done] = float(statistic_fn(*(s[0] for s in samples)))
        done += b
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
