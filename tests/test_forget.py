"""seqcohort forget: users gone from every file of the workspace, kept out of later refreshes, audited."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from embeddings.workspace import Workspace
from tests.living_data import build_workspace, copy_workspace, fast_cfg


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory):
    """A workspace with two versions (run, refresh) and an event store."""
    from seqcohort.refresh import refresh

    ws, paths = build_workspace(tmp_path_factory.mktemp("forget"))
    refresh(ws, paths["p2"], fast_cfg())
    return ws, paths


@pytest.fixture()
def ws(refreshed, tmp_path) -> Path:
    return copy_workspace(refreshed[0], tmp_path / "ws")


def _exemplar_ids(vdir: Path) -> list[str]:
    d = json.loads((vdir / "cohorts.json").read_text())
    return [e["user_id"] for c in d["cohorts"] for e in c["profile"]["exemplars"]]


def _holders(root: Path, ids: list[str]) -> list[str]:
    """Files under `root` whose raw bytes, or any parquet column, hold one of `ids`."""
    found = []
    needles = [u.encode() for u in ids]
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        if any(n in p.read_bytes() for n in needles):
            found.append(str(p))
        elif p.suffix == ".parquet":
            df = pl.read_parquet(p)
            for col, dt in df.schema.items():
                if dt == pl.String and df.get_column(col).is_in(ids).any():
                    found.append(f"{p}:{col}")
    return found


def test_forget_removes_users_everywhere(ws, refreshed, tmp_path):
    from click.testing import CliRunner

    from seqcohort.cli.root import cli

    w = Workspace(ws)
    before = w.current_id()
    victims = sorted(set(_exemplar_ids(w.current())[:2]) | {"u000003"})  # exemplars quote them in cohorts.json
    assert _holders(ws, victims)  # they are there to begin with
    (ws / "naming_cache").mkdir(exist_ok=True)
    (ws / "naming_cache" / "x.json").write_text(json.dumps({"name": "n", "description": f"like {victims[0]}"}))
    (ws / "naming_cache" / "y.json").write_text(json.dumps({"name": "kept"}))
    (tmp_path / "ids.txt").write_text("\n".join([*victims, "nobody-1", "nobody-2"]) + "\n")
    r = CliRunner().invoke(cli, ["forget", "--workspace", str(ws), "--users", str(tmp_path / "ids.txt")])
    assert r.exit_code == 0, r.output
    assert f"forgot {len(victims)} of {len(victims) + 2}" in r.output and "2 unknown" in r.output
    assert _holders(ws, victims) == []
    assert not (ws / "naming_cache" / "x.json").exists() and (ws / "naming_cache" / "y.json").exists()
    assert w.current_id() != before  # republished: serving swaps to it
    for v in w.versions():
        m = w.load(v)
        assert len(m.index_) == len(m.user_ids_) == m.assignments_.height
        cs = json.loads((w.versions_dir / v / "cohorts.json").read_text())
        assert sum(c["size"] for c in cs["cohorts"]) == m.assignments_.height
    cur = json.loads((w.current() / "cohorts.json").read_text())["cohorts"]  # profiles recomputed without them
    assert all(len(c["profile"]["exemplars"]) == min(4, c["size"]) for c in cur)
    changes = pl.read_parquet(w.current() / "changes.parquet")
    assert changes.height == len(victims) and set(changes["reason"]) == {"forgotten"}
    assert changes["cohort_id"].null_count() == len(victims)
    audit = json.loads(next((ws / "audit").glob("forget-*.json")).read_text())
    assert audit["forgotten"] == len(victims) and audit["unknown"] == 2
    # everyone else is still served
    others = pl.read_parquet(refreshed[1]["p2"]).filter(~pl.col("user_id").is_in(victims)).head(200)
    assert w.load().assign(others)["cohort_id"].null_count() == 0


def test_forgotten_users_stay_out_of_later_refreshes(ws, refreshed, tmp_path):
    from embeddings.living.forget import forget
    from seqcohort.refresh import refresh

    p2 = pl.read_parquet(refreshed[1]["p2"])
    victims = sorted(p2["user_id"].unique().to_list())[:2]  # users with events in the last period
    forget(ws, victims)
    again = p2.filter(pl.col("user_id").is_in(victims))
    assert again.height > 0
    shifted = pl.concat([again, p2.filter(~pl.col("user_id").is_in(victims)).head(30)]).with_columns(
        ts=pl.col("ts") + pl.duration(days=3))
    shifted.write_parquet(tmp_path / "p3.parquet")
    res = refresh(ws, tmp_path / "p3.parquet", fast_cfg())
    assert res.counts["suppressed"] == again.height and res.counts["new"] == 30
    assert _holders(ws, victims) == []


def test_serving_stops_answering_for_them(ws):
    from serving.state import AssignerState

    w = Workspace(ws)
    uid = str(w.load().assignments_["user_id"][5])
    assert AssignerState.load(w.current_id(), w.current()).lookup(uid) is not None
    from embeddings.living.forget import forget

    forget(ws, [uid])
    assert AssignerState.load(w.current_id(), w.current()).lookup(uid) is None


def test_forget_prunes_with_keep_versions(ws):
    from embeddings.living.forget import forget

    res = forget(ws, ["u000020"], keep_versions=1)
    w = Workspace(ws)
    assert w.versions() == [res.version] and w.load().assignments_ is not None


def test_forget_needs_ids(ws):
    from click.testing import CliRunner

    from seqcohort.cli.root import cli

    r = CliRunner().invoke(cli, ["forget", "--workspace", str(ws)])
    assert r.exit_code == 2 and "--users FILE" in r.output


def test_an_interrupted_forget_finishes_when_run_again(ws, monkeypatch):
    import embeddings.living.forget as fg

    victims = sorted(set(_exemplar_ids(Workspace(ws).current())[:2]))
    calls = {"n": 0}
    real = fg._recount

    def crash_on_second(vdir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a crash after the first version was cleaned
        return real(vdir)

    monkeypatch.setattr(fg, "_recount", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        fg.forget(ws, victims)
    assert _holders(ws, victims)  # half done
    assert Workspace(ws).load().assignments_ is not None  # current still loads
    monkeypatch.setattr(fg, "_recount", real)
    fg.forget(ws, victims)
    assert _holders(ws, victims) == []


def test_serving_drops_cached_versions_after_a_forget(ws):
    """Older versions a replica holds in memory (e.g. for a member-paging cursor) are reloaded from the cleaned files."""
    from embeddings.living.forget import forget
    from serving.state import Versions

    w = Workspace(ws)
    old = w.versions()[0]
    uid = str(pl.read_parquet(w.versions_dir / old / "assignments.parquet")["user_id"][7])
    versions = Versions(ws, lambda vid, path: pl.read_parquet(path / "assignments.parquet"))
    assert uid in versions.get(old)[1]["user_id"].to_list()  # cached
    forget(ws, [uid])
    assert versions.refresh()
    assert uid not in versions.get(old)[1]["user_id"].to_list()
    assert uid not in versions.get()[1]["user_id"].to_list()
