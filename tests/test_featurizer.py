from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from embeddings.errors import SchemaError
from embeddings.features.featurizer import (
    FIRST_GAP,
    MISSING,
    N_SPECIAL,
    OOV,
    TRANSITION_TYPES,
    Featurizer,
    FeaturizerConfig,
    stable_hash_bucket,
    transition_ids,
)


def test_fit_transform_shapes_and_ids(tiny_events):
    f = Featurizer().fit(tiny_events)
    data = f.transform(tiny_events)
    assert len(data) == tiny_events["user_id"].n_unique()
    assert data.offsets[-1] == tiny_events.height
    assert (data.lengths >= 1).all()
    ev = data.fields["event"]
    assert ev.min() >= N_SPECIAL  # every training event type is in the vocabulary
    # null categories map to MISSING, not OOV
    n_null = tiny_events["category"].null_count()
    assert (data.fields["category"] == MISSING).sum() == n_null
    # non-purchase rows have no amount -> MISSING bucket and value 0
    no_amt = tiny_events["amount"].is_null().to_numpy()
    assert (data.fields["amount_bucket"][no_amt] == MISSING).all()
    assert np.all(data.fields["amount_value"][no_amt] == 0)
    assert data.fields["gap"][data.offsets[:-1]].tolist() == [FIRST_GAP] * len(data)


def test_unknown_values_map_to_oov_and_never_break(tiny_events):
    f = Featurizer().fit(tiny_events)
    new = tiny_events.head(3).with_columns(
        event=pl.lit("never_seen"), item=pl.lit("brand-new-item"), category=pl.lit("new-cat"),
        amount=pl.Series([float("nan"), float("inf"), -5.0]),
    )
    d = f.transform(new)
    assert set(d.fields["event"].tolist()) == {OOV}
    assert set(d.fields["category"].tolist()) == {OOV}
    assert np.isfinite(d.fields["amount_value"]).all()
    assert d.fields["amount_bucket"][0] == MISSING  # NaN -> missing
    assert d.fields["item"][0] >= N_SPECIAL


def test_hash_buckets_are_stable():
    s = pl.Series(["a", "b", None, "a"])
    out = stable_hash_bucket(s, 1000).to_list()
    assert out[0] == out[3] and out[2] == MISSING
    # crc32("a") % 1000 + 3 — fixed forever, bundles depend on it
    assert out[0] == 3904355907 % 1000 + N_SPECIAL


def test_events_after_as_of_are_an_error(tiny_events):
    f = Featurizer().fit(tiny_events)
    with pytest.raises(SchemaError, match="later than as_of"):
        f.transform(tiny_events, as_of=datetime(2020, 1, 1))


def test_json_round_trip(tiny_events):
    f = Featurizer().fit(tiny_events)
    g = Featurizer.from_dict(json.loads(f.to_json()))
    a, b = f.transform(tiny_events), g.transform(tiny_events)
    for k in a.fields:
        np.testing.assert_array_equal(a.fields[k], b.fields[k])


def test_collate_keeps_last_max_len_and_pads(tiny_events):
    f = Featurizer().fit(tiny_events)
    data = f.transform(tiny_events)
    rows = np.arange(len(data))
    batch = f.collate_users(data, rows, max_len=8)
    lens = batch["lengths"].numpy()
    np.testing.assert_array_equal(lens, np.minimum(data.lengths, 8))
    B, T = batch["event"].shape
    assert B == len(data) and T == 8
    # the last event of user 0 sits at position len-1
    i = 0
    last = data.fields["event"][data.offsets[i + 1] - 1]
    assert batch["event"][i, lens[i] - 1].item() == last
    assert (batch["event"][i, lens[i]:] == 0).all()
    assert batch["gap"][i, 0].item() == FIRST_GAP


def test_subset(tiny_events):
    f = Featurizer().fit(tiny_events)
    data = f.transform(tiny_events)
    sub = data.subset(np.array([2, 0]))
    assert list(sub.user_ids) == [data.user_ids[2], data.user_ids[0]]
    np.testing.assert_array_equal(
        sub.fields["event"][: sub.lengths[0]], data.fields["event"][data.offsets[2] : data.offsets[3]]
    )


def test_context_describes_exactly_the_events_of_each_batch_row():
    """Aggregates come from the row's own events: a view does not leak its user's whole history."""
    as_of = datetime(2024, 1, 31)
    ts = [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11), datetime(2024, 1, 5), datetime(2024, 1, 21)]
    ev = pl.DataFrame({"user_id": ["u"] * 4, "ts": ts, "event": ["buy"] * 4, "item": ["a"] * 4,
                       "category": ["c"] * 4, "amount": [10.0, None, 30.0, -5.0]})
    f = Featurizer().fit(ev)
    data = f.transform(ev, as_of=as_of)
    batch = f.collate(data, [np.arange(4), np.arange(2), np.arange(0)], max_len=8)
    ctx = batch["context"].numpy().astype(np.float64)
    n, recency, spend, tenure, days = (ctx[:, 0] * 5, ctx[:, 1] * 5, ctx[:, 2] * 8, ctx[:, 3] * 6, ctx[:, 4] * 5)
    np.testing.assert_allclose(np.expm1(n[:2]), [4, 2], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(recency[:2]), [10.0, 29 + 13 / 24], rtol=1e-4)  # refunds are not spend
    np.testing.assert_allclose(np.expm1(spend[:2]), [40.0, 10.0], rtol=1e-3)
    np.testing.assert_allclose(np.expm1(tenure[:2]), [19 + 14 / 24, 1 / 24], rtol=1e-3)
    np.testing.assert_allclose(np.expm1(days[:2]), [3, 1], rtol=1e-5)
    assert (ctx[2] == 0).all()  # an empty row has no aggregates


def _events(rows: list[tuple[str, str]]) -> pl.DataFrame:
    """Canonical events (user, event), one second apart in the given order."""
    return pl.DataFrame({
        "user_id": [u for u, _ in rows], "ts": [datetime(2026, 1, 1, 12, 0, i) for i in range(len(rows))],
        "event": [e for _, e in rows], "item": [None] * len(rows), "category": [None] * len(rows),
        "amount": [None] * len(rows),
    }, schema_overrides={"item": pl.String, "category": pl.String, "amount": pl.Float64})


def test_transition_tokens_tell_apart_the_same_events_in_another_order():
    """Order twins have the same bag of events and previous events; their bags of pairs differ."""
    funnel = ["search", "view", "cart", "purchase"]
    ev = _events([("a", e) for e in funnel] + [("b", e) for e in reversed(funnel)])
    f = Featurizer().fit(ev)
    d = f.transform(ev)
    a, b = (slice(d.offsets[i], d.offsets[i + 1]) for i in range(2))
    assert sorted(d.fields["event"][a]) == sorted(d.fields["event"][b])
    t = d.fields["transition"]
    assert set(t[a]).isdisjoint(set(t[b]))
    fold = TRANSITION_TYPES
    np.testing.assert_array_equal(t // fold, d.fields["prev_event"])  # decodes to (prev, event)
    np.testing.assert_array_equal(t % fold, d.fields["event"])
    assert t.max() < f.cardinalities["transition"]
    # event ids past the table fold into OOV; padding (0, 0) stays 0
    big = np.array([0, 3, fold + 5]), np.array([0, fold + 9, 4])
    assert transition_ids(*big).tolist() == [0, 3 * fold + OOV, OOV * fold + 4]
    off = Featurizer(FeaturizerConfig(transitions=False)).fit(ev)
    assert "transition" not in off.transform(ev).fields and "transition" not in off.cardinalities
