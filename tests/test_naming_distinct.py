"""Names that differ only by a numeric suffix are told apart by what differs, or reported as merge candidates."""

from __future__ import annotations

import json

from embeddings.naming.base import name_key
from embeddings.naming.distinct import base_name, distinct_names
from embeddings.naming.profile_types import CohortName, CohortProfile, Share


def profile(cid: int, grocery: float = 0.5, freq: float = 1.0, evening: float = 0.25, rate: float | None = None):
    hours = [(1 - evening) / 18] * 18 + [evening / 6] * 6
    return CohortProfile(cid, 100, 0.1, "2025-06-01", 5.0, 10.0, 50.0, 4.0, 30.0,
                         {"recency": 1.0, "frequency": freq, "monetary": 1.0, "engagement": 1.0, "tenure": 1.0},
                         [Share("purchase", 0.2, 1.0)], [Share("grocery", grocery, 1.0), Share("pets", 1 - grocery, 1.0)],
                         [], hours, [1 / 7] * 7, "afternoon", extra={"goal": {"expected_rate": rate}} if rate else {})


def names(*ns: str) -> list[CohortName]:
    return [CohortName(n, "d", "a") for n in ns]


def test_base_name_strips_numeric_suffixes_only():
    assert base_name("New low-spend buyers (cohort 7)") == "New low-spend buyers"
    assert base_name("New low-spend buyers (cohort 7.2)") == "New low-spend buyers"
    assert base_name("Top intent · Lapsed buyers 2") == "Top intent · Lapsed buyers"
    assert base_name("Lapsed buyers (grocery)") == "Lapsed buyers (grocery)"


def test_suffix_twins_are_named_by_their_largest_difference():
    ps = [profile(0, grocery=0.8), profile(1, grocery=0.2), profile(2, freq=3.0)]
    out, merges = distinct_names(ps, names("Occasional buyers", "Occasional buyers (cohort 1)", "Frequent buyers"))
    assert out[0].name == "Occasional buyers (more grocery)" and out[1].name == "Occasional buyers (more pets)"
    assert out[2].name == "Frequent buyers" and merges == []
    assert len({name_key(base_name(n.name)) for n in out}) == 3


def test_three_alike_each_get_their_own_difference():
    ps = [profile(0, grocery=0.8), profile(1, freq=4.0), profile(2, evening=0.8)]
    out, _ = distinct_names(ps, names("Buyers", "Buyers (cohort 1)", "Buyers (cohort 2)"))
    assert [n.name for n in out] == ["Buyers (more grocery)", "Buyers (more frequent)", "Buyers (more evening)"]


def test_goal_rate_can_be_the_difference():
    ps = [profile(0, rate=0.6), profile(1, rate=0.1)]
    out, _ = distinct_names(ps, names("Tier 1 · Buyers", "Tier 1 · Buyers (cohort 1)"))
    assert {n.name for n in out} == {"Tier 1 · Buyers (higher intent)", "Tier 1 · Buyers (lower intent)"}


def test_identical_profiles_are_merge_candidates_and_keep_their_ids():
    ps = [profile(0), profile(1), profile(2, grocery=0.9)]
    out, merges = distinct_names(ps, names("Buyers", "Buyers (cohort 1)", "Buyers (cohort 2)"))
    assert merges == [{"cohort_ids": [0, 1], "names": ["Buyers", "Buyers (cohort 1)"], "largest_difference": 0.0}]
    assert out[2].name == "Buyers (more grocery)" and out[1].name == "Buyers (cohort 1)"
    assert len({name_key(n.name) for n in out}) == 3  # still unique


def test_human_names_are_never_changed():
    ps = [profile(0, grocery=0.8), profile(1, grocery=0.2)]
    out, _ = distinct_names(ps, names("Buyers", "Buyers (cohort 1)"), locked=frozenset({0}))
    assert out[0].name == "Buyers" and out[1].name == "Buyers (more pets)"


def test_published_names_differ_beyond_a_numeric_suffix(trained_workspace):
    cs = json.loads((trained_workspace / "current" / "cohorts.json").read_text())
    merged = {i for m in cs["meta"].get("merge_candidates", []) for i in m["cohort_ids"]}
    keys = [name_key(base_name(c["name"])) for c in cs["cohorts"] if c["id"] not in merged]
    assert len(keys) == len(set(keys)), [c["name"] for c in cs["cohorts"]]
    assert "merge_candidates" in cs["meta"]


def test_a_middle_member_gets_the_groups_values():
    """Of three tiers of one behaviour, the middle one is neither the most nor the least of anything:
    the group is named by the values of the feature that sets all three apart."""
    ps = [profile(0, freq=1.0), profile(1, freq=2.0), profile(2, freq=4.0)]
    out, merges = distinct_names(ps, names("Buyers", "Buyers (cohort 1)", "Buyers (cohort 2)"))
    assert [n.name for n in out] == ["Buyers (events 1.0×)", "Buyers (events 2.0×)", "Buyers (events 4.0×)"]
    assert merges == []


def test_the_cohort_table_lists_merge_candidates():
    from rich.console import Console

    from embeddings.cohorts.cohort_set import Cohort, CohortSet
    from seqcohort.report import print_cohorts

    ps = [profile(0), profile(1)]
    out, merges = distinct_names(ps, names("Buyers", "Buyers (cohort 1)"))
    cs = CohortSet([Cohort(p.cohort_id, n.name, "", 100, [1.0, 0.0], p) for p, n in zip(ps, out, strict=True)],
                   "m", "2025-06-01", meta={"merge_candidates": merges})
    console = Console(record=True, width=200)
    print_cohorts(console, cs)
    assert "merge candidates Buyers + Buyers (cohort 1)" in console.export_text()
