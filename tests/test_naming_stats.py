"""StatsNamer: faithful, deterministic, unique names from the strongest signals."""

from __future__ import annotations

import copy

from fake_llm_server import hours_peaking, make_profile

from embeddings.naming import StatsNamer, make_unique
from embeddings.naming.base import sentences, word_count
from embeddings.naming.profile_types import CohortName


def archetypes() -> list:
    return [
        make_profile(
            0,
            relative={"recency": 3.0, "monetary": 0.4, "frequency": 0.6},
            recency_days=45,
            monetary=20,
            events=[("page_view", 0.7, 1.6), ("purchase", 0.1, 0.4)],
            categories=[("Grocery", 0.6, 2.5), ("Garden", 0.1, 0.5)],
        ),
        make_profile(
            1,
            relative={"recency": 0.3, "monetary": 2.8},
            recency_days=2,
            monetary=310,
            events=[("purchase", 0.6, 1.7), ("page_view", 0.3, 0.6)],
            categories=[("ELECTRONICS", 0.5, 3.1)],
        ),
        make_profile(
            2,
            relative={"monetary": 1.6},
            daypart="night",
            events=[("purchase", 0.5, 1.3)],
            categories=[("Fashion", 0.6, 2.0)],
        ),
        make_profile(3, events=[("add_to_cart", 0.5, 2.5), ("purchase", 0.05, 0.3)], categories=[]),
        make_profile(
            4,
            relative={"recency": 12.0, "frequency": 0.2},
            recency_days=200,
            frequency=1.0,
            events=[("purchase", 0.9, 1.5)],
            categories=[("Toys", 0.4, 1.8)],
        ),
        make_profile(5, relative={"tenure": 0.2}, events=[("search", 0.5, 3.0)], categories=[]),
    ]


def test_names_say_what_distinguishes_each_cohort() -> None:
    names = [n.name for n in StatsNamer().name(archetypes())]
    assert names[0] == "Lapsed low-spend grocery browsers"
    assert names[1] == "Recent high-spend electronics buyers"
    assert names[2] == "High-spend night-owl fashion buyers"
    assert names[3] == "Mainstream cart abandoners"
    assert names[4] == "Dormant one-time toys buyers"
    assert names[5] == "New searchers"


def test_descriptions_and_actions_are_faithful_single_sentences() -> None:
    for n, p in zip(StatsNamer().name(archetypes()), archetypes(), strict=True):
        assert len(sentences(n.description)) == 1, n.description
        assert n.description.startswith(f"{p.share:.0%} of users")
        assert n.suggested_action and "\n" not in n.suggested_action
        assert n.namer == "stats" and n.fallback_reason is None
    lapsed = StatsNamer().name(archetypes())[0]
    assert "3.0× the average" in lapsed.description and "grocery" in lapsed.description
    assert lapsed.suggested_action.startswith("Run a win-back campaign")


def test_deterministic_and_order_independent() -> None:
    ps = archetypes()
    a = StatsNamer().name(ps)
    b = StatsNamer().name(copy.deepcopy(ps))
    c = StatsNamer().name(list(reversed(ps)))
    assert a == b
    assert [n.name for n in a] == [n.name for n in reversed(c)]


def test_twenty_identical_profiles_get_unique_short_names() -> None:
    ps = [make_profile(i, share=0.05) for i in range(20)]
    names = StatsNamer().name(ps)
    assert len({n.name.lower() for n in names}) == 20
    assert all(2 <= word_count(n.name) <= 6 for n in names)
    assert all(len(sentences(n.description)) == 1 for n in names)
    assert not any("(2)" in n.name for n in names)
    assert names[0].name == "Mainstream garden browsers"  # the lowest id keeps the plain name
    assert names[5].name == "Mainstream garden browsers (cohort 5)"  # only the stable id is left
    assert names == StatsNamer().name(copy.deepcopy(ps))


def test_twenty_varied_profiles_get_unique_names() -> None:
    parts = ["night", "morning", "afternoon", "evening"]
    ps = [
        make_profile(
            i,
            relative={"recency": [0.3, 1.0, 3.0][i % 3], "monetary": [0.5, 1.0, 2.0][i % 3 - 1]},
            hour_hist=hours_peaking(parts[i % 4]),
            daypart=parts[i % 4],
            categories=[(["Garden", "Toys", "Books", "Food", "Tools"][i % 5], 0.5, 1.0 + i % 5)],
        )
        for i in range(20)
    ]
    names = StatsNamer().name(ps)
    assert len({n.name.lower() for n in names}) == 20
    assert all(2 <= word_count(n.name) <= 6 for n in names)


def test_unknown_extras_and_degenerate_profiles_do_not_break_naming() -> None:
    odd = make_profile(
        0,
        relative={"recency": float("nan"), "monetary": 0.0},
        monetary=0.0,
        events=[],
        categories=[],
        items=[],
        hour_hist=[0.0] * 24,
        weekday_hist=[],
        n_exemplars=0,
        extra={"first_event_top": [{"value": "signup"}], "whatever": object()},
    )
    odd.relative.pop("frequency")
    [name] = StatsNamer().name([odd])
    assert 2 <= word_count(name.name) <= 6 and name.description.endswith(".")


def test_single_profile_has_no_time_of_day_signal() -> None:
    [name] = StatsNamer().name([make_profile(0, daypart="night")])
    assert "night" not in name.name.lower()


def test_make_unique_uses_profile_qualifiers_not_counters() -> None:
    ps = archetypes()[:3]
    same = [
        CohortName("Garden lovers", "x."),
        CohortName("Garden lovers", "y."),
        CohortName("Garden lovers", "z."),
    ]
    out = StatsNamer().make_unique(ps, same)
    assert out[0].name == "Garden lovers"
    assert out[1].name == "Garden lovers (recent)" and out[2].name == "Garden lovers (night-owl)"
    locked = make_unique(ps, same, lambda i: [], locked=frozenset({2}))
    assert locked[2].name == "Garden lovers" and locked[0].name == "Garden lovers (cohort 0)"


def test_order_twins_get_names_that_say_where_in_a_session_they_buy() -> None:
    """Same categories, spend and times; one cohort buys first and browses after, one buys last."""
    def twin(cid: int, place: float) -> object:
        return make_profile(cid, events=[("search", 0.3, 1.6), ("purchase", 0.1, 1.0)],
                            categories=[("Sports", 0.4, 4.0)],
                            extra={"event_place": {"purchase": {"cohort": place, "population": 0.6, "n": 400},
                                                   "search": {"cohort": 1 - place, "population": 0.3, "n": 900}}})
    first, last, same = StatsNamer().name([twin(0, 0.25), twin(1, 0.95), twin(2, 0.62)])
    assert first.name.startswith("Impulse ") and "buy early in a session" in first.description
    assert "25% of the way through their sessions vs 60% overall" in first.description
    assert last.name.startswith("Deliberate ") and "buy at the end of a session" in last.description
    assert "Impulse" not in same.name and "Deliberate" not in same.name  # near the population: no claim
    # profiles without the statistic (older workspaces) name as before
    assert StatsNamer().name([make_profile(0, extra={})])[0].name
