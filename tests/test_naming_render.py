"""Rendering profiles and exemplars, the prompt template, fingerprints and answer validation."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest
from fake_llm_server import make_profile

from embeddings.errors import NamingError
from embeddings.naming import (
    PROMPT_VERSION,
    PromptTemplate,
    check_answer,
    extract_json,
    profile_fingerprint,
    render_exemplar,
    render_profile,
    select_exemplars,
)
from embeddings.naming.profile_types import Exemplar, ExemplarEvent
from embeddings.naming.prompt import fill
from embeddings.naming.render import sig2

AS_OF = datetime(2024, 6, 30, 12, tzinfo=timezone.utc)


def test_render_exemplar_is_compact_relative_and_truncated() -> None:
    events = [
        ExemplarEvent(
            "2024-06-27T12:00:00Z",
            "purchase",
            item="sku1",
            category="Garden",
            amount=24.99,
            text="Garden hose 15m",
        ),
        ExemplarEvent("2024-06-28T12:00:00", "page_view", item="sku2", category="Garden"),
        ExemplarEvent("2024-06-28T12:00:00", "page_view", item="sku2", category="Garden"),
        ExemplarEvent("2024-06-30T09:30:00+00:00", "search", text="x" * 100),
    ]
    line = render_exemplar(Exemplar("u1", n_events=50, events=list(reversed(events))), AS_OF)
    assert line.startswith(
        "… 46 earlier events → 3d ago: purchase 'Garden hose 15m' (Garden) $24.99 → "
    )
    assert "2d ago: page_view 'sku2' ×2" in line  # repeated events folded, category not repeated
    assert "2h ago: search 'xxxxxxxx" in line and "…'" in line and "x" * 50 not in line
    short = render_exemplar(Exemplar("u1", n_events=4, events=events), AS_OF, max_events=1)
    assert short == "… 3 earlier events → 2h ago: search '" + "x" * 39 + "…'"


def test_select_exemplars_prefers_diverse_users() -> None:
    def user(uid: str, event: str, cat: str) -> Exemplar:
        return Exemplar(uid, 3, [ExemplarEvent("2024-06-29T00:00:00Z", event, category=cat)] * 3)

    xs = [
        user("a", "purchase", "Garden"),
        user("b", "purchase", "Garden"),
        user("c", "search", "Toys"),
        user("d", "purchase", "Garden"),
    ]
    picked = select_exemplars(xs, k=2)
    assert [x.user_id for x in picked] == ["a", "c"]
    assert len(select_exemplars(xs, k=5)) == 4 and select_exemplars([], 3) == []


def test_render_profile_states_everything_relative_to_the_population() -> None:
    p = make_profile(7, share=0.123, relative={"frequency": 2.34, "recency": 0.4}, monetary=0.0)
    text = render_profile(p)
    assert text.startswith("### Cohort 7\nSize: 12% of users")
    assert "frequency 2.3× the average (20 events per user)" in text
    assert (
        "recency 0.40× the average" in text and "spend" not in text.split("Top event")[0]
    )  # no amounts
    assert "Top event types: purchase 40% (1.0× population)" in text
    assert "Top items: 'Garden hose 15m'" in text and "Time: mostly afternoon" in text
    assert text.count("\n- ") == 4  # 3-5 exemplar users
    assert "Place in a session" not in text  # no event_place statistic: no line
    p.extra = {"event_place": {"purchase": {"cohort": 0.25, "population": 0.9, "n": 50}}}
    assert "Place in a session (0 = first event, 1 = last): purchase 0.25 (population 0.90)" in render_profile(p)


def test_sig2() -> None:
    assert [sig2(x) for x in (45, 2830, 2.345, 0.304, 0.0042, 9.96, float("inf"))] == [
        "45",
        "2,800",
        "2.3",
        "0.30",
        "0.0042",
        "10.0",
        "n/a",
    ]


def test_fingerprint_ignores_id_time_and_exemplars_but_not_statistics() -> None:
    p = make_profile(1)
    q = copy.deepcopy(p)
    q.cohort_id, q.as_of, q.exemplars = 99, "2030-01-01T00:00:00Z", q.exemplars[:1]
    q.extra = {"first_event_top": "signup"}
    assert profile_fingerprint(p) == profile_fingerprint(q)
    q.relative["monetary"] = 1.011  # below rendering precision
    assert profile_fingerprint(p) == profile_fingerprint(q)
    q.relative["monetary"] = 2.0
    assert profile_fingerprint(p) != profile_fingerprint(q)
    assert len(profile_fingerprint(p)) == 64


def test_template_sections_placeholders_and_version() -> None:
    t = PromptTemplate.load()
    assert PROMPT_VERSION == "v1" and t.version == "v1"
    msgs = t.messages([make_profile(0), make_profile(1)], [make_profile(2)], ["Taken one"])
    user = msgs[1]["content"]
    assert "Below are 2 customer cohorts" in user and "ids: 0, 1" in user
    assert "- Cohort 2: 10% of users" in user and '"Taken one"' in user
    assert '{"cohorts": [{"cohort_id": <id>' in user  # JSON braces survive filling
    assert "{" + "errors}" in t.repair
    with pytest.raises(NamingError, match="needs values"):
        fill("{a} and {b}", a=1)


def test_template_without_sections_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "p.txt"
    bad.write_text("just text {cohorts}")
    with pytest.raises(NamingError, match="lacks sections"):
        PromptTemplate.load(path=bad)


@pytest.mark.parametrize(
    "text",
    [
        '{"cohorts": []}',
        'Sure! Here you go:\n```json\n{"cohorts": []}\n```',
        'Here is the JSON: {"cohorts": []} hope it helps',
        '```\n{"cohorts": []}\n```',
    ],
)
def test_extract_json_variants(text: str) -> None:
    assert extract_json(text) == {"cohorts": []}


def test_extract_json_failure_says_why() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        extract_json("names: Alpha, Beta {oops")
    with pytest.raises(ValueError, match="empty"):
        extract_json("   ")


def entry(cid: int, name: str = "Evening garden shoppers", **kw: str) -> dict:
    return {
        "cohort_id": cid,
        "name": name,
        "description": "They shop. A lot.",
        "suggested_action": "Email them",
        **kw,
    }


def test_check_answer_accepts_valid_and_lenient_ids() -> None:

    ok = check_answer(json.dumps([entry(1), {**entry(2, "Night owls"), "cohort_id": "2"}]), [1, 2])
    assert ok.ok and ok.valid[2]["name"] == "Night owls"


def test_check_answer_reports_each_problem() -> None:

    answer = json.dumps(
        {
            "cohorts": [
                entry(1),
                entry(2),  # duplicate of 1
                entry(3, "Garden shoppers"),  # taken elsewhere
                entry(4, "One"),  # too short
                entry(5, description="One. Two. Three."),
                entry(6, suggested_action="line one\nline two"),
                {"cohort_id": 7, "name": "Night owl readers"},
                entry(99),
            ]
        }
    )
    c = check_answer(answer, [1, 2, 3, 4, 5, 6, 7, 8], taken=["garden  Shoppers."])
    assert list(c.valid) == [1]
    assert "already used by cohort 1" in c.reason(2)
    assert "already used by another cohort" in c.reason(3)
    assert "1 words" in c.reason(4)
    assert "1 or 2 sentences" in c.reason(5)
    assert "one line" in c.reason(6)
    assert '"description" is missing' in c.reason(7)
    assert "missing from the answer" in c.reason(8)
    assert any("no cohort_id among" in m for m in c.messages())
