"""The public API (`import seqcohort as sc`) gives what the CLI gives, and `evaluate` scores what `run` publishes."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import TINY_SETS

import seqcohort as sc
from embeddings.errors import NotFittedError, WorkspaceError
from seqcohort.cli import cli


def _new_users(events: pl.DataFrame) -> pl.DataFrame:
    """A mix of known users cut short (1-3 events), whole histories and users never seen."""
    users = events["user_id"].unique().sort().to_list()
    short = events.filter(pl.col("user_id").is_in(users[:30])).group_by("user_id", maintain_order=True).head(2)
    whole = events.filter(pl.col("user_id").is_in(users[30:60]))
    fresh = events.filter(pl.col("user_id").is_in(users[60:90])).with_columns(
        pl.concat_str(pl.lit("new-"), pl.col("user_id")).alias("user_id"))
    return pl.concat([short, whole, fresh]).sort(["user_id", "ts"])


def test_public_names_are_the_documented_surface() -> None:
    assert set(sc.__all__) >= {"read_events", "Config", "load_config", "Encoder", "CohortModel", "Workspace"}
    with pytest.raises(AttributeError):
        sc.no_such_name  # noqa: B018


def test_workspace_load_assign_equals_the_cli_for_every_user(trained_workspace, synth_small, tmp_path) -> None:
    new = _new_users(synth_small.events)
    path = tmp_path / "new.parquet"
    new.write_parquet(path)
    out = tmp_path / "assigned.parquet"
    res = CliRunner().invoke(cli, ["assign", "--events", str(path), "--out", str(out), "-w", str(trained_workspace)])
    assert res.exit_code == 0, res.output
    cli_rows = pl.read_parquet(out)
    api_rows = sc.Workspace(trained_workspace).load().assign(sc.read_events(path))
    assert api_rows.columns == cli_rows.columns
    assert api_rows.height == new["user_id"].n_unique() == cli_rows.height
    assert api_rows.equals(cli_rows)


def test_one_user_alone_gets_what_the_batch_gives(trained_workspace, synth_small) -> None:
    model = sc.Workspace(trained_workspace).load()
    new = _new_users(synth_small.events)
    as_of = synth_small.as_of  # the default, each call's latest event, would differ between one user and all
    batch = model.assign(new, as_of=as_of)
    for u in batch["user_id"].to_list()[::17]:
        one = model.assign(new.filter(pl.col("user_id") == u), as_of=as_of)
        row = batch.filter(pl.col("user_id") == u)
        assert one["cohort_id"][0] == row["cohort_id"][0]
        assert one["confidence"][0] == pytest.approx(row["confidence"][0], abs=1e-3)  # padding: float noise


def test_encode_returns_the_ids_it_encoded(trained_workspace, synth_small) -> None:
    enc = sc.Encoder.load(trained_workspace / "current" / "encoder", device="cpu")
    sample = synth_small.events.filter(pl.col("user_id").is_in(["u000007", "u000003", "u000005"]))
    user_ids, X = enc.encode(sample)
    assert user_ids.tolist() == ["u000003", "u000005", "u000007"]
    assert X.shape == (3, enc.dim) and X.dtype == np.float32
    assert not hasattr(enc, "last_user_ids")


def test_fit_save_load_round_trip_and_rename_without_refit(trained_workspace, synth_small, tmp_path, tiny_cfg) -> None:
    model = sc.Workspace(trained_workspace).load(config=tiny_cfg)
    before = model.labels_.copy()
    model.rename(sc.make_namer("stats"))
    assert np.array_equal(model.labels_, before)
    model.save(tmp_path / "saved")
    again = sc.CohortModel.load(tmp_path / "saved", tiny_cfg)
    assert again.cohort_table().equals(model.cohort_table())
    assert np.array_equal(again.labels_, before)
    new = _new_users(synth_small.events)
    assert again.assign(new).drop("neighbors").equals(model.assign(new).drop("neighbors"))


def test_an_unfitted_model_and_an_empty_workspace_say_what_to_do(tmp_path) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        sc.CohortModel().cohort_table()
    with pytest.raises(WorkspaceError, match="seqcohort run"):
        sc.Workspace(tmp_path / "nothing").load()
    with pytest.raises(WorkspaceError, match="not a complete cohort model"):
        sc.CohortModel.load(tmp_path)


def test_publish_keeps_human_overrides(trained_workspace, tmp_path, tiny_cfg) -> None:
    import shutil

    ws_dir = tmp_path / "ws"
    shutil.copytree(trained_workspace, ws_dir, symlinks=True)
    ws = sc.Workspace(ws_dir)
    ws.overrides().rename(0, "VIP gadget fans")
    model = ws.load(config=tiny_cfg)
    model.rename(sc.make_namer("stats"))
    assert model.cohorts_.by_id(0).name != "VIP gadget fans"
    ws.publish(model)
    assert ws.load().cohorts_.by_id(0).name == "VIP gadget fans"
    assert len(ws.versions()) == 2


@pytest.mark.slow
def test_evaluate_scores_the_cohorts_run_publishes(synth_small, tmp_path) -> None:
    """The backtest's behaviour cohorts for a window are `run`'s cohorts on the same events and as_of."""
    from embeddings.evaluation.goals import parse_goal
    from seqcohort import pipeline
    from seqcohort.evaluation import PipelineProducer

    events = synth_small.events
    cutoff = events["ts"].max() - timedelta(days=30)
    before = events.filter(pl.col("ts") <= cutoff)
    cfg = sc.load_config(sets=[*TINY_SETS, f"data.as_of={cutoff.isoformat()}"])
    res = pipeline.run("in-memory", tmp_path / "ws", cfg, events=before)
    published = pl.read_parquet(res.version_dir / "assignments.parquet").sort("user_id")
    snap = PipelineProducer(cfg, parse_goal("purchase", "30d"), tmp_path / "bt")(before, cutoff)
    scored = pl.DataFrame({"user_id": snap.user_ids.astype(str),
                           "cohort_id": snap.segmentations["ai_behaviour_cohorts"]}).sort("user_id")
    assert scored["user_id"].equals(published["user_id"])
    assert scored["cohort_id"].equals(published["cohort_id"])
    assert isinstance(cutoff, datetime)
