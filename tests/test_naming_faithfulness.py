"""Pieces of bench/naming_faithfulness.py and the wording it measures (no model, no training)."""

from __future__ import annotations

import polars as pl

from bench.naming_faithfulness import majority_archetypes
from embeddings.naming.signals import hour_window


def test_hour_window_is_the_tight_circular_run_of_hours() -> None:
    night = [0.0] * 24
    night[23], night[0], night[1] = 0.3, 0.4, 0.3
    assert hour_window(night) == (0, 2)  # 00:00-02:00 holds 70%
    assert hour_window(night, mass=0.9) == (23, 26)  # wraps past midnight: 23:00-02:00
    assert hour_window([1 / 24] * 24) is None  # spread out: no clock times worth stating


def test_majority_archetype_and_purity_per_cohort() -> None:
    a = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "cohort_id": [0, 0, 0, 1]})
    t = pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "archetype": ["x", "x", "y", "y"]})
    assert majority_archetypes(a, t) == {0: ("x", 2 / 3, 3), 1: ("y", 1.0, 1)}
