"""End-to-end through the real CLI: run, cohorts, assign, export, and every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest
from click.testing import CliRunner

from seqcohort.cli import cli
from tests.conftest import TINY_SETS

SETS = [a for s in TINY_SETS for a in ("--set", s)]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cohorts_table_and_json(trained_workspace):
    r = invoke("cohorts", "--workspace", str(trained_workspace))
    assert r.exit_code == 0 and "name" in r.output
    r = invoke("cohorts", "--workspace", str(trained_workspace), "--json")
    d = json.loads(r.output)
    names = [c["name"] for c in d["cohorts"]]
    assert len(names) == len(set(names)) >= 2
    assert sum(c["size"] for c in d["cohorts"]) == 800


def test_workspace_layout(trained_workspace):
    cur = trained_workspace / "current"
    for f in ("encoder/model.safetensors", "encoder/manifest.json", "embeddings.parquet",
              "assignments.parquet", "cohorts.json", "index.faiss"):
        assert (cur / f).exists(), f
    emb = pl.read_parquet(cur / "embeddings.parquet")
    assert isinstance(emb.schema["embedding"], pl.Array)
    a = pl.read_parquet(cur / "assignments.parquet")
    assert a.columns[:3] == ["user_id", "cohort_id", "confidence"]
    assert a.height == 800 and a["cohort_id"].null_count() == 0
    assert a["confidence"].min() >= 0 and a["confidence"].max() <= 1


def test_assign_new_users_one_event_and_batch_equals_single(trained_workspace, synth_small, tmp_path):
    ev = synth_small.events
    users = ev["user_id"].unique().sort().head(6).to_list()
    new = ev.filter(pl.col("user_id").is_in(users)).group_by("user_id").tail(1)  # ONE event each
    new.write_parquet(tmp_path / "new.parquet")
    out = tmp_path / "assigned.parquet"
    r = invoke("assign", "--events", str(tmp_path / "new.parquet"), "--out", str(out),
               "--workspace", str(trained_workspace), "--as-of", "2026-01-01")
    assert r.exit_code == 0, r.output
    batch = pl.read_parquet(out).sort("user_id")
    assert batch.height == 6
    for u in users[:3]:
        one = tmp_path / f"{u}.parquet"
        new.filter(pl.col("user_id") == u).write_parquet(one)
        invoke("assign", "--events", str(one), "--out", str(tmp_path / "o.parquet"),
               "--workspace", str(trained_workspace), "--as-of", "2026-01-01")
        single = pl.read_parquet(tmp_path / "o.parquet")
        row = batch.filter(pl.col("user_id") == u)
        assert single["cohort_id"][0] == row["cohort_id"][0]
        assert abs(single["confidence"][0] - row["confidence"][0]) < 1e-4


def test_export_one_step(trained_workspace, tmp_path):
    r = invoke("export", "--workspace", str(trained_workspace), "--out", str(tmp_path / "m.csv"), "--cohort", "0")
    assert r.exit_code == 0, r.output
    df = pl.read_csv(tmp_path / "m.csv")
    assert df.columns == ["user_id", "cohort_id", "cohort_name", "confidence"]
    assert set(df["cohort_id"].to_list()) == {0} and df.height > 0


def test_rename_override_survives_renaming(trained_workspace, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws, symlinks=True)
    r = invoke("cohorts", "--workspace", str(ws), "rename", "1", "VIP night shoppers")
    assert r.exit_code == 0, r.output
    r = invoke("name", "--workspace", str(ws), "--namer", "stats")
    assert r.exit_code == 0, r.output
    d = json.loads((ws / "current" / "cohorts.json").read_text())
    assert [c["name"] for c in d["cohorts"] if c["id"] == 1] == ["VIP night shoppers"]
    r = invoke("cohorts", "--workspace", str(ws), "rename", "99", "x")
    assert r.exit_code == 2 and "valid ids" in r.output


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("missing_col.csv", "customer,ts,event\nu1,2025-01-01,view\n", "user_id"),
        ("bad_ts.csv", "user_id,ts,event\nu1,yesterday,view\nu2,2025-01-01,view\n", "ts"),
        ("null_user.csv", "user_id,ts,event\n,2025-01-01,view\nu2,2025-01-01,view\n", "user_id"),
        ("bad_amount.csv", "user_id,ts,event,amount\nu1,2025-01-01,buy,12;50\nu1,2025-01-02,buy,abc\n", "amount"),
        ("ambiguous_dates.csv", "user_id,ts,event\nu1,01/02/2025 10:00,view\nu2,03/04/2025,view\n", "data.ts_format"),
        ("empty.csv", "", "empty"),
        ("events.xlsx", "not really excel", "xlsx"),
    ],
)
def test_bad_input_is_one_clear_paragraph_exit_2_no_workspace(tmp_path, name, content, needle):
    p = tmp_path / name
    p.write_text(content)
    ws = tmp_path / "ws"
    r = CliRunner().invoke(cli, ["run", "--events", str(p), "--workspace", str(ws), *SETS])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert needle.lower() in r.output.lower() and name in r.output
    assert not (ws / "current").exists()


def test_unknown_config_key_exit_2(tmp_path):
    r = CliRunner().invoke(cli, ["run", "--events", "x.parquet", "--set", "trainer.nope=1"])
    assert r.exit_code == 2 and "Valid keys" in r.output


def test_help_loads_no_heavy_library():
    """`seqcohort --help` answers in a fraction of a second: the training, evaluation and Ray stacks load
    when a command runs (the evaluation's scipy and statsmodels once made --help take ~1.5 s)."""
    heavy = ("scipy", "statsmodels", "torch", "lightning", "ray", "sentence_transformers")
    code = ("import sys\nfrom seqcohort.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Usage: " in p.stdout, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_real_subprocess_run_and_cohorts(tmp_path, synth_files):
    """The installed entry point, as a user runs it: run -> cohorts, and a bad file -> exit 2."""
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "seqcohort", "-q", "run", "--events", str(synth_files["events"]),
           "--workspace", str(ws), *SETS]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (ws / "current" / "cohorts.json").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "u1", "event": "view"}\n')
    p = subprocess.run([sys.executable, "-m", "seqcohort", "run", "--events", str(bad), "--workspace",
                        str(tmp_path / "ws2")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout
    assert not (tmp_path / "ws2" / "current").exists()


def test_name_with_hosted_llm_through_cli(trained_workspace, tmp_path, monkeypatch):
    """A new user points --base-url at an OpenAI-compatible server and re-names a workspace."""
    import shutil

    from fake_llm_server import FakeLLMServer

    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws, symlinks=True)
    before = json.loads((ws / "current" / "cohorts.json").read_text())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET123")
    with FakeLLMServer() as server:
        r = invoke("name", "--workspace", str(ws), "--namer", "llm", "--base-url", server.url, "--model", "m")
        assert r.exit_code == 0, r.output
        n_requests = server.fake.count
        assert n_requests >= 1
        after = json.loads((ws / "current" / "cohorts.json").read_text())
        assert all(c["namer"].startswith("llm") for c in after["cohorts"])
        # same assignments, new names, new version
        assert [c["size"] for c in after["cohorts"]] == [c["size"] for c in before["cohorts"]]
        assert (ws / "current").resolve() != (trained_workspace / "current").resolve()
        # second run is served from the cache: no new request
        r = invoke("name", "--workspace", str(ws), "--namer", "llm", "--base-url", server.url, "--model", "m")
        assert r.exit_code == 0 and server.fake.count == n_requests
    for f in ws.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            assert "SECRET123" not in f.read_text(errors="ignore"), f


def test_dataset_command_writes_canonical_events_run_can_read(tmp_path):
    from embeddings.data.schema import read_events
    from tests.test_datasets import DATASETS_ROOT

    if not (DATASETS_ROOT / "completejourney_sample").is_dir():
        pytest.skip(f"Complete Journey sample not found under {DATASETS_ROOT}")
    out = tmp_path / "cj.parquet"
    r = invoke("dataset", "completejourney", "--root", str(DATASETS_ROOT), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "--goal-alias purchase_coupon" in r.output  # tells the user how to count every purchase type
    df, report = read_events(out)
    assert df.height == 75_000 and report.n_rejected == 0
    r = invoke("dataset", "movielens", "--root", str(DATASETS_ROOT), "--out", str(tmp_path / "m.parquet"))
    assert r.exit_code == 2 and "Available: cdnow, completejourney" in r.output
    assert not (tmp_path / "m.parquet").exists()


def test_recluster_rereads_the_source_with_the_runs_column_map(synth_small, tmp_path):
    """`seqcohort cluster` without --events re-reads the file the version was built from; it must read
    it as the run did (--map, event_default, ...), not with the canonical names."""
    orders = (synth_small.events.filter(pl.col("event") == "purchase")
              .select(pl.col("user_id").alias("Customer ID"), pl.col("ts").dt.strftime("%m/%d/%Y %H:%M").alias("InvoiceDate"),
                      pl.col("amount").alias("Value"), pl.col("category").alias("Dept")))
    path = tmp_path / "orders.csv"
    orders.write_csv(path)
    ws = tmp_path / "ws"
    maps = ["--map", "user_id=Customer ID", "--map", "ts=InvoiceDate", "--map", "amount=Value", "--map", "category=Dept"]
    r = invoke("run", "--events", str(path), "--workspace", str(ws), *maps, "--set", "data.event_default=purchase",
               *SETS, "--set", "cluster.k=3")
    assert r.exit_code == 0, r.output
    saved = json.loads((ws / "current" / "version.json").read_text())["config"]["data"]
    assert saved["columns"] == {"user_id": "Customer ID", "ts": "InvoiceDate", "amount": "Value", "category": "Dept"}
    r = invoke("cluster", "--workspace", str(ws), "--set", "cluster.k=4")
    assert r.exit_code == 0, r.output
    assert len(json.loads((ws / "current" / "cohorts.json").read_text())["cohorts"]) == 4


def test_sigterm_during_training_publishes_nothing(tmp_path, synth_files):
    """A scheduler's SIGTERM stops `run` mid-training (Lightning alone would train on): exit 143, no version."""
    import signal
    import time

    ws = tmp_path / "ws"
    sets = [*SETS, "--set", "trainer.max_steps=100000"]  # the last --set wins: training would run for hours
    p = subprocess.Popen([sys.executable, "-m", "seqcohort", "run", "--events", str(synth_files["events"]),
                          "--workspace", str(ws), *sets], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert p.stderr is not None
    deadline = time.monotonic() + 240
    for line in p.stderr:  # wait until training has started
        if "training encoder" in line or time.monotonic() > deadline:
            break
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    rest = p.communicate(timeout=120)[1]
    assert p.returncode == 143, rest[-2000:]
    assert "nothing was published" in rest
    assert not (ws / "current").exists()
    assert not list((ws / "versions").glob("*")), "the staging directory is cleaned up"
