"""The numpy fast path gives bit-identical SequenceData to the reference `Featurizer.transform`."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embeddings.errors import SchemaError
from embeddings.features.featurizer import Featurizer, FeaturizerConfig, SequenceData
from embeddings.features.small import SmallFeaturizer, columns_frame

EVENTS = ["view", "cart", "purchase", "search"]
CATS = ["books", "garden", "toys"]
CHANNELS = ["web", "app"]
T0 = 1_748_736_000_000_000  # 2025-06-01 in epoch µs


def _fit_columns(n_users: int = 60, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("user_id", "ts", "event", "item", "category", "amount", "text",
                                             "channel", "price")}
    for u in range(n_users):
        for _ in range(int(rng.integers(1, 30))):
            cols["user_id"].append(f"u{u}")
            cols["ts"].append(T0 - int(rng.integers(0, 200 * 86400)) * 1_000_000)
            ev = str(rng.choice(EVENTS))
            cols["event"].append(ev)
            cols["item"].append(f"item{int(rng.integers(50))}")
            cols["category"].append(None if rng.random() < 0.2 else str(rng.choice(CATS)))
            cols["amount"].append(float(np.round(rng.lognormal(3, 1), 2)) if ev == "purchase" else None)
            cols["text"].append("a product")
            cols["channel"].append(None if rng.random() < 0.1 else str(rng.choice(CHANNELS)))
            cols["price"].append(None if rng.random() < 0.1 else float(rng.normal(20, 5)))
    return cols


def _featurizer(extras: bool) -> Featurizer:
    cfg = FeaturizerConfig(extra_categorical=["channel"], extra_numeric=["price"]) if extras else FeaturizerConfig()
    return Featurizer(cfg).fit(columns_frame(_fit_columns(), cfg))


FEATURIZERS = {False: _featurizer(False), True: _featurizer(True)}


def assert_identical(a: SequenceData, b: SequenceData) -> None:
    """Every field of two SequenceData equal: same dtypes, shapes and bytes (NaN bits included)."""
    for f in dataclasses.fields(SequenceData):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "fields":
            assert list(x) == list(y), "field names or their order differ"
            for k in x:
                _same_array(x[k], y[k], f"fields[{k!r}]")
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            _same_array(x, y, f.name)
        else:
            assert x == y and type(x) is type(y), (f.name, x, y)


def _same_array(x: np.ndarray, y: np.ndarray, what: str) -> None:
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray), what
    assert (x.dtype, x.shape) == (y.dtype, y.shape), (what, x.dtype, x.shape, y.dtype, y.shape)
    if x.dtype == object:
        assert x.tolist() == y.tolist(), what
    else:
        assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes(), (what, x, y)


def both(featurizer: Featurizer, cols: dict[str, list], as_of: datetime | None) -> tuple[SequenceData, SequenceData]:
    ref = featurizer.transform(columns_frame(cols, featurizer.config), as_of=as_of)
    fast = SmallFeaturizer(featurizer).transform(cols, as_of=as_of)
    return ref, fast


# ----------------------------------------------------------------------------- random events
_token = st.one_of(st.none(), st.sampled_from(EVENTS + CATS + CHANNELS + ["never-seen", "", "ü-new"]),
                   st.text(max_size=6))
_num = st.one_of(st.none(), st.just(float("nan")), st.floats(allow_nan=True, allow_infinity=True),
                 st.floats(-1e4, 1e4), st.integers(-1000, 1000))


@st.composite
def event_columns(draw) -> tuple[dict[str, list], bool, datetime | None]:
    extras = draw(st.booleans())
    users = draw(st.lists(st.one_of(st.sampled_from(["u1", "u2", "b", "a10"]), st.text(max_size=4)),
                          min_size=1, max_size=12, unique=True))
    base = draw(st.integers(-2_000_000_000_000_000, 6_000_000_000_000_000))  # 1906 .. 2160
    spread = draw(st.sampled_from([0, 10**6, 3600 * 10**6, 400 * 86400 * 10**6]))  # incl. all-equal ts
    rows = draw(st.lists(st.tuples(st.sampled_from(users), st.integers(0, spread), _token, _token, _token,
                                   _num, _token, _num), min_size=1, max_size=120))
    cols: dict[str, list] = {k: [] for k in ("user_id", "ts", "event", "item", "category", "amount")}
    if extras:
        cols.update(channel=[], price=[])
    with_text = draw(st.booleans())
    if with_text:
        cols["text"] = []
    for uid, dt, ev, item, cat, amt, chan, price in rows:  # in drawn (unsorted) order
        cols["user_id"].append(uid)
        cols["ts"].append(base + dt)
        cols["event"].append(ev)
        cols["item"].append(item)
        cols["category"].append(cat)
        cols["amount"].append(None if amt is None else float(amt))
        if extras:
            cols["channel"].append(chan)
            cols["price"].append(None if price is None else float(price))
        if with_text:
            cols["text"].append(ev)
    mode = draw(st.sampled_from(["none", "latest", "later"]))
    latest = datetime(1970, 1, 1) + timedelta(microseconds=max(cols["ts"]))
    as_of = None if mode == "none" else latest if mode == "latest" else latest + timedelta(
        microseconds=draw(st.integers(1, 10**13)))
    return cols, extras, as_of


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_columns())
def test_fast_path_is_bit_identical(case):
    cols, extras, as_of = case
    ref, fast = both(FEATURIZERS[extras], cols, as_of)
    assert_identical(ref, fast)


@pytest.mark.parametrize("extras", [False, True])
def test_many_users_and_one_event_users(extras):
    """Hundreds of users (many with a single event), shuffled rows, duplicate timestamps."""
    rng = np.random.default_rng(1)
    cols = _fit_columns(n_users=400, seed=7)
    n = len(cols["ts"])
    for i in range(0, n, 3):  # one-event users and duplicate timestamps
        cols["user_id"][i] = f"solo{i}"
    cols["ts"] = [t - t % (3600 * 10**6) if i % 2 else t for i, t in enumerate(cols["ts"])]
    cols["amount"] = [float("nan") if i % 11 == 0 else a for i, a in enumerate(cols["amount"])]
    cols["event"] = ["brand-new" if i % 13 == 0 else e for i, e in enumerate(cols["event"])]
    perm = rng.permutation(n)
    cols = {k: [v[i] for i in perm] for k, v in cols.items()}
    if not extras:
        cols.pop("channel"), cols.pop("price")
    f = FEATURIZERS[extras]
    for as_of in (None, datetime(2025, 6, 2, 3, 4, 5, 678)):
        ref, fast = both(f, cols, as_of)
        assert len(fast) > 400 and (fast.lengths == 1).sum() > 100
        assert_identical(ref, fast)


def test_ties_keep_input_order():
    """Events of one user at the same instant keep their input order (a stable sort, like polars')."""
    rng = np.random.default_rng(2)
    n = 3000
    cols = {"user_id": [f"u{int(u)}" for u in rng.integers(0, 20, n)],
            "ts": [T0 + int(t) * 10**6 for t in rng.integers(0, 4, n)],
            "event": [str(e) for e in rng.choice(EVENTS + ["new"], n)],
            "item": [f"i{int(i)}" for i in rng.integers(0, 100, n)],
            "category": [None] * n, "amount": [float(a) for a in rng.normal(0, 50, n)]}
    ref, fast = both(FEATURIZERS[False], cols, None)
    assert_identical(ref, fast)


def test_same_errors_as_reference():
    f = FEATURIZERS[False]
    cols = {"user_id": ["a", "a"], "ts": [T0, T0 + 10**6], "event": ["view", None], "item": [None, "x"],
            "category": [None, None], "amount": [None, 1.0]}
    early = datetime(2025, 6, 1)  # before the second event
    with pytest.raises(SchemaError) as ref:
        f.transform(columns_frame(cols, f.config), as_of=early)
    with pytest.raises(SchemaError) as fast:
        SmallFeaturizer(f).transform(cols, as_of=early)
    assert str(fast.value) == str(ref.value)
    with pytest.raises(SchemaError, match="empty"):
        SmallFeaturizer(f).transform({k: [] for k in cols})
    with pytest.raises(SchemaError, match="amount"):
        SmallFeaturizer(f).transform({k: v for k, v in cols.items() if k != "amount"})
    with pytest.raises(SchemaError, match="channel"):
        SmallFeaturizer(FEATURIZERS[True]).transform(cols)


def test_follows_a_refit():
    cols = {k: v[:200] for k, v in _fit_columns().items()}
    f = Featurizer().fit(columns_frame(cols, FeaturizerConfig()))
    small = SmallFeaturizer(f)
    before = small.transform(cols)
    f.fit(columns_frame({**cols, "event": ["other"] * 200}, FeaturizerConfig()))  # a different vocabulary
    after = small.transform(cols)
    assert not np.array_equal(before.fields["event"], after.fields["event"])
    assert_identical(f.transform(columns_frame(cols, f.config)), after)


def test_absurd_extra_numeric_values_stay_finite_on_both_paths():
    """A price of 1e300 once overflowed to inf in the float32 features (and NaN embeddings)."""
    f = FEATURIZERS[True]
    cols = {"user_id": ["a", "a", "a", "b"], "ts": [T0, T0 + 10**6, T0 + 2 * 10**6, T0],
            "event": ["view", "buy", "view", "view"], "item": ["x", "y", None, "x"],
            "category": [None] * 4, "amount": [1.0, 2.0, None, 3.0],
            "channel": ["web"] * 4, "price": [1e300, -1e300, float("inf"), 20.0]}
    ref, fast = both(f, cols, None)
    assert_identical(ref, fast)
    z = fast.fields["price"]
    assert np.isfinite(z).all() and z.max() == 50.0 and z.min() == -50.0
