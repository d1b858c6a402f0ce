"""The experiment framework: hashed arm assignment, sample sizing and an honest A/B readout.

- `assign_arms`: deterministic, stable arms (holdout / control / treatment) from a hash of the id.
- `sample_size` / `power`: plan the experiment before looking at any result.
- `analyze`: per arm vs control, overall and per cohort, with SRM, min-sample and peeking checks.
- `bootstrap_ci`: percentile bootstrap for statistics without a closed-form CI.
"""

from __future__ import annotations

from embeddings.evaluation.experiments.analysis import (
    PEEKING_WARNING,
    AnalysisResult,
    ArmSummary,
    Comparison,
    analyze,
)
from embeddings.evaluation.experiments.assign import assign_arms, hash_uniform, validate_arms
from embeddings.evaluation.experiments.stats import (
    SRM_THRESHOLD,
    DiffResult,
    SRMResult,
    bootstrap_ci,
    holm,
    power,
    sample_size,
    srm_check,
    two_proportion_ztest,
    welch_ztest,
)

__all__ = [
    "PEEKING_WARNING",
    "SRM_THRESHOLD",
    "AnalysisResult",
    "ArmSummary",
    "Comparison",
    "DiffResult",
    "SRMResult",
    "analyze",
    "assign_arms",
    "bootstrap_ci",
    "hash_uniform",
    "holm",
    "power",
    "sample_size",
    "srm_check",
    "two_proportion_ztest",
    "validate_arms",
    "welch_ztest",
]
