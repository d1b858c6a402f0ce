"""Tests of the synthetic event-log generator (embeddings/synthetic/synth.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp

from embeddings.synthetic.synth import (
    ARCHETYPES,
    MAX_EVENTS,
    RFM_TWINS,
    Archetype,
    SynthData,
    generate,
    write,
)

EVENT_SCHEMA = {
    "user_id": pl.String,
    "ts": pl.Datetime("us"),
    "event": pl.String,
    "item": pl.String,
    "category": pl.String,
    "amount": pl.Float64,
    "text": pl.String,
}


@pytest.fixture(scope="module")
def data() -> SynthData:
    return generate(n_users=4000, seed=0)


@pytest.fixture(scope="module")
def rfm(data: SynthData) -> pl.DataFrame:
    """Per-user RFM aggregates and simple sequence features, long-history users only.

    Recency is counted in whole days (as RFM segmentations do), so time-of-day twins compare
    on the date of the last event rather than on its hour.
    """
    events = data.events.with_columns(
        (pl.col("event") == "session_start").cast(pl.Int32).cum_sum().over("user_id").alias("sess")
    ).with_columns(pl.int_range(pl.len()).over("user_id", "sess").alias("pos"))
    hour = pl.col("ts").dt.hour()
    starts = pl.col("event") == "session_start"
    per_user = events.group_by("user_id").agg(
        pl.len().alias("frequency"),
        (pl.lit(data.as_of.date()) - pl.col("ts").max().dt.date()).dt.total_days().alias("recency"),
        pl.col("amount").filter(pl.col("event") == "purchase").sum().alias("monetary"),
        ((hour >= 22) | (hour < 3)).filter(starts).mean().alias("night_share"),
        ((hour >= 5) & (hour < 9)).filter(starts).mean().alias("morning_share"),
        pl.col("pos").filter(pl.col("event") == "add_to_cart").mean().alias("cart_pos"),
        pl.col("pos").filter(pl.col("event") == "page_view").mean().alias("view_pos"),
    )
    return per_user.join(data.truth, on="user_id").filter(~pl.col("short_history"))


def test_events_schema_and_sort_order(data: SynthData) -> None:
    events = data.events
    assert dict(events.schema) == EVENT_SCHEMA
    assert events.equals(events.sort("user_id", "ts", maintain_order=True))
    # Timestamps strictly increase within a user, so the order inside a session is unambiguous.
    prev = events.select(pl.col("ts").shift().over("user_id").alias("prev"), "ts").drop_nulls()
    assert (prev["ts"] > prev["prev"]).all()
    assert events["user_id"].null_count() == events["ts"].null_count() == 0
    assert events["event"].null_count() == 0


def test_events_content(data: SynthData) -> None:
    events, catalog = data.events, data.catalog
    assert events["ts"].max() < data.as_of
    assert events["ts"].min() >= data.as_of - timedelta(days=372)
    assert set(events["event"].unique()) == {
        "session_start", "search", "page_view", "wishlist", "add_to_cart",
        "coupon_use", "purchase", "return", "review",
    }  # fmt: skip
    # Amounts only on purchase-like events: purchases at catalog price, refunds and coupons negative.
    with_amount = events.filter(pl.col("amount").is_not_null())
    assert set(with_amount["event"].unique()) == {"purchase", "return", "coupon_use"}
    buys = events.filter(pl.col("event") == "purchase").join(catalog, on="item")
    assert buys.height == events.filter(pl.col("event") == "purchase").height
    assert (buys["amount"] == buys["price"]).all()
    assert (events.filter(pl.col("event").is_in(["return", "coupon_use"]))["amount"] < 0).all()
    # Item events carry a catalog item, its category and its title.
    with_item = events.filter(pl.col("item").is_not_null()).join(catalog, on="item")
    assert with_item.height == events["item"].is_not_null().sum()
    assert (with_item["category"] == with_item["category_right"]).all()
    assert (with_item["text"] == with_item["title"]).all()
    assert events.filter(pl.col("event") == "session_start")["category"].null_count() > 0


def test_catalog(data: SynthData) -> None:
    catalog = data.catalog
    assert dict(catalog.schema) == {
        "item": pl.String, "category": pl.String, "title": pl.String, "price": pl.Float64,
    }  # fmt: skip
    assert 200 <= catalog.height <= 600
    assert catalog["category"].n_unique() >= 8
    assert catalog["item"].is_unique().all() and catalog["title"].is_unique().all()
    assert (catalog["price"] > 0).all()
    medians = catalog.group_by("category").agg(pl.col("price").median()).sort("price")
    assert medians["category"][0] == "grocery" and medians["category"][-1] == "electronics"


def test_determinism_by_seed() -> None:
    a, b, c = generate(300, seed=7), generate(300, seed=7), generate(300, seed=8)
    assert a.events.equals(b.events) and a.truth.equals(b.truth) and a.catalog.equals(b.catalog)
    assert not a.events.equals(c.events)


def test_archetypes_unequal_sizes(data: SynthData) -> None:
    assert len(ARCHETYPES) >= 8
    assert len({a.name for a in ARCHETYPES}) == len(ARCHETYPES)
    assert all(a.description and a.weight > 0 for a in ARCHETYPES)
    weights = [a.weight for a in ARCHETYPES]
    assert max(weights) >= 4 * min(weights)
    sizes = data.truth.group_by("archetype").len()
    assert set(sizes["archetype"]) == {a.name for a in ARCHETYPES}
    assert sizes["len"].max() >= 3 * sizes["len"].min()
    share = dict(zip(sizes["archetype"], sizes["len"] / data.truth.height, strict=True))
    for a in ARCHETYPES:
        assert share[a.name] == pytest.approx(a.weight / sum(weights), abs=0.03)


def test_truth_table_and_lengths(data: SynthData) -> None:
    truth = data.truth
    assert dict(truth.schema) == {
        "user_id": pl.String, "archetype": pl.String, "short_history": pl.Boolean,
        "n_events": pl.Int64,
    }  # fmt: skip
    assert truth.height == 4000 and truth["user_id"].is_unique().all()
    counts = data.events.group_by("user_id").len()
    joined = truth.join(counts, on="user_id", how="left")
    assert (joined["n_events"] == joined["len"]).all()
    assert truth["n_events"].min() == 1 and truth["n_events"].max() == MAX_EVENTS
    # Heavy tail: the median user is far below the cap.
    assert truth["n_events"].median() < MAX_EVENTS / 4


def test_short_history_users(data: SynthData) -> None:
    short = data.truth.filter(pl.col("short_history"))
    assert short.height == 200  # 5% of 4000
    assert short["n_events"].is_between(1, 3).all()
    assert set(short["n_events"].unique()) == {1, 2, 3}
    assert short["archetype"].n_unique() >= 8
    # Their events are the end of one session: a session start can only come first.
    events = data.events.join(short, on="user_id").with_columns(
        pl.int_range(pl.len()).over("user_id").alias("pos")
    )
    assert events.filter((pl.col("event") == "session_start") & (pl.col("pos") > 0)).height == 0
    assert (events.group_by("user_id").agg(pl.col("ts").max() - pl.col("ts").min())["ts"]
            < timedelta(hours=6)).all()  # fmt: skip


@pytest.mark.parametrize("pair", RFM_TWINS)
def test_rfm_twins_are_indistinguishable_by_rfm(rfm: pl.DataFrame, pair: tuple[str, str]) -> None:
    a = rfm.filter(pl.col("archetype") == pair[0])
    b = rfm.filter(pl.col("archetype") == pair[1])
    assert a.height > 150 and b.height > 150
    for column in ("frequency", "recency", "monetary"):
        p = ks_2samp(a[column].to_numpy(), b[column].to_numpy()).pvalue
        assert p > 0.01, f"{pair} differ in {column} (KS p={p:.4f})"


def test_twins_share_categories_and_event_mix(data: SynthData) -> None:
    # Per-user shares of each event type and category: equal means within 4 standard errors.
    events = data.events.join(data.truth.filter(~pl.col("short_history")), on="user_id")
    values = {c: events[c].drop_nulls().unique().to_list() for c in ("event", "category")}
    shares = events.group_by("user_id", "archetype").agg(
        (pl.col(c) == v).mean().alias(f"{c}={v}") for c, vs in values.items() for v in vs
    )
    for pair in RFM_TWINS:
        a, b = (shares.filter(pl.col("archetype") == name) for name in pair)
        for column in shares.columns[2:]:
            x, y = a[column].to_numpy(), b[column].to_numpy()
            se = np.sqrt(x.var() / x.size + y.var() / y.size)
            assert abs(x.mean() - y.mean()) < 4 * se + 1e-9, f"{pair} differ in {column}"


def test_order_twins_differ_in_order(rfm: pl.DataFrame) -> None:
    # Researchers add to cart at the end of a session, impulse buyers right after arriving.
    by = rfm.group_by("archetype").agg(
        pl.col("cart_pos").median(), pl.col("view_pos").median(), pl.col("night_share").mean()
    )
    row = {r["archetype"]: r for r in by.iter_rows(named=True)}
    res, imp = row["researchers"], row["impulse_buyers"]
    assert res["cart_pos"] > res["view_pos"] + 2
    assert imp["cart_pos"] < imp["view_pos"] - 2
    assert abs(res["night_share"] - imp["night_share"]) < 0.03  # same hours


def test_time_twins_differ_in_hour(rfm: pl.DataFrame) -> None:
    owls = rfm.filter(pl.col("archetype") == "night_owls")
    birds = rfm.filter(pl.col("archetype") == "early_birds")
    assert owls["night_share"].mean() > 0.7 and birds["night_share"].mean() < 0.1
    assert birds["morning_share"].mean() > 0.7 and owls["morning_share"].mean() < 0.1
    # ... and not in order.
    order = (pl.col("cart_pos") - pl.col("view_pos")).median()
    assert owls.select(order).item() == pytest.approx(birds.select(order).item(), abs=0.5)


def test_short_share_and_as_of_are_configurable() -> None:
    as_of = datetime(2024, 7, 1, 12, 30)
    data = generate(200, seed=1, short_share=0.0, as_of=as_of)
    assert not data.truth["short_history"].any()
    assert data.as_of == as_of and data.events["ts"].max() < as_of
    assert generate(200, seed=1, short_share=1.0).truth["short_history"].all()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="n_users"):
        generate(0)
    with pytest.raises(ValueError, match="short_share"):
        generate(10, short_share=1.5)
    with pytest.raises(ValueError, match="Unknown categories"):
        generate(10, archetypes=[Archetype("x", "x", 1.0, {"spaceships": 1.0})])


def test_custom_archetypes() -> None:
    arcs = [
        Archetype("a", "Buyers of books", 0.7, {"books": 1.0}),
        Archetype("b", "Buyers of toys", 0.3, {"toys": 1.0}, order="browse"),
    ]
    data = generate(300, seed=2, archetypes=arcs)
    assert set(data.truth["archetype"]) == {"a", "b"}
    assert data.archetypes == arcs


def test_write_reads_back_equal(data: SynthData, tmp_path: Path) -> None:
    small = generate(200, seed=3)
    paths = write(small, tmp_path / "out")
    assert set(paths) == {"events", "truth", "catalog", "archetypes"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "archetypes.json", "catalog.parquet", "events.parquet", "truth.parquet",
    ]  # fmt: skip
    assert pl.read_parquet(paths["events"]).equals(small.events)
    assert pl.read_parquet(paths["truth"]).equals(small.truth)
    assert pl.read_parquet(paths["catalog"]).equals(small.catalog)
    meta = json.loads(paths["archetypes"].read_text(encoding="utf-8"))
    assert meta == [
        {"name": a.name, "description": a.description, "weight": a.weight} for a in ARCHETYPES
    ]
    # Writing again replaces the files in place.
    assert write(small, tmp_path / "out") == paths


def test_write_parts_streams_a_log_in_parts_with_one_catalog(tmp_path: Path) -> None:
    """A log written in parts: every user once with a unique id, the same catalog as `generate`'s,
    parts drawn from their own streams, and below the part size exactly `generate` + `write`."""
    from embeddings.synthetic.synth import write_parts

    paths = write_parts(2500, tmp_path / "parts", seed=3, part_users=1000)
    events, truth = pl.read_parquet(paths["events"]), pl.read_parquet(paths["truth"])
    assert truth.height == 2500 and truth["user_id"].n_unique() == 2500
    assert truth["user_id"].to_list() == [f"u{i:06d}" for i in range(2500)]
    assert events["user_id"].n_unique() == 2500 and dict(events.schema) == EVENT_SCHEMA
    whole = generate(1000, seed=3)
    assert pl.read_parquet(paths["catalog"]).equals(whole.catalog)
    first = events.filter(pl.col("user_id") < "u001000")
    assert first.equals(whole.events)  # part 0 is the seed's own stream
    second = events.filter((pl.col("user_id") >= "u001000") & (pl.col("user_id") < "u002000"))
    assert not second.with_columns(pl.col("user_id").str.slice(1).cast(pl.Int64) - 1000).equals(
        first.with_columns(pl.col("user_id").str.slice(1).cast(pl.Int64)))  # not a copy of part 0
    assert set(truth["archetype"].unique()) == {a.name for a in ARCHETYPES}
    small = write_parts(300, tmp_path / "small", seed=3, part_users=1000)
    assert pl.read_parquet(small["events"]).equals(generate(300, seed=3).events)
    assert not list((tmp_path / "parts").glob(".*"))  # no temporary file left
