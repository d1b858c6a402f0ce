"""Serving internals without Ray: request models, batched featurisation, version following."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from serving.models import AssignRequest, parse_ts, session_columns


def test_parse_ts_forms():
    assert parse_ts("2025-06-01T12:00:00Z") == datetime(2025, 6, 1, 12)
    assert parse_ts("2025-06-01T14:00:00+02:00") == datetime(2025, 6, 1, 12)
    assert parse_ts(1748779200) == datetime(2025, 6, 1, 12)
    assert parse_ts(1748779200_000) == datetime(2025, 6, 1, 12)  # milliseconds
    assert parse_ts(1748779200_000_000) == datetime(2025, 6, 1, 12)  # microseconds
    for bad in ("soon", True, None, float("nan"), float("inf"), -5, 1e30, "9999-01-01", [1]):
        with pytest.raises(ValueError):
            parse_ts(bad)


@pytest.mark.parametrize("event", [
    {"ts": "2025-01-01", "event": "v", "amount": float("nan")},
    {"ts": "2025-01-01", "event": "v", "amount": "3"},
    {"ts": "2025-01-01", "event": "v", "unknown": 1},
    {"ts": "2025-01-01", "event": "x" * 300},
    {"ts": "2025-01-01", "event": 7},
])
def test_event_model_rejects(event):
    with pytest.raises(ValidationError):
        AssignRequest(events=[event])


def _sessions(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, 30))
        t0 = datetime(2025, 5, 1) + timedelta(hours=int(rng.integers(0, 500)))
        evs = [{"ts": (t0 + timedelta(minutes=int(m))).isoformat(), "event": str(rng.choice(["view", "cart", "new"])),
                "item": f"i{int(rng.integers(40))}", "amount": 5.0 if m % 3 == 0 else None}
               for m in np.sort(rng.integers(0, 600, k))]
        s = session_columns(AssignRequest(events=evs).events)
        s["as_of"] = int((datetime(2025, 6, 1 + i % 3) - datetime(1970, 1, 1)).total_seconds() * 1e6)
        out.append(s)
    return out


def test_batched_sessions_equal_one_by_one(trained_workspace):
    """Mixed as_of values in one batch give exactly the per-session embeddings and featurizer output."""
    from embeddings.workspace import Workspace
    from serving.state import EncoderState

    cur = Workspace(trained_workspace).current()
    st = EncoderState.load(cur.name, cur)
    ss = _sessions(12)
    X = st.embed_sessions(ss)
    assert X.shape == (12, st.encoder.dim) and X.dtype == np.float32
    for i, s in enumerate(ss):
        np.testing.assert_allclose(X[i], st.embed_sessions([s])[0], atol=1e-5)


def test_assigner_state_lookup_and_members(trained_workspace):
    import polars as pl

    from embeddings.workspace import Workspace
    from serving.state import AssignerState

    cur = Workspace(trained_workspace).current()
    st = AssignerState.load(cur.name, cur)
    a = pl.read_parquet(cur / "assignments.parquet")
    uid, cid = a["user_id"][0], int(a["cohort_id"][0])
    got = st.lookup(uid)
    assert got is not None and got["cohort_id"] == cid and uid not in got["neighbors"]
    assert st.lookup("nope") is None
    assert st.cohort_members(cid).height == (a["cohort_id"] == cid).sum()


def test_versions_follow_current(trained_workspace, tmp_path):
    from embeddings.workspace import Workspace
    from serving.state import Versions

    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws, symlinks=True)
    loads: list[str] = []
    v = Versions(ws, lambda vid, path: loads.append(vid) or vid, keep=2)
    first = v.current_id
    assert v.refresh() is False and loads == [first]
    w = Workspace(ws)
    new = w.versions_dir / "20990101T000000-abcdef"
    shutil.copytree(w.current(), new)
    w._point_current(new)
    assert v.refresh() is True and v.current_id == new.name and v.get()[1] == new.name
    assert v.get(first) == (first, first)  # the previous version is still answerable
    with pytest.raises(Exception, match="does not exist"):
        v.get("../../etc")
    os.sync()


def test_live_sessions_featurise_like_the_reference(trained_workspace):
    """The Encoder's polars-free path gives exactly the embedding of Featurizer.transform + encode."""
    from embeddings.features.small import columns_frame
    from embeddings.workspace import Workspace
    from serving.state import EncoderState, _dt

    cur = Workspace(trained_workspace).current()
    st = EncoderState.load(cur.name, cur)
    for s in _sessions(6, seed=4):
        frame = columns_frame(st._columns([s]), st.encoder.featurizer.config)
        ref = st.encoder.encode(st.encoder.featurize(frame, _dt(s["as_of"]))).vectors
        np.testing.assert_array_equal(st.embed_sessions([s]), ref)


@pytest.fixture(scope="module")
def goal_workspace(tmp_path_factory, synth_files):
    """A tiny goal-aware run: intent-carrying embeddings and tiered cohorts."""
    from embeddings.config import load_config
    from embeddings.evaluation.goals import parse_goal
    from seqcohort import pipeline
    from tests.conftest import TINY_SETS

    ws = tmp_path_factory.mktemp("goal_ws") / "workspace"
    pipeline.run(synth_files["events"], ws, load_config(overrides=TINY_SETS), goal=parse_goal("purchase", "30d"))
    return ws


def test_goal_aware_workspace_serves_intent_embeddings_and_tiered_cohorts(goal_workspace, synth_files):
    """The serving path (numpy featurisation, IntentEncoder, tiered Assigner) gives the stored answers."""
    import polars as pl

    from embeddings.workspace import Workspace
    from serving.models import AssignRequest
    from serving.state import AssignerState, EncoderState

    cur = Workspace(goal_workspace).current()
    enc, asg = EncoderState.load(cur.name, cur), AssignerState.load(cur.name, cur)
    stored = pl.read_parquet(cur / "assignments.parquet")
    as_of = datetime.fromisoformat(json.loads((cur / "version.json").read_text())["as_of"])
    events = pl.read_parquet(synth_files["events"])
    counts = events.group_by("user_id").len().filter(pl.col("len") <= 60).sort("user_id")
    short = counts.filter(pl.col("len") <= 3)["user_id"].head(4).to_list()  # placed by the short-history head
    assert len(short) == 4
    users = [*counts["user_id"].head(8).to_list(), *short]  # whole histories fit in one request
    sessions = []
    for u in users:
        ev = events.filter(pl.col("user_id") == u).sort("ts")
        req = AssignRequest(events=[{"ts": t.isoformat(), "event": e, "item": i, "category": c, "amount": a}
                                    for t, e, i, c, a in ev.select("ts", "event", "item", "category", "amount").rows()])
        s = session_columns(req.events)
        s["as_of"] = int((as_of - datetime(1970, 1, 1)).total_seconds() * 1e6)
        sessions.append(s)
    X = enc.embed_sessions(sessions)
    assert X.shape[1] == enc.encoder.dim and cur.joinpath("encoder", "propensity.json").is_file()
    assert json.loads((cur / "cohorts.json").read_text())["confidence_model"]["short_head"]["classes"]
    got = [r["cohort_id"] for r in asg.assign(X)]
    want = [int(stored.filter(pl.col("user_id") == u)["cohort_id"][0]) for u in users]
    assert got == want
    assert all(" · " in r["cohort_name"] for r in asg.assign(X))
