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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

log = logging.getLogger(__name__)

DEFAULT_AS_OF = datetime(2026, 1, 1)
MAX_EVENTS = 400  # longest history kept per user (the most recent events)
HISTORY_DAYS = 365

EVENT_TYPES: tuple[str, ...] = (
    "session_start", "search", "page_view", "wishlist", "add_to_cart",
    "coupon_use", "purchase", "return", "review",
)  # fmt: skip
(START, SEARCH, VIEW, WISH, CART, COUPON, BUY, RETURN, REVIEW) = range(len(EVENT_TYPES))

# Sort rank of each event type inside a session, per ordering style (then jittered).
# Returns and reviews refer to an earlier purchase, so they always open a session.
_ORDER_RANKS: dict[str, tuple[float, ...]] = {
    #            start search view  wish  cart coupon buy  return review
    "funnel": (-100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0, -49.0),
    "impulse": (-100.0, 6.0, 5.0, 4.0, 1.0, 2.0, 3.0, -50.0, -49.0),
    "browse": (-100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -50.0, -49.0),
}
_FIXED_RANK = np.array([t in (START, RETURN, REVIEW) for t in range(len(EVENT_TYPES))])

# category: (median price, lognormal sigma, brands, product nouns, variants)
_CATALOG_WORDS: dict[str, tuple[float, float, list[str], list[str], list[str]]] = {
    "electronics": (90.0, 0.8, ["Voltix", "Nexa", "Sonora", "Pixelon"],
        ["Wireless earbuds", "Bluetooth speaker", "USB-C charger", "Smartwatch",
         "Noise-cancelling headphones", "27in monitor", "Mechanical keyboard", "Gaming mouse",
         "Power bank", "Tablet", "E-reader", "Webcam"],
        ["Pro", "Lite", "Max", "Mini", "2nd gen", "Plus", "SE", "X"]),
    "garden": (30.0, 0.7, ["GreenThumb", "Yardly", "Bloomfield", "Terra"],
        ["Garden hose", "Pruning shears", "Raised bed kit", "Solar path lights",
         "Cordless lawn mower", "Seed starter tray", "Watering can", "Compost bin", "Leaf rake",
         "Bird feeder"],
        ["15m", "25m", "small", "large", "set of 4", "steel", "deluxe", "compact"]),
    "books": (14.0, 0.5, ["Penwick", "Harbor House", "Lantern Press", "Orbit Lane"],
        ["Thriller novel", "Fantasy saga", "Italian cookbook", "History of Rome",
         "Science fiction anthology", "Self-help guide", "Travel guide to Japan",
         "Picture book", "Poetry collection", "Biography"],
        ["paperback", "hardcover", "vol. 1", "vol. 2", "illustrated", "box set", "large print",
         "pocket edition"]),
    "grocery": (7.0, 0.6, ["FreshFarm", "Daily Harvest", "Bonto", "Nordic Pantry"],
        ["Organic coffee beans", "Extra virgin olive oil", "Basmati rice", "Dark chocolate",
         "Green tea", "Pasta", "Peanut butter", "Oat milk", "Granola", "Sparkling water"],
        ["500g", "1kg", "6-pack", "family size", "organic", "2-pack", "250g", "value pack"]),
    "beauty": (16.0, 0.7, ["Lumiere", "Glowy", "Aura", "Velvet & Co"],
        ["Face moisturiser", "Vitamin C serum", "Shampoo", "Lipstick", "Sunscreen SPF50",
         "Eye shadow palette", "Hair dryer", "Body lotion", "Perfume", "Nail polish set"],
        ["50ml", "100ml", "travel size", "sensitive skin", "matte", "gift set", "unscented",
         "rose"]),
    "toys": (25.0, 0.7, ["Tinker", "Playwell", "Kidora", "Bricko"],
        ["Building blocks set", "Plush bear", "Remote control car", "Jigsaw puzzle 1000pc",
         "Board game", "Doll house", "Science kit", "Wooden train set", "Action figure",
         "Craft kit"],
        ["junior", "deluxe", "classic", "starter", "XL", "travel", "mini", "family edition"]),
    "sports": (35.0, 0.7, ["Stride", "Peakline", "Fitora", "Apex"],
        ["Yoga mat", "Running shoes", "Dumbbell pair", "Resistance bands", "Cycling helmet",
         "Tennis racket", "Water bottle", "Fitness tracker band", "Camping tent", "Football"],
        ["size 5", "10kg", "pro", "lightweight", "2-person", "women's", "men's", "750ml"]),
    "home": (28.0, 0.7, ["Hearth", "Casa Nova", "Linden", "Kitchenly"],
        ["Scented candle", "Cotton bed sheets", "Throw blanket", "Table lamp", "Storage baskets",
         "Non-stick frying pan", "Knife set", "Bath towels", "Wall clock", "Coffee mugs"],
        ["set of 2", "king size", "grey", "oak", "28cm", "4-piece", "large", "vanilla"]),
    "fashion": (40.0, 0.6, ["Urbane", "Northwind", "Mode", "Kestrel"],
        ["Denim jacket", "Wool sweater", "Sneakers", "Leather belt", "Summer dress", "Rain coat",
         "Chino trousers", "Silk scarf", "Ankle boots", "Graphic T-shirt"],
        ["size S", "size M", "size L", "slim fit", "navy", "black", "oversized",
         "limited edition"]),
    "pets": (18.0, 0.7, ["Pawsome", "Whisker", "Happy Tails", "Petra"],
        ["Dry dog food", "Cat litter", "Dog chew toy", "Cat scratching post", "Pet bed",
         "Aquarium filter", "Bird seed mix", "Dog leash", "Cat treats", "Flea collar"],
        ["2kg", "10kg", "small", "large", "salmon", "chicken", "reflective", "multi-pack"]),
}  # fmt: skip
CATEGORIES: tuple[str, ...] = tuple(_CATALOG_WORDS)
ITEMS_PER_CATEGORY = 30


@dataclass
class Archetype:
    """A planted user type: how often, when, what and in which order its users act."""

    name: str
    description: str  # one plain-English line, the "true name" of the cohort
    weight: float  # share of users (normalised over the set)
    categories: dict[str, float]  # category preference; unlisted categories get a small floor
    price_tilt: float = 0.0  # > 0 prefers pricier items within a category, < 0 cheaper ones
    sessions: float = 8.0  # median sessions per user (lognormal: heavy-tailed)
    sessions_sigma: float = 0.9  # log-spread of sessions per user
    recency_min: float = 0.0  # days from the last session to as_of: min + Exp(scale)
    recency_scale: float = 12.0
    burst_days: float | None = None  # if set, all sessions fall within this many days
    hour_peak: float = 14.0  # preferred hour of day for session starts (circular)
    hour_sd: float = 4.0
    weekend_bias: float = 0.0  # probability a session is moved to the previous weekend
    page_views: float = 2.0  # page views per session beyond the first (Poisson mean)
    searches: float = 0.5  # searches per session (Poisson mean)
    wishlists: float = 0.1  # wishlist adds per session (Poisson mean)
    cart_prob: float = 0.4  # P(session adds to cart)
    buy_prob: float = 0.6  # P(purchase | cart)
    coupon_prob: float = 0.1  # P(coupon | purchase)
    return_prob: float = 0.02  # P(session opens with a return of an earlier purchase)
    review_prob: float = 0.03  # P(session opens with a review of an earlier purchase)
    order: str = "funnel"  # in-session order: "funnel", "impulse" or "browse"
    order_jitter: float = 0.8  # noise on the order ranks (0 = strict order)
    pace_s: float = 40.0  # median seconds between events in a session
    focus: float = 0.8  # share of events in the session's focal category


def _twin(base: Archetype, **changes: object) -> Archetype:
    """A copy of `base` with a few fields changed (RFM twins share everything else)."""
    return replace(base, categories=dict(base.categories), **changes)  # type: ignore[arg-type]


_RESEARCHERS = Archetype(
    "researchers",
    "Deliberate researchers who search, compare several sports and garden products, then add to cart and buy at the end of the session",
    0.07, {"sports": 0.35, "garden": 0.25, "home": 0.15, "electronics": 0.15},
    sessions=7, page_views=4.0, searches=1.5, cart_prob=0.55, buy_prob=0.75, hour_peak=14,
    hour_sd=4, pace_s=45, order="funnel", order_jitter=0.1,
)  # fmt: skip
_NIGHT_OWLS = Archetype(
    "night_owls",
    "Night owls who browse and buy books, toys and pet supplies between 22:00 and 03:00",
    0.06, {"books": 0.3, "toys": 0.25, "pets": 0.2, "beauty": 0.1},
    sessions=6, page_views=3.0, searches=0.8, cart_prob=0.45, buy_prob=0.7, hour_peak=0.5,
    hour_sd=1.5, pace_s=35,
)  # fmt: skip

ARCHETYPES: list[Archetype] = [
    Archetype(
        "loyal_regulars",
        "Loyal regulars who restock groceries and pet supplies every week or two, buying quickly and cheaply",
        0.24, {"grocery": 0.45, "pets": 0.25, "home": 0.15, "beauty": 0.1},
        price_tilt=-0.3, sessions=14, sessions_sigma=0.8, recency_scale=5, hour_peak=18,
        hour_sd=2.5, weekend_bias=0.3, page_views=1.0, searches=0.3, cart_prob=0.85,
        buy_prob=0.9, coupon_prob=0.05, pace_s=25, order_jitter=0.5,
    ),
    Archetype(
        "bargain_hunters",
        "Bargain hunters who browse many cheap home and fashion items, clip coupons and rarely buy",
        0.12, {"home": 0.45, "fashion": 0.2, "garden": 0.15},
        price_tilt=-1.5, sessions=8, hour_peak=20, hour_sd=3, page_views=5.0, searches=1.0,
        wishlists=0.4, cart_prob=0.35, buy_prob=0.35, coupon_prob=0.8, pace_s=20,
        order="browse", order_jitter=1.0,
    ),
    Archetype(
        "tech_enthusiasts",
        "Tech enthusiasts who research high-end electronics at length, buy pricey gadgets and write reviews",
        0.10, {"electronics": 0.7, "books": 0.1, "sports": 0.1},
        price_tilt=1.5, sessions=7, hour_peak=21, hour_sd=2.5, page_views=5.0, searches=2.0,
        cart_prob=0.4, buy_prob=0.6, review_prob=0.25, pace_s=60,
    ),
    Archetype(
        "lapsed_customers",
        "Lapsed customers who bought fashion and beauty a few times months ago and have not come back",
        0.10, {"fashion": 0.35, "beauty": 0.25, "home": 0.15, "books": 0.1},
        sessions=4, sessions_sigma=0.6, recency_min=120, recency_scale=80, hour_peak=12,
        cart_prob=0.5, buy_prob=0.7,
    ),
    Archetype(
        "window_shoppers",
        "Window shoppers who browse fashion and beauty in long sessions and fill wishlists but almost never buy",
        0.09, {"fashion": 0.5, "beauty": 0.35},
        price_tilt=0.8, sessions=6, hour_peak=15, weekend_bias=0.4, page_views=6.0,
        wishlists=1.2, cart_prob=0.1, buy_prob=0.15, pace_s=30,
    ),
    _RESEARCHERS,
    _twin(
        _RESEARCHERS, name="impulse_buyers", order="impulse",
        description="Impulse buyers who add to cart and buy right after arriving, then browse and search afterwards (same products and spend as the researchers)",
    ),
    _NIGHT_OWLS,
    _twin(
        _NIGHT_OWLS, name="early_birds", hour_peak=7.0,
        description="Early birds who buy the same books, toys and pet supplies as the night owls, at the same rate and spend, but between 05:00 and 09:00",
    ),
    Archetype(
        "gift_buyers",
        "Seasonal gift buyers who appear only in the weeks before the holidays to buy toys and books",
        0.05, {"toys": 0.5, "books": 0.25, "electronics": 0.1},
        sessions=5, sessions_sigma=0.6, recency_min=3, recency_scale=10, burst_days=40,
        hour_peak=19, hour_sd=3, weekend_bias=0.5, page_views=3.0, cart_prob=0.7, buy_prob=0.8,
    ),
    Archetype(
        "serial_returners",
        "Serial returners who buy a lot of mid-priced fashion and send much of it back",
        0.04, {"fashion": 0.65, "sports": 0.15, "beauty": 0.1},
        price_tilt=0.3, sessions=8, hour_peak=21, hour_sd=3, cart_prob=0.8, buy_prob=0.85,
        return_prob=0.45, pace_s=30,
    ),
]  # fmt: skip

# Pairs of default archetypes with identical recency/frequency/monetary behaviour.
RFM_TWINS: list[tuple[str, str]] = [
    ("researchers", "impulse_buyers"),
    ("night_owls", "early_birds"),
]


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
    for median, sigma, brands, products, variants in _CATALOG_WORDS.values():
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
    bad_order = {a.order for a in arcs} - set(_ORDER_RANKS)
    if bad_order:
        raise ValueError(
            f"Unknown order style(s) {sorted(bad_order)}; use one of {list(_ORDER_RANKS)}"
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
    t["ranks"] = np.array([_ORDER_RANKS[a.order] for a in arcs])  # (A, E)
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
) -> SynthData:
    """Generate a synthetic event log with planted archetypes (deterministic given `seed`).

    Args:
        n_users: number of users; each gets at least one event.
        seed: seed of the numpy Generator; same seed, same data.
        short_share: share of users cut to a cold-start history of 1-3 events (the end of one
            session drawn from their archetype), flagged `short_history` in the truth table.
        as_of: end of the history (naive UTC, or aware and converted); all events are before it.
        archetypes: the archetypes to plant, default `ARCHETYPES`.
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
    noise = rng.standard_normal(n_e) * t["order_jitter"][e_arch] * ~_FIXED_RANK[e_type]
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
    width = max(6, len(str(n_users - 1)))
    user_ids = pl.Series([f"u{i:0{width}d}" for i in range(n_users)], dtype=pl.String)
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
    meta = [
        {"name": a.name, "description": a.description, "weight": a.weight} for a in data.archetypes
    ]
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(paths["archetypes"], lambda p: Path(p).write_text(text, encoding="utf-8"))
    log.info("wrote synthetic data set to %s", out_dir)
    return paths
