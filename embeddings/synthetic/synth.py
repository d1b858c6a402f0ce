"""Synthetic behavioural event logs with planted archetypes and known ground truth.

`generate` draws users from a set of `Archetype`s, gives each a history of sessions over about a
year ending at `as_of`, and returns the events in the canonical schema plus a truth table. Two
pairs of archetypes are *RFM twins*: identical in every parameter that shapes recency,
frequency, spend and categories, and different only in the order of events inside a session
(`researchers` vs `impulse_buyers`) or in the hour of day (`night_owls` vs `early_birds`).
RFM segmentation cannot tell a twin pair apart; a sequence encoder can.

Everything is vectorised over sessions and events with numpy; the frame is built once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from embeddings.synthetic.archetypes import (  # noqa: F401  (re-exported: the generator's public constants)
    ARCHETYPES,
    BUY,
    CART,
    CATALOG_WORDS,
    CATEGORIES,
    COUPON,
    DEFAULT_AS_OF,
    EVENT_TYPES,
    FIXED_RANK,
    HISTORY_DAYS,
    ITEMS_PER_CATEGORY,
    MAX_EVENTS,
    ORDER_RANKS,
    RETURN,
    REVIEW,
    RFM_TWINS,
    SEARCH,
    START,
    VIEW,
    WISH,
    Archetype,
)

log = logging.getLogger(__name__)


@dataclass
class SynthData:
    """A generated data set: events in the canonical schema plus what was planted."""

    events: pl.DataFrame  # user_id, ts, event, item, category, amount, text; sorted by user_id, ts
    truth: pl.DataFrame  # user_id, archetype (str), short_history (bool), n_events (int)
    catalog: pl.DataFrame  # item, category, title, price
    as_of: datetime  # every event is strictly before this instant (naive UTC)
    archetypes: list[Archetype] = field(default_factory=list)


def _sample_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column index drawn from row `rows[i]` of a table of categorical CDFs `cdf` (R, K)."""
    n_rows, k = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()  # row r lives in (r, r + 1]
    idx = np.searchsorted(flat, rows + u, side="right") - rows * k
    return np.clip(idx, 0, k - 1)


def _cdf(p: np.ndarray) -> np.ndarray:
    """Row-normalised cumulative sums, with the last column exactly 1."""
    c = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    c[..., -1] = 1.0
    return c


def _make_catalog(rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray, list[str]]:
    """Items grouped by category (ITEMS_PER_CATEGORY each). Returns catalog, prices, nouns."""
    titles: list[str] = []
    nouns: list[str] = []
    prices: list[np.ndarray] = []
    for median, sigma, brands, products, variants in CATALOG_WORDS.values():
        combos = rng.choice(
            len(brands) * len(products) * len(variants), ITEMS_PER_CATEGORY, replace=False
        )
        for c in combos:
            b, rest = divmod(int(c), len(products) * len(variants))
            p, v = divmod(rest, len(variants))
            titles.append(f"{brands[b]} {products[p]} {variants[v]}")
            nouns.append(products[p].lower())
        raw = rng.lognormal(np.log(median), sigma, ITEMS_PER_CATEGORY)
        prices.append(np.maximum(np.round(raw), 1.0) - 0.01)  # shelf prices end in .99
    price = np.concatenate(prices)
    n_items = len(titles)
    catalog = pl.DataFrame(
        {
            "item": [f"P{i:04d}" for i in range(n_items)],
            "category": np.repeat(np.array(CATEGORIES), ITEMS_PER_CATEGORY).tolist(),
            "title": titles,
            "price": price,
        },
        schema={"item": pl.String, "category": pl.String, "title": pl.String, "price": pl.Float64},
    )
    return catalog, price, nouns


def _tables(
    arcs: Sequence[Archetype], price: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-archetype parameter arrays (indexed by archetype number) and sampling CDFs."""
    unknown = {c for a in arcs for c in a.categories} - set(CATEGORIES)
    if unknown:
        raise ValueError(f"Unknown categories {sorted(unknown)}; use some of {list(CATEGORIES)}")
    if any(a.weight <= 0 for a in arcs):
        raise ValueError(f"Archetype weights must be positive, got {[a.weight for a in arcs]}")
    bad_order = {a.order for a in arcs} - set(ORDER_RANKS)
    if bad_order:
        raise ValueError(
            f"Unknown order style(s) {sorted(bad_order)}; use one of {list(ORDER_RANKS)}"
        )
    t: dict[str, np.ndarray] = {
        name: np.array([getattr(a, name) for a in arcs], dtype=float)
        for name in (
            "weight", "price_tilt", "sessions", "sessions_sigma", "recency_min", "recency_scale",
            "weekend_bias", "page_views", "searches", "wishlists", "cart_prob", "buy_prob",
            "coupon_prob", "return_prob", "review_prob", "order_jitter", "pace_s", "focus",
        )
    }  # fmt: skip
    t["burst_days"] = np.array([a.burst_days or np.inf for a in arcs])
    t["ranks"] = np.array([ORDER_RANKS[a.order] for a in arcs])  # (A, E)
    t["cat_cdf"] = _cdf(
        np.array([[a.categories.get(c, 0.0) + 0.01 for c in CATEGORIES] for a in arcs])
    )
    hours = np.arange(24)[None, :] + 0.5
    peak = np.array([a.hour_peak for a in arcs])[:, None]
    dist = np.abs((hours - peak + 12.0) % 24.0 - 12.0)  # circular distance in hours
    sd = np.array([a.hour_sd for a in arcs])[:, None]
    t["hour_cdf"] = _cdf(0.01 + np.exp(-0.5 * (dist / sd) ** 2))  # (A, 24)
    # Item choice within a category: a shared Zipf-like popularity times a price preference.
    logp = np.log(price).reshape(len(CATEGORIES), ITEMS_PER_CATEGORY)
    z = (logp - logp.mean(1, keepdims=True)) / logp.std(1, keepdims=True)
    pop = 1.0 / (1.0 + rng.permutation(price.size).reshape(z.shape) % ITEMS_PER_CATEGORY) ** 0.7
    tilt = t["price_tilt"][:, None, None]
    t["item_cdf"] = _cdf(pop[None] * np.exp(tilt * z[None])).reshape(
        -1, ITEMS_PER_CATEGORY
    )  # (A*C, K)
    return t


def _segment_starts(lengths: np.ndarray) -> np.ndarray:
    return np.cumsum(lengths) - lengths


def generate(
    n_users: int = 5000,
    seed: int = 0,
    short_share: float = 0.05,
    as_of: datetime = DEFAULT_AS_OF,
    archetypes: Sequence[Archetype] | None = None,
    *,
    part: int = 0,
    first_user: int = 0,
    id_width: int | None = None,
) -> SynthData:
    """Generate a synthetic event log with planted archetypes (deterministic given `seed`).

    Args:
        n_users: number of users; each gets at least one event.
        seed: seed of the numpy Generator; same seed, same data.
        short_share: share of users cut to a cold-start history of 1-3 events (the end of one
            session drawn from their archetype), flagged `short_history` in the truth table.
        as_of: end of the history (naive UTC, or aware and converted); all events are before it.
        archetypes: the archetypes to plant, default `ARCHETYPES`.
        part, first_user, id_width: one part of a larger log (`write_parts`): the catalog is the
            seed's, the users come from their own stream `part` and are numbered from `first_user`.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    if not 0.0 <= short_share <= 1.0:
        raise ValueError(f"short_share must be within [0, 1], got {short_share}")
    if as_of.tzinfo is not None:
        as_of = as_of.astimezone(timezone.utc).replace(tzinfo=None)
    arcs = list(ARCHETYPES if archetypes is None else archetypes)
    if not arcs:
        raise ValueError("archetypes is empty; pass at least one Archetype")
    t0 = time.perf_counter()
    # Independent streams, so the catalog does not depend on n_users.
    cat_rng, pop_rng, rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    if part:
        rng = np.random.default_rng(np.random.SeedSequence([seed, part]))
    catalog, price, nouns = _make_catalog(cat_rng)
    t = _tables(arcs, price, pop_rng)
    n_cat = len(CATEGORIES)

    # --- users -------------------------------------------------------------------------------
    arch = rng.choice(len(arcs), size=n_users, p=t["weight"] / t["weight"].sum())
    short = np.zeros(n_users, dtype=bool)
    short[rng.choice(n_users, int(round(n_users * short_share)), replace=False)] = True
    recency = np.minimum(t["recency_min"][arch] + rng.exponential(t["recency_scale"][arch]), 340.0)
    last_day = -1 - np.floor(recency).astype(np.int64)  # day index relative to as_of's date
    span = np.minimum(HISTORY_DAYS + last_day, t["burst_days"][arch])
    tenure = rng.uniform(0.15, 1.0, n_users) * span
    n_sess = np.ceil(rng.lognormal(np.log(t["sessions"][arch]), t["sessions_sigma"][arch]))
    n_sess = np.where(short, 1, np.clip(n_sess, 1, 150)).astype(np.int64)

    # --- sessions: day, hour, order style, event counts ---------------------------------------
    n_s = int(n_sess.sum())
    s_user = np.repeat(np.arange(n_users), n_sess)
    s_arch = arch[s_user]
    is_last = np.arange(n_s) - _segment_starts(n_sess)[s_user] == n_sess[s_user] - 1
    back = np.where(is_last, 0.0, np.floor(rng.random(n_s) * tenure[s_user]))
    day = last_day[s_user] - back.astype(np.int64)
    to_weekend = (rng.random(n_s) < t["weekend_bias"][s_arch]) & ~is_last
    dow = (day + as_of.weekday()) % 7  # Monday = 0
    day -= np.where(to_weekend, (dow - rng.integers(5, 7, n_s)) % 7, 0)
    hour = _sample_rows(t["hour_cdf"], s_arch, rng.random(n_s))
    start = day * 86400 + hour * 3600 + rng.integers(0, 3600, n_s)  # seconds relative to as_of
    order = np.lexsort((start, s_user))
    start = start[order]  # s_user and s_arch are unchanged: sessions stay grouped by user

    counts = np.zeros((n_s, len(EVENT_TYPES)), dtype=np.int64)
    counts[:, START] = 1
    counts[:, SEARCH] = rng.poisson(t["searches"][s_arch])
    counts[:, VIEW] = 1 + rng.poisson(t["page_views"][s_arch])
    counts[:, WISH] = rng.poisson(t["wishlists"][s_arch])
    carts = (rng.random(n_s) < t["cart_prob"][s_arch]) * (1 + (rng.random(n_s) < 0.25))
    counts[:, CART] = carts
    counts[:, BUY] = (carts > 0) & (rng.random(n_s) < t["buy_prob"][s_arch])
    counts[:, COUPON] = counts[:, BUY] * (rng.random(n_s) < t["coupon_prob"][s_arch])
    counts[:, RETURN] = rng.random(n_s) < t["return_prob"][s_arch]
    counts[:, REVIEW] = rng.random(n_s) < t["review_prob"][s_arch]
    s_len = counts.sum(1)

    # --- events: order inside each session, timing -------------------------------------------
    n_e = int(s_len.sum())
    e_sess = np.repeat(np.arange(n_s), s_len)
    e_type = np.repeat(np.tile(np.arange(len(EVENT_TYPES)), n_s), counts.ravel())
    e_arch = s_arch[e_sess]
    noise = rng.standard_normal(n_e) * t["order_jitter"][e_arch] * ~FIXED_RANK[e_type]
    e_type = e_type[np.lexsort((t["ranks"][e_arch, e_type] + noise, e_sess))]
    s_first = _segment_starts(s_len)
    pos = np.arange(n_e) - s_first[e_sess]
    gap = np.clip(np.round(rng.lognormal(np.log(t["pace_s"][e_arch]), 0.8)), 2, 900).astype(
        np.int64
    )
    gap[pos == 0] = 0
    csum = np.cumsum(gap)
    offset = csum - csum[s_first][e_sess]  # seconds since the session start
    duration = offset[s_first + s_len - 1]
    # Sessions of one user must not overlap: push a session after the previous one ends (+1 min).
    # Segmented running max: start'[i] = D[i] + cummax(start - D) with D the user's elapsed steps.
    step = duration + 60
    excl = np.cumsum(step) - step
    elapsed = excl - excl[_segment_starts(n_sess)][s_user]
    big = 10**10  # larger than any span in seconds, so users do not mix in the running max
    start = np.maximum.accumulate(start - elapsed + s_user * big) - s_user * big + elapsed
    ts = start[e_sess] + offset
    e_user = s_user[e_sess]
    u_first = _segment_starts(np.bincount(e_user, minlength=n_users))
    u_last_ts = ts[np.r_[u_first[1:], n_e] - 1]
    shift_days = np.where(u_last_ts >= 0, u_last_ts // 86400 + 1, 0)  # keep hour of day
    ts -= shift_days[e_user] * 86400

    # --- items, categories, amounts -------------------------------------------------------------
    s_cat = _sample_rows(t["cat_cdf"], s_arch, rng.random(n_s))  # focal category per session
    s_item = s_cat * ITEMS_PER_CATEGORY + _sample_rows(
        t["item_cdf"], s_arch * n_cat + s_cat, rng.random(n_s)
    )
    other_cat = _sample_rows(t["cat_cdf"], e_arch, rng.random(n_e))
    e_cat = np.where(rng.random(n_e) < t["focus"][e_arch], s_cat[e_sess], other_cat)
    rand_item = e_cat * ITEMS_PER_CATEGORY + _sample_rows(
        t["item_cdf"], e_arch * n_cat + e_cat, rng.random(n_e)
    )
    is_cart = e_type == CART
    cart_csum = np.cumsum(is_cart)
    first_cart = is_cart & (cart_csum - (cart_csum - is_cart)[s_first][e_sess] == 1)
    focal = first_cart | (e_type == WISH) | (e_type == BUY)
    item = np.where(focal, s_item[e_sess], rand_item)
    # Returns and reviews refer to the user's latest earlier purchase; without one, a page view.
    buy_pos = np.maximum.accumulate(np.where(e_type == BUY, np.arange(n_e), -1))
    post = (e_type == RETURN) | (e_type == REVIEW)
    has_prev = buy_pos >= u_first[e_user]
    item = np.where(post & has_prev, item[np.maximum(buy_pos, 0)], item)
    e_type = np.where(post & ~has_prev, VIEW, e_type)
    e_cat = np.where(e_type == COUPON, s_cat[e_sess], item // ITEMS_PER_CATEGORY)
    amount = np.full(n_e, np.nan)
    amount[e_type == BUY] = price[item[e_type == BUY]]
    amount[e_type == RETURN] = -price[item[e_type == RETURN]]
    coupon = e_type == COUPON
    discount = price[s_item[e_sess[coupon]]] * rng.uniform(0.1, 0.3, int(coupon.sum()))
    amount[coupon] = -np.round(discount, 2)

    # --- cut to the most recent MAX_EVENTS (or 1-3 events for short-history users) ------------
    n_ev_user = np.bincount(e_user, minlength=n_users)
    cap = np.where(short, rng.integers(1, 4, n_users), MAX_EVENTS)
    from_end = (u_first + n_ev_user)[e_user] - 1 - np.arange(n_e)
    keep = from_end < cap[e_user]
    e_user, e_type, e_cat, item, amount, ts = (
        x[keep] for x in (e_user, e_type, e_cat, item, amount, ts)
    )

    # --- frame -----------------------------------------------------------------------------------
    width = id_width or max(6, len(str(n_users - 1)))
    user_ids = pl.Series([f"u{i:0{width}d}" for i in range(first_user, first_user + n_users)], dtype=pl.String)
    no_item = (e_type == START) | (e_type == SEARCH) | (e_type == COUPON)
    titles = catalog["title"].to_numpy()
    text_src = np.concatenate([titles, np.asarray(nouns, dtype=object)])  # search text = query
    text_idx = np.where(e_type == SEARCH, item + len(titles), item)
    as_of_us = int((as_of - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    events = pl.DataFrame(
        {
            "user_id": user_ids.gather(e_user),
            "ts": pl.Series(as_of_us + ts * 1_000_000, dtype=pl.Int64).cast(pl.Datetime("us")),
            "event": pl.Series(EVENT_TYPES, dtype=pl.String).gather(e_type),
            "item": catalog["item"].gather(_nullable(item, no_item)),
            "category": pl.Series(CATEGORIES, dtype=pl.String).gather(
                _nullable(e_cat, e_type == START)
            ),
            "amount": pl.Series(amount, dtype=pl.Float64, nan_to_null=True),
            "text": pl.Series(text_src, dtype=pl.String).gather(
                _nullable(text_idx, (e_type == START) | (e_type == COUPON))
            ),
        }
    )
    truth = pl.DataFrame(
        {
            "user_id": user_ids,
            "archetype": pl.Series([a.name for a in arcs], dtype=pl.String).gather(arch),
            "short_history": short,
            "n_events": np.bincount(e_user, minlength=n_users).astype(np.int64),
        },
        schema={
            "user_id": pl.String,
            "archetype": pl.String,
            "short_history": pl.Boolean,
            "n_events": pl.Int64,
        },
    )
    log.info(
        "generated %d events for %d users (%d archetypes, %d short-history) in %.2fs",
        events.height, n_users, len(arcs), int(short.sum()), time.perf_counter() - t0,
    )  # fmt: skip
    return SynthData(events=events, truth=truth, catalog=catalog, as_of=as_of, archetypes=arcs)


def _nullable(idx: np.ndarray, null: np.ndarray) -> pl.Series:
    """Integer index series with nulls where `null` is true (gathering a null gives null)."""
    return pl.from_arrow(pa.array(idx.astype(np.int64), mask=null))  # type: ignore[return-value]


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write(data: SynthData, out_dir: Path) -> dict[str, Path]:
    """Write events, truth, catalog (parquet) and archetypes.json to `out_dir`, each atomically.

    Returns:
        {"events": path, "truth": path, "catalog": path, "archetypes": path}
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.parquet" for name in ("events", "truth", "catalog")}
    paths["archetypes"] = out_dir / "archetypes.json"
    for name in ("events", "truth", "catalog"):
        frame: pl.DataFrame = getattr(data, name)
        _atomic_write(paths[name], frame.write_parquet)
    _write_archetypes(data.archetypes, paths["archetypes"])
    log.info("wrote synthetic data set to %s", out_dir)
    return paths


def _write_archetypes(archetypes: Sequence[Archetype], path: Path) -> None:
    meta = [{"name": a.name, "description": a.description, "weight": a.weight} for a in archetypes]
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def write_parts(n_users: int, out_dir: Path, *, seed: int = 0, short_share: float = 0.05,
                part_users: int = 100_000, as_of: datetime = DEFAULT_AS_OF) -> dict[str, Path]:
    """`write(generate(n_users, ...))` in parts of `part_users` users, so memory stays that of one part.

    Up to `part_users` users this is exactly `generate` + `write`; above, each part draws its users
    from its own stream over the same catalog and archetypes (a million users in a few GB).
    """
    if n_users <= part_users:
        return write(generate(n_users, seed=seed, short_share=short_share, as_of=as_of), out_dir)
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(n_users - 1)))
    tmp = {name: out_dir / f".{name}.parquet.{os.getpid()}.tmp" for name in ("events", "truth")}
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for part, first in enumerate(range(0, n_users, part_users)):
            data = generate(min(part_users, n_users - first), seed=seed, short_share=short_share, as_of=as_of,
                            part=part, first_user=first, id_width=width)
            for name in ("events", "truth"):
                table = getattr(data, name).to_arrow()
                if name not in writers:
                    writers[name] = pq.ParquetWriter(tmp[name], table.schema)
                writers[name].write_table(table)
        for w in writers.values():
            w.close()
        paths = {name: out_dir / f"{name}.parquet" for name in ("events", "truth", "catalog")}
        paths["archetypes"] = out_dir / "archetypes.json"
        _atomic_write(paths["catalog"], data.catalog.write_parquet)
        _write_archetypes(data.archetypes, paths["archetypes"])
        for name in ("events", "truth"):
            os.replace(tmp[name], paths[name])
    finally:
        for t in tmp.values():
            t.unlink(missing_ok=True)
    log.info("wrote %d synthetic users in parts of %d to %s", n_users, part_users, out_dir)
    return paths
