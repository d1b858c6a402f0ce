"""`--engine ray`: Ray Data embedding equals one process, Ray Train writes bundles that embed, failures are clean.

One local Ray (2 CPUs) serves the module; the error tests run before it starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from seqcohort.cli import cli
from tests.living_data import FAST_SETS, build_workspace, copy_workspace

SETS = [a for s in FAST_SETS for a in ("--set", s)]


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False, env=env)


def read_by_user(path: Path | str) -> pl.DataFrame:
    return pl.read_parquet(path).sort("user_id")


def assert_same_embeddings(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a["user_id"].to_list() == b["user_id"].to_list()
    assert a["as_of"].unique().to_list() == b["as_of"].unique().to_list()
    diff = np.abs(a["embedding"].to_numpy() - b["embedding"].to_numpy()).max()
    assert diff <= 1e-4, diff


@pytest.fixture(scope="module")
def living(tmp_path_factory):
    return build_workspace(tmp_path_factory.mktemp("scale"))


@pytest.fixture(scope="module")
def tied_events(living, tmp_path_factory) -> Path:
    """The run's events as a directory of two parquet parts, timestamps cut to the hour: many events of a
    user share a timestamp, so only the input order places them (what Ray's shuffle must not lose)."""
    ev = pl.read_parquet(living[1]["p1"]).with_columns(pl.col("ts").dt.truncate("1h"))
    root = tmp_path_factory.mktemp("tied") / "events"
    root.mkdir()
    half = ev.height // 2
    ev[:half].write_parquet(root / "part-0.parquet")
    ev[half:].write_parquet(root / "part-1.parquet")
    return root


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_no_ray_and_no_cluster_are_clear_errors(living, tmp_path, monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray started by another test module is still running in this process")
    bundle = str(living[0] / "current" / "encoder")
    args = ("embed", "--engine", "ray", "--events", str(living[1]["p1"]), "--bundle", bundle,
            "--out", str(tmp_path / "e.parquet"))
    r = invoke(*args, "--address", "127.0.0.1:9")
    assert r.exit_code == 2
    assert "No Ray cluster answered at '127.0.0.1:9'" in r.output and "ray start --head" in r.output
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # what `import ray` does where Ray is not installed
        r = invoke(*args)
    assert r.exit_code == 2 and "brings Ray with its data and train extras" in r.output
    assert not (tmp_path / "e.parquet").exists()


@pytest.mark.slow
def test_embed_on_ray_equals_one_process(local_ray, living, tied_events, tmp_path):
    bundle = str(living[0] / "current" / "encoder")
    base = ("embed", "--events", str(tied_events), "--bundle", bundle)
    assert invoke(*base, "--out", str(tmp_path / "local.parquet")).exit_code == 0
    # a directory of parts written by the workers (what an object-store URI gets)
    r = invoke(*base, "--out", str(tmp_path / "parts"), "--engine", "ray", "--workers", "2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "parts" / "_SUCCESS").is_file()
    local = read_by_user(tmp_path / "local.parquet")
    assert local.height == pl.read_parquet(tied_events)["user_id"].n_unique()
    assert_same_embeddings(local, read_by_user(tmp_path / "parts" / "*.parquet"))


@pytest.mark.slow
def test_a_bad_file_read_on_a_worker_is_the_same_clean_error(local_ray, living, tmp_path):
    (tmp_path / "bad.csv").write_text("user_id,event\nu1,view\n")
    r = invoke("embed", "--engine", "ray", "--events", str(tmp_path / "bad.csv"), "--bundle",
               str(living[0] / "current" / "encoder"), "--out", str(tmp_path / "e.parquet"))
    assert r.exit_code == 2
    assert f"error: {tmp_path / 'bad.csv'}: required column 'ts' not found" in r.output
    assert "Traceback" not in r.output and "UDF" not in r.output and not (tmp_path / "e.parquet").exists()


@pytest.mark.slow
def test_a_killed_encoder_actor_is_replaced_and_the_result_is_whole(local_ray, living, tmp_path, monkeypatch):
    """Also reads and writes URIs (file:// here; s3:// and gs:// go through the same pyarrow filesystem)."""
    from embeddings.model.embed import UserEncoder

    monkeypatch.setenv("SEQCOHORT_CHAOS_EMBED", f"{tmp_path / 'kills'}:1")  # the first partition kills its actor
    bundle = living[0] / "current" / "encoder"
    r = invoke("embed", "--events", f"file://{living[1]['p1']}", "--bundle", str(bundle), "--out",  # URIs in and out
               f"file://{tmp_path / 'e.parquet'}", "--engine", "ray")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "kills").iterdir())) == 1
    got = read_by_user(tmp_path / "e.parquet")
    ids, X = UserEncoder.load(bundle, device="cpu").encode(pl.read_parquet(living[1]["p1"]))
    assert got["user_id"].to_list() == list(ids)
    assert np.abs(got["embedding"].to_numpy() - X).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.timeout(600)  # Ray Train waits for its CPUs: fail rather than hang
def test_train_on_ray_writes_a_bundle_that_embeds(local_ray, living, tmp_path, monkeypatch):
    """A training worker killed at its start: Ray Train restarts the group, and the fit completes."""
    from embeddings.model.embed import UserEncoder

    monkeypatch.setenv("SEQCOHORT_CHAOS_TRAIN", f"{tmp_path / 'kills'}:1")
    out = tmp_path / "bundle"
    r = invoke("train", "--events", str(living[1]["p1"]), "--out", str(out), "--engine", "ray", "--workers", "2",
               *SETS)
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "kills").iterdir())) == 1
    enc = UserEncoder.load(out, device="cpu")
    assert enc.bundle.manifest["metrics"]["workers"] == 2
    events = pl.read_parquet(living[1]["p1"])
    ids, X = enc.encode(events)
    assert len(ids) == events["user_id"].n_unique() and X.shape == (len(ids), enc.dim)
    assert np.isfinite(X).all() and np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-3)
    assert not list(tmp_path.glob(".bundle*"))  # no temporary directory left beside it


@pytest.mark.slow
@pytest.mark.timeout(600)  # Ray Train waits for its CPUs: fail rather than hang
def test_goal_aware_run_on_ray_publishes_what_one_process_embeds(local_ray, living, tmp_path):
    """`run --goal --engine ray`: goal-aware Ray Train, then every user embedded on Ray Data, then published."""
    from embeddings.model.embed import UserEncoder
    from embeddings.workspace import Workspace

    ws = tmp_path / "ws"
    r = invoke("run", "--events", str(living[1]["p1"]), "--workspace", str(ws), "--goal", "purchase",
               "--horizon", "30d", "--engine", "ray", "--workers", "2", *SETS)
    assert r.exit_code == 0, r.output
    cur = Workspace(ws).current()
    enc = UserEncoder.load(cur / "encoder", device="cpu")
    assert enc.bundle.manifest["metrics"]["workers"] == 2 and (cur / "encoder" / "propensity.json").is_file()
    as_of = read_by_user(cur / "embeddings.parquet")["as_of"][0]
    ids, X = enc.encode(pl.read_parquet(living[1]["p1"]), as_of=as_of)
    published = read_by_user(cur / "embeddings.parquet")
    assert published["user_id"].to_list() == list(ids)
    assert np.abs(published["embedding"].to_numpy() - X).max() <= 1e-4


@pytest.mark.slow
def test_refresh_whose_workers_keep_dying_exits_2_and_publishes_nothing(local_ray, living, tmp_path, monkeypatch):
    # last in the module: an actor Ray restarts after the job gave up can hold a CPU until the process ends
    from embeddings.workspace import Workspace

    ws = copy_workspace(living[0], tmp_path / "ws")
    before = Workspace(ws).current()
    versions = sorted(p.name for p in (ws / "versions").iterdir())
    monkeypatch.setenv("SEQCOHORT_CHAOS_EMBED", f"{tmp_path / 'kills'}:1000")  # every try dies
    r = invoke("refresh", "--workspace", str(ws), "--events", str(living[1]["p2"]), "--engine", "ray", *SETS)
    assert r.exit_code == 2
    assert "could not recover" in r.output and "Nothing was written" in r.output
    assert Workspace(ws).current() == before
    assert sorted(p.name for p in (ws / "versions").iterdir()) == versions
