"""LLMNamer against a local fake OpenAI-compatible server: every success, retry and fallback path."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer, cohort_ids, make_profile

from embeddings.errors import NamingError
from embeddings.naming import LLMNamer, StatsNamer, make_namer

KEY_ENV = "SEQCOHORT_TEST_LLM_KEY"
SECRET = "sk-test-SECRET123"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with FakeLLMServer() as srv:
        yield srv


def profiles(n: int = 3) -> list:
    archetypes = [
        dict(
            relative={"recency": 3.0, "monetary": 0.4},
            recency_days=60,
            categories=[("Grocery", 0.6, 2.5)],
        ),
        dict(
            relative={"recency": 0.3, "monetary": 2.8},
            daypart="evening",
            categories=[("Electronics", 0.5, 3.1)],
        ),
        dict(relative={"frequency": 2.0}, daypart="night", categories=[("Fashion", 0.6, 2.0)]),
    ]
    return [make_profile(i, **archetypes[i % 3], share=1 / n) for i in range(n)]


def namer(srv: FakeLLMServer, **kw: object) -> LLMNamer:
    opts: dict = dict(api_key_env=KEY_ENV, timeout_s=2.0, max_retries=2, backoff_s=0.01)
    opts.update(kw)
    return LLMNamer(srv.url, "fake-model", **opts)


def test_valid_naming_sends_one_request_with_all_cohorts(server: FakeLLMServer) -> None:
    names = namer(server).name(profiles(3))
    assert [n.name for n in names] == [
        f"{w} evening garden shoppers" for w in ("Amber", "Birch", "Cedar")
    ]
    assert all(n.namer == "llm:fake-model" and n.fallback_reason is None for n in names)
    assert server.fake.count == 1
    req = server.fake.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == f"Bearer {SECRET}"
    body = req.body
    assert body["model"] == "fake-model" and body["temperature"] == 0.0 and body["seed"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert cohort_ids(body) == [0, 1, 2]
    user = body["messages"][1]["content"]
    assert "recency 3.0× the average" in user and "Grocery 60% (2.5× population)" in user
    assert " → " in user and "d ago: " in user  # exemplar sequences
    assert "{" + "cohorts}" not in user  # every placeholder filled


def test_fenced_json_after_prose_is_accepted_without_repair(server: FakeLLMServer) -> None:
    server.fake.default = "fenced"
    names = namer(server).name(profiles(2))
    assert server.fake.count == 1
    assert all(n.namer == "llm:fake-model" for n in names)


def test_repair_retry_fixes_bad_json(server: FakeLLMServer) -> None:
    server.fake.script("garbage", "good")
    names = namer(server).name(profiles(2))
    assert server.fake.count == 2
    assert all(n.namer == "llm:fake-model" and n.fallback_reason is None for n in names)
    repair = server.fake.requests[1].body["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert "Sure! Here are" in repair[2]["content"]
    assert "not valid JSON" in repair[3]["content"]


def test_persistent_garbage_falls_back_per_cohort_with_reason(server: FakeLLMServer) -> None:
    server.fake.default = "garbage"
    ps = profiles(3)
    names = namer(server).name(ps)
    assert server.fake.count == 2  # the answer and one repair, no more
    stats = StatsNamer().name(ps)
    assert [n.name for n in names] == [s.name for s in stats]
    assert all(n.namer == "stats" for n in names)
    assert all(
        "invalid after repair" in n.fallback_reason and "JSON" in n.fallback_reason for n in names
    )


@pytest.mark.parametrize(
    ("bad", "words"), [("missing_field", "suggested_action"), ("long_name", "words")]
)
def test_schema_errors_are_sent_back_and_repaired(
    server: FakeLLMServer, bad: str, words: str
) -> None:
    server.fake.script(bad, "good")
    names = namer(server).name(profiles(2))
    assert server.fake.count == 2
    assert words in server.fake.requests[1].body["messages"][3]["content"]
    assert all(n.namer == "llm:fake-model" for n in names)


def test_persistent_schema_error_falls_back(server: FakeLLMServer) -> None:
    server.fake.default = "long_name"
    names = namer(server).name(profiles(2))
    assert all(n.namer == "stats" and "has 10 words" in n.fallback_reason for n in names)


def test_duplicates_are_repaired_then_unique(server: FakeLLMServer) -> None:
    server.fake.script("duplicates", "good")
    names = namer(server).name(profiles(3))
    assert server.fake.count == 2
    assert "already used by cohort 0" in server.fake.requests[1].body["messages"][3]["content"]
    assert len({n.name for n in names}) == 3 and all(n.namer == "llm:fake-model" for n in names)


def test_persistent_duplicates_keep_the_first_and_fall_back_for_the_rest(
    server: FakeLLMServer,
) -> None:
    server.fake.default = "duplicates"
    names = namer(server).name(profiles(3))
    assert names[0].name == "Evening garden shoppers" and names[0].namer == "llm:fake-model"
    assert [n.namer for n in names[1:]] == ["stats", "stats"]
    assert all("already used" in n.fallback_reason for n in names[1:])
    assert len({n.name.lower() for n in names}) == 3


def test_timeout_is_retried_then_succeeds(server: FakeLLMServer) -> None:
    server.fake.sleep_s = 1.0
    server.fake.script("timeout")
    names = namer(server, timeout_s=0.3).name(profiles(2))
    assert server.fake.count == 2
    assert all(n.namer == "llm:fake-model" for n in names)


def test_persistent_timeout_falls_back(server: FakeLLMServer) -> None:
    server.fake.sleep_s = 1.0
    server.fake.default = "timeout"
    names = namer(server, timeout_s=0.2, max_retries=1).name(profiles(2))
    assert server.fake.count == 2
    assert all(n.namer == "stats" and "timed out after 0.2s" in n.fallback_reason for n in names)


def test_429_honours_retry_after(server: FakeLLMServer) -> None:
    server.fake.script("429")
    server.fake.retry_after = "1"
    names = namer(server, backoff_s=0.01).name(profiles(2))
    first, second = server.fake.requests
    assert second.at - first.at >= 0.9  # waited as told, not the 0.01 s backoff
    assert all(n.namer == "llm:fake-model" for n in names)


def test_500_is_retried_with_exponential_backoff(server: FakeLLMServer) -> None:
    server.fake.script("500", "500")
    names = namer(server, backoff_s=0.1).name(profiles(2))
    t = [r.at for r in server.fake.requests]
    assert len(t) == 3
    assert t[1] - t[0] >= 0.1 and t[2] - t[1] >= 0.2
    assert all(n.namer == "llm:fake-model" for n in names)


def test_always_500_falls_back_with_reason(server: FakeLLMServer) -> None:
    server.fake.default = "500"
    names = namer(server, max_retries=2).name(profiles(2))
    assert server.fake.count == 3
    assert all(
        "HTTP 500" in n.fallback_reason and "after 3 attempts" in n.fallback_reason for n in names
    )


def test_connection_error_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    names = LLMNamer(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff_s=0.01).name(
        profiles(2)
    )
    assert all(n.namer == "stats" and "connection error" in n.fallback_reason for n in names)


def test_unsupported_seed_is_dropped(server: FakeLLMServer) -> None:
    server.fake.script("400_seed")
    names = namer(server).name(profiles(2))
    first, second = server.fake.requests
    assert "seed" in first.body and "seed" not in second.body
    assert all(n.namer == "llm:fake-model" for n in names)


def test_cache_hit_makes_no_request_and_is_stable(server: FakeLLMServer, tmp_path: Path) -> None:
    cache = tmp_path / "naming_cache"
    ps = profiles(3)
    first = namer(server, cache_dir=cache).name(ps)
    assert server.fake.count == 1 and len(list(cache.glob("*.json"))) == 3
    again = namer(server, cache_dir=cache).name(ps)
    assert server.fake.count == 1
    assert again == first
    # A new cohort: only it is sent in full; the cached names are listed as taken.
    more = [*ps, make_profile(3, relative={"tenure": 0.3})]
    names = namer(server, cache_dir=cache).name(more)
    assert server.fake.count == 2
    body = server.fake.requests[1].body
    assert cohort_ids(body) == [3]
    assert '"Amber evening garden shoppers"' in body["messages"][1]["content"]
    assert names[:3] == first


def test_fallbacks_are_not_cached(server: FakeLLMServer, tmp_path: Path) -> None:
    server.fake.default = "garbage"
    namer(server, cache_dir=tmp_path).name(profiles(2))
    assert list(tmp_path.glob("*.json")) == []


def test_api_key_is_sent_but_never_logged_or_written(
    server: FakeLLMServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "naming_cache"
    server.fake.script("500", "garbage", "good")
    names = namer(server, cache_dir=cache).name(profiles(2))
    server.fake.default = "echo_auth_401"
    more = namer(server, cache_dir=cache).name([*profiles(2), make_profile(7)])
    assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in server.fake.requests)
    assert "HTTP 401" in more[2].fallback_reason and "***" in more[2].fallback_reason
    assert SECRET not in caplog.text and "SECRET123" not in caplog.text
    assert caplog.text  # something was logged at all
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(SECRET not in p.read_text() for p in files)
    assert all(SECRET not in json.dumps(n.__dict__) for n in [*names, *more])
    assert SECRET not in repr(namer(server))


def test_no_key_means_no_authorization_header(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    namer(server).name(profiles(1))
    assert "Authorization" not in server.fake.requests[0].headers


def test_batches_respect_concurrency_and_carry_the_other_cohorts(server: FakeLLMServer) -> None:
    server.fake.default = "slow"
    ps = profiles(6)
    names = namer(server, max_cohorts_per_request=2, concurrency=2).name(ps)
    assert server.fake.count == 3 and server.fake.max_in_flight == 2
    for req in server.fake.requests:
        ids = cohort_ids(req.body)
        assert len(ids) == 2
        context = req.body["messages"][1]["content"].split("for contrast")[1]
        assert all((f"- Cohort {i}:" in context) == (i not in ids) for i in range(6))
    assert len({n.name for n in names}) == 6


def test_duplicates_across_parallel_batches_get_qualifiers(server: FakeLLMServer) -> None:
    server.fake.default = "duplicates"
    names = namer(server, max_cohorts_per_request=1, concurrency=3).name(profiles(3))
    assert all(n.namer == "llm:fake-model" for n in names)
    assert names[0].name == "Evening garden shoppers"
    assert len({n.name for n in names}) == 3
    assert all("(2)" not in n.name for n in names)
    assert names[1].name.startswith("Evening garden shoppers (")


def test_make_namer_builds_each_kind(server: FakeLLMServer) -> None:
    assert isinstance(make_namer("stats"), StatsNamer)
    llm = make_namer("llm", base_url=server.url, model="fake-model", api_key_env=KEY_ENV)
    assert isinstance(llm, LLMNamer) and llm.url == server.url + "/chat/completions"
    with pytest.raises(NamingError, match="Unknown namer kind"):
        make_namer("gpt")
    with pytest.raises(NamingError, match="Bad options"):
        make_namer("llm", base_url=server.url, model="m", temprature=0.2)
    with pytest.raises(NamingError, match="needs a base_url"):
        make_namer("llm", base_url=None, model=None, api_key_env=KEY_ENV)
