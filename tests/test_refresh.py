"""seqcohort refresh: incremental re-embedding, stable ids and names, changes, drift, lock, kill -9 safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embeddings.errors import SchemaError, WorkspaceError
from embeddings.workspace import Workspace
from tests.living_data import LATE, build_workspace, copy_workspace, fast_cfg

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("living"))


@pytest.fixture()
def ws(base, tmp_path) -> Path:
    return copy_workspace(base[0], tmp_path / "ws")


def _assign(vdir: Path) -> pl.DataFrame:
    return pl.read_parquet(vdir / "assignments.parquet", columns=["user_id", "cohort_id"])


def test_refresh_reassigns_and_records_exact_changes(ws, base):
    from seqcohort.refresh import refresh

    paths = base[1]
    w = Workspace(ws)
    v1 = w.current()
    res = refresh(ws, paths["p2"], fast_cfg())
    v2 = w.current()
    assert res.version_dir == v2 and v2 != v1
    p1, p2 = pl.read_parquet(paths["p1"]), pl.read_parquet(paths["p2"])
    a1, a2 = _assign(v1), _assign(v2)
    everyone = set(p1["user_id"].to_list()) | set(p2["user_id"].to_list())
    assert set(a2["user_id"].to_list()) == everyone and a2["cohort_id"].null_count() == 0  # every user has a cohort
    # changes.parquet lists exactly the users whose cohort differs, with a reason
    j = a1.join(a2, on="user_id", how="full", coalesce=True, suffix="_new")
    differ = set(j.filter(pl.col("cohort_id").ne_missing(pl.col("cohort_id_new")))["user_id"].to_list())
    changes = pl.read_parquet(v2 / "changes.parquet")
    assert set(changes["user_id"].to_list()) == differ
    assert set(changes["reason"].to_list()) <= {"new_user", "new_events", "recency"}
    new_users = everyone - set(a1["user_id"].to_list())
    assert set(changes.filter(pl.col("reason") == "new_user")["user_id"].to_list()) == new_users
    quiet = set(a1["user_id"].to_list()) - set(p2["user_id"].to_list())  # no new events
    kept = a1.filter(pl.col("user_id").is_in(list(quiet))).join(a2, on="user_id", suffix="_new")
    assert (kept["cohort_id"] == kept["cohort_id_new"]).mean() >= 0.95
    drift = json.loads((v2 / "drift.json").read_text())
    assert drift["previous"] == v1.name and drift["events"]["new"] == p2.height
    assert drift["users"]["moved"] == len(differ) and drift["users"]["new"] == len(new_users)
    for c in drift["cohorts"]:
        assert c["size_after"] == int((a2["cohort_id"] == c["id"]).sum())
        assert c["size_after"] - c["size_before"] == c["entered"] - c["left"]
    assert {"fit_drop", "oov_share", "event_mix_shift"} <= set(drift["population"])
    assert drift["retrain_recommended"] is False and res.decision["refit"] is False
    # ids survive a reassign, and names wherever most members stayed
    c1 = {c["id"]: c["name"] for c in json.loads((v1 / "cohorts.json").read_text())["cohorts"]}
    c2 = {c["id"]: c["name"] for c in json.loads((v2 / "cohorts.json").read_text())["cohorts"]}
    assert set(c1) == set(c2)
    assert _kept_names_follow_the_rule(v1, v2) >= len(c1) - 2  # all but a cohort of short histories or two


def _kept_names_follow_the_rule(v1: Path, v2: Path) -> int:
    """Assert every cohort that kept at least half its members (still present) kept its name; returns how many."""
    a1, a2 = _assign(v1), _assign(v2)
    c1 = {c["id"]: c["name"] for c in json.loads((v1 / "cohorts.json").read_text())["cohorts"]}
    c2 = {c["id"]: c["name"] for c in json.loads((v2 / "cohorts.json").read_text())["cohorts"]}
    present = set(a2["user_id"].to_list())
    n = 0
    for cid, name in c2.items():
        if cid not in c1:
            continue
        before = set(a1.filter(pl.col("cohort_id") == cid)["user_id"].to_list()) & present
        now = set(a2.filter(pl.col("cohort_id") == cid)["user_id"].to_list())
        if before and len(before & now) >= 0.5 * len(before):
            assert name == c1[cid], (cid, c1[cid], name)
            n += 1
    return n


def test_same_file_twice_is_a_noop(ws, base):
    from seqcohort.refresh import refresh

    refresh(ws, base[1]["p2"], fast_cfg())
    versions = Workspace(ws).versions()
    res = refresh(ws, base[1]["p2"], fast_cfg())
    assert res.version_dir is None and "nothing published" in res.message
    assert res.counts["duplicate"] == res.counts["read"] > 0 and res.counts["new"] == 0
    assert Workspace(ws).versions() == versions


def test_late_and_duplicate_events_are_counted(ws, base, tmp_path):
    from seqcohort.refresh import refresh

    p1, late = pl.read_parquet(base[1]["p1"]), pl.read_parquet(base[1]["late"])
    dup = p1.sample(25, seed=1)
    new = pl.concat([late, dup])
    new.write_csv(tmp_path / "new.csv")  # another format than the run's parquet
    res = refresh(ws, tmp_path / "new.csv", fast_cfg())
    assert res.counts == {"read": LATE + 25, "duplicate": 25, "late": LATE, "suppressed": 0, "new": LATE}
    cur = Workspace(ws).current()
    meta = json.loads((cur / "version.json").read_text())
    store = pl.read_parquet(ws / meta["event_store"])
    assert store.height == p1.height + LATE
    assert meta["as_of"] == json.loads((cur.parent / meta["parent"] / "version.json").read_text())["as_of"]


def test_recency_update_equals_the_encoder(base):
    """The analytic move of the recency coordinate agrees with re-encoding at the later as_of."""
    from embeddings.living.recency import recency_encoder, with_recency
    from embeddings.model.embed import UserEncoder

    enc = UserEncoder.load(Workspace(base[0]).current() / "encoder", device="cpu")
    cfg = recency_encoder(enc.bundle.encoder)
    assert cfg is not None and cfg.recency > 0
    ev = pl.read_parquet(base[1]["p1"]).filter(pl.col("user_id").is_in(["u000001", "u000002", "u000010"]))
    t1 = ev["ts"].max()
    t2 = t1 + timedelta(days=30)
    _, X1 = enc.encode(ev, as_of=t1)
    _, X2 = enc.encode(ev, as_of=t2)
    last = ev.group_by("user_id").agg(pl.col("ts").max()).sort("user_id")["ts"].to_list()
    days = np.array([(t2 - t).total_seconds() / 86400 for t in last])
    moved = with_recency(cfg, X1, days)
    L = cfg.learned_dim

    def parts(X):
        b = X[:, : L + cfg.n_state].astype(np.float64)
        zs = b / np.linalg.norm(b[:, :L], axis=1, keepdims=True)
        return zs[:, :L], zs[:, L]

    np.testing.assert_allclose(parts(moved)[1], parts(X2)[1], atol=1e-4)  # the recency coordinate
    np.testing.assert_allclose(parts(moved)[0], parts(X1)[0], atol=1e-5)  # the learned part is kept
    np.testing.assert_allclose(moved[:, L + cfg.n_state:], X1[:, L + cfg.n_state:], atol=1e-6)  # habit profile kept
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
    assert np.abs(parts(moved)[1] - parts(X1)[1]).min() > 1e-3  # it did move


def test_refit_matches_ids_and_keeps_names(ws, base):
    from seqcohort.refresh import refresh

    v1 = Workspace(ws).current()
    res = refresh(ws, base[1]["p2"], fast_cfg("refresh.refit_fit_drop=0"))
    assert res.decision["refit"] and not res.decision["retrain"] and "refresh.refit_fit_drop" in res.decision["why"]
    v2 = Workspace(ws).current()
    a1, a2 = _assign(v1), _assign(v2)
    c1 = {c["id"]: c for c in json.loads((v1 / "cohorts.json").read_text())["cohorts"]}
    c2 = {c["id"]: c for c in json.loads((v2 / "cohorts.json").read_text())["cohorts"]}
    assert all(cid > max(c1) for cid in set(c2) - set(c1))  # a new cohort never reuses an id
    _kept_names_follow_the_rule(v1, v2)
    assert len({c["name"] for c in c2.values()}) == len(c2)
    changes = pl.read_parquet(v2 / "changes.parquet")
    j = a1.join(a2, on="user_id", how="full", coalesce=True, suffix="_new")
    assert changes.height == j.filter(pl.col("cohort_id").ne_missing(pl.col("cohort_id_new"))).height
    assert set(changes["reason"].to_list()) <= {"new_user", "new_events", "refit"}


def test_match_ids_follows_members():
    from embeddings.living.matching import match_ids, retention

    users = [f"u{i}" for i in range(90)]
    prev = pl.DataFrame({"user_id": users, "cohort_id": [i // 30 for i in range(90)]})  # 0, 1, 2
    # the refit labels the same groups 7, 5, and splits the third into 9 (20 users) and 8 (10 users)
    lab = [7] * 30 + [5] * 30 + [9] * 20 + [8] * 10
    new = pl.DataFrame({"user_id": users, "cohort_id": lab})
    m = match_ids(prev, new, next_id=3, match_min=0.2)
    assert m == {7: 0, 5: 1, 9: 2, 8: 3}
    relabeled = new.with_columns(cohort_id=pl.col("cohort_id").replace_strict(m))
    assert retention(prev, relabeled) == {0: 1.0, 1: 1.0, 2: pytest.approx(20 / 30)}


def test_carry_names_keeps_and_dedupes():
    from embeddings.living.matching import CarryNames
    from embeddings.naming.profile_types import CohortName

    class P:
        def __init__(self, i):
            self.cohort_id = i

    class Namer:
        def name(self, profiles):
            return [CohortName("Loyal buyers", "d", "a", "stats", None) for _ in profiles]

    prev = {0: CohortName("Loyal buyers", "kept", "", "stats", None), 1: CohortName("Old", "", "", "stats", None)}
    out = CarryNames(Namer(), prev, keep={0}).name([P(0), P(1), P(4)])
    assert [n.name for n in out] == ["Loyal buyers", "Loyal buyers (new)", "Loyal buyers (new 2)"]
    from embeddings.naming.distinct import base_name

    assert base_name(out[1].name) != "Loyal buyers"  # not "alike": the kept name is never re-told apart
    assert out[0].description == "kept"


def test_retrain_auto_says_which_number(ws, base, tmp_path):
    from seqcohort.refresh import refresh

    p2 = pl.read_parquet(base[1]["p2"])
    p2 = p2.with_columns(event=pl.when(pl.int_range(pl.len()) % 5 == 0).then(pl.lit("subscribe"))
                         .otherwise(pl.col("event")))  # an event type the encoder never saw
    p2.write_parquet(tmp_path / "p2.parquet")
    v1 = Workspace(ws).current()
    res = refresh(ws, tmp_path / "p2.parquet", fast_cfg())
    assert res.decision["retrain"] and "refresh.retrain_oov" in res.decision["why"]
    assert res.drift is not None and res.drift["population"]["oov_share"] == pytest.approx(0.2, abs=0.01)
    v2 = Workspace(ws).current()
    assert json.loads((v2 / "encoder" / "manifest.json").read_text()) != json.loads(
        (v1 / "encoder" / "manifest.json").read_text())
    assert _assign(v2)["cohort_id"].null_count() == 0
    res = refresh(ws, base[1]["late"], fast_cfg("refresh.retrain_oov=1.0"), retrain="never")
    assert not res.decision["retrain"]


def test_bad_input_changes_nothing(ws, base, tmp_path):
    from seqcohort.refresh import refresh

    versions = Workspace(ws).versions()
    pl.read_parquet(base[1]["p2"]).rename({"user_id": "customer"}).write_parquet(tmp_path / "odd.parquet")
    with pytest.raises(SchemaError, match="user_id"):
        refresh(ws, tmp_path / "odd.parquet", fast_cfg())
    with pytest.raises(WorkspaceError, match="no published version"):
        refresh(tmp_path / "empty", base[1]["p2"], fast_cfg())
    assert Workspace(ws).versions() == versions


def test_second_refresh_is_refused_while_one_runs(ws, base):
    from embeddings.living.lock import workspace_lock
    from seqcohort import pipeline
    from seqcohort.refresh import refresh

    with workspace_lock(ws, "seqcohort refresh"):
        with pytest.raises(WorkspaceError, match="busy.*seqcohort refresh"):
            refresh(ws, base[1]["p2"], fast_cfg())
        with pytest.raises(WorkspaceError, match="busy"):  # nor may run / cluster / name publish meanwhile
            pipeline.recluster(ws, fast_cfg())
    assert refresh(ws, base[1]["p2"], fast_cfg()).version_dir is not None  # released


def _cli(ws: Path, events: Path) -> list[str]:
    from tests.living_data import FAST_SETS

    sets = [a for s in FAST_SETS for a in ("--set", s)]
    return [sys.executable, "-m", "seqcohort", "refresh", "--workspace", str(ws), "--events", str(events), *sets]


def test_kill_9_mid_refresh_leaves_current_loadable(ws, base):
    """SIGKILL while the new version is being written: current stays the old, complete version."""
    w = Workspace(ws)
    v1 = w.current_id()
    proc = subprocess.Popen(_cli(ws, base[1]["p2"]), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if any(w.versions_dir.glob(".staging-*")):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    if killed:
        assert w.current_id() == v1
    w.load().assign(pl.read_parquet(base[1]["p2"]).head(50))  # current loads and answers either way
    assert killed, "the refresh finished before it could be killed mid-write"
    # the next refresh cleans up and publishes; the lock was released by the kill
    out = subprocess.run(_cli(ws, base[1]["p2"]), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert w.current_id() != v1 and not any(w.versions_dir.glob(".staging-*"))
    assert len(list((ws / "store").glob("*.parquet"))) == 1


def test_cli_changes_and_cohorts_show_deltas(ws, base, tmp_path):
    from click.testing import CliRunner

    from seqcohort.cli.root import cli
    from seqcohort.refresh import refresh

    v1 = Workspace(ws).current_id()
    r = CliRunner().invoke(cli, ["cohorts", "--workspace", str(ws)])
    assert r.exit_code == 0 and "change" not in r.output  # a run's cohort ids are not matched to anything
    refresh(ws, base[1]["p2"], fast_cfg())
    a1, a2 = _assign(Workspace(ws).versions_dir / v1), _assign(Workspace(ws).current())
    r = CliRunner().invoke(cli, ["changes", "--workspace", str(ws), "--since", v1, "--out", str(tmp_path / "d.csv")])
    assert r.exit_code == 0, r.output
    d = pl.read_csv(tmp_path / "d.csv", schema_overrides={"user_id": pl.String})
    cid = int(a2["cohort_id"][0])
    entered = set(d.filter((pl.col("cohort_id") == cid) & (pl.col("change") == "entered"))["user_id"].to_list())
    want = set(a2.filter(pl.col("cohort_id") == cid)["user_id"].to_list()) - set(
        a1.filter(pl.col("cohort_id") == cid)["user_id"].to_list())
    assert entered == want
    r = CliRunner().invoke(cli, ["changes", "--workspace", str(ws), "--cohort", str(cid), "--out",
                                 str(tmp_path / "c.parquet")])
    assert r.exit_code == 0 and set(pl.read_parquet(tmp_path / "c.parquet")["cohort_id"].to_list()) <= {cid}
    r = CliRunner().invoke(cli, ["changes", "--workspace", str(ws), "--since", "nope", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "no version 'nope'" in r.output
    r = CliRunner().invoke(cli, ["cohorts", "--workspace", str(ws)])
    assert r.exit_code == 0 and "change" in r.output
    # the HTTP route's pages (serving/changes.py) hold the same delta, whole and in order
    from fastapi import HTTPException

    from serving.changes import changes_page

    got, cursor = [], None
    while True:
        page = changes_page(str(ws), cid, v1, limit=7, cursor=cursor)
        got += page["changes"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert page["total"] == len(got) and page["entered"] == len(want)
    assert {c["user_id"] for c in got if c["change"] == "entered"} == want
    with pytest.raises(HTTPException) as e:
        changes_page(str(ws), cid, "nope", limit=7)
    assert e.value.status_code == 404


def test_keep_versions_prunes_old_ones(ws, base):
    from seqcohort.refresh import refresh

    refresh(ws, base[1]["late"], fast_cfg())
    assert len(Workspace(ws).versions()) == 2
    refresh(ws, base[1]["p2"], fast_cfg("refresh.keep_versions=1"))
    w = Workspace(ws)
    assert w.versions() == [w.current_id()]
    assert w.load().assignments_ is not None


def test_as_of_moves_forward(ws, base):
    from seqcohort.refresh import refresh

    res = refresh(ws, base[1]["p2"], fast_cfg())
    assert res.drift is not None
    assert datetime.fromisoformat(res.drift["as_of"]) == pl.read_parquet(base[1]["p2"])["ts"].max()


def test_refresh_after_recluster_and_from_the_cli(ws, base):
    """A version published by `cluster` in between still names the event store; the CLI uses the workspace's config."""
    from click.testing import CliRunner

    from seqcohort import pipeline
    from seqcohort.cli.root import cli
    from seqcohort.refresh import refresh

    refresh(ws, base[1]["late"], fast_cfg())
    pipeline.recluster(ws, fast_cfg())
    r = CliRunner().invoke(cli, ["refresh", "--workspace", str(ws), "--events", str(base[1]["p2"])])
    out = " ".join(r.output.split())  # rich wraps lines
    assert r.exit_code == 0, out
    assert "0 already seen" in out and out.startswith("published")
    cur = Workspace(ws).current()
    meta = json.loads((cur / "version.json").read_text())
    assert meta["config"]["trainer"]["max_steps"] == 30  # the run's settings, not the defaults
    store = pl.read_parquet(ws / meta["event_store"])
    assert store.height == sum(pl.read_parquet(base[1][k]).height for k in ("p1", "late", "p2"))
    r = CliRunner().invoke(cli, ["refresh", "--workspace", str(ws), "--events", str(base[1]["p2"])])
    assert r.exit_code == 0 and "nothing published" in " ".join(r.output.split())


def test_new_file_is_read_with_the_runs_column_map(tmp_path):
    """A workspace run with --map reads later files the same way; a file in other columns is refused, naming them."""
    from click.testing import CliRunner

    from seqcohort.cli.root import cli
    from tests.living_data import FAST_SETS, make_periods

    paths = make_periods(tmp_path / "data", n_users=120, seed=9)
    theirs = {"user_id": "CustomerID", "ts": "When", "event": "Action"}
    for k in ("p1", "p2"):
        pl.read_parquet(paths[k]).rename(theirs).write_csv(tmp_path / f"{k}.csv")
    ws = tmp_path / "ws"
    maps = [a for k, v in theirs.items() for a in ("--map", f"{k}={v}")]
    sets = [a for s in FAST_SETS for a in ("--set", s)]
    r = CliRunner().invoke(cli, ["run", "--events", str(tmp_path / "p1.csv"), "--workspace", str(ws), *maps, *sets])
    assert r.exit_code == 0, r.output
    versions = Workspace(ws).versions()
    r = CliRunner().invoke(cli, ["refresh", "--workspace", str(ws), "--events", str(paths["p2"])])  # canonical names
    assert r.exit_code == 2 and "CustomerID" in r.output and Workspace(ws).versions() == versions
    r = CliRunner().invoke(cli, ["refresh", "--workspace", str(ws), "--events", str(tmp_path / "p2.csv")])
    assert r.exit_code == 0, r.output
    assert _assign(Workspace(ws).current()).height == pl.concat(
        [pl.read_parquet(paths["p1"]), pl.read_parquet(paths["p2"])])["user_id"].n_unique()


def test_every_version_says_what_changed(ws):
    """Versions from run and cluster get changes.parquet and drift.json too (written on publish)."""
    from seqcohort import pipeline

    w = Workspace(ws)
    v1 = w.current()
    first = pl.read_parquet(v1 / "changes.parquet")
    assert set(first["reason"].to_list()) == {"new_user"} and first.height == _assign(v1).height
    pipeline.recluster(ws, fast_cfg("cluster.k=3"))
    v2 = w.current()
    a1, a2 = _assign(v1), _assign(v2)
    j = a1.join(a2, on="user_id", suffix="_new")
    changes = pl.read_parquet(v2 / "changes.parquet")
    assert set(changes["user_id"].to_list()) == set(j.filter(pl.col("cohort_id") != pl.col("cohort_id_new"))["user_id"])
    assert set(changes["reason"].to_list()) <= {"refit"}
    drift = json.loads((v2 / "drift.json").read_text())
    assert drift["previous"] == v1.name
    assert sum(c["size_after"] for c in drift["cohorts"]) == a2.height


def test_refresh_publishes_the_titles_it_encoded(tmp_path, monkeypatch):
    """A refresh that keeps the encoder writes the titles it encoded into the new version's bundle, under the
    same encoder version, so the next refresh, re-embed or serving replica never encodes them again."""
    from embeddings.features import item_text
    from embeddings.model.embed import UserEncoder
    from seqcohort import pipeline
    from seqcohort.refresh import refresh
    from tests.living_data import make_periods

    paths = make_periods(tmp_path / "data", n_users=60)
    cfg = fast_cfg("features.item_text=auto", "features.item_text_dim=4", "trainer.max_steps=2")  # cache, not quality
    ws = tmp_path / "ws"
    pipeline.run(paths["p1"], ws, cfg)
    v1 = Workspace(ws).current()
    p2 = pl.read_parquet(paths["p2"]).with_columns(pl.col("text") + " (2026 edition)")  # titles nobody has seen
    p2.write_parquet(tmp_path / "p2.parquet")
    refresh(ws, tmp_path / "p2.parquet", cfg, retrain="never")
    v2 = Workspace(ws).current()
    monkeypatch.setattr(item_text, "encode_titles", lambda *a, **k: pytest.fail("a published title was re-encoded"))
    enc = UserEncoder.load(v2 / "encoder", device="cpu")
    new_keys = {item_text.text_key(t) for t in p2["text"].drop_nulls().unique()}
    assert new_keys and new_keys <= enc.featurizer.item_text_.cache_.keys()
    assert enc.version == UserEncoder.load(v1 / "encoder", device="cpu").version  # the same encoder, a bigger cache
    assert json.loads((v2 / "cohorts.json").read_text())["model_version"] == enc.version
    enc.encode(p2, as_of=p2.get_column("ts").max())  # every title a lookup
