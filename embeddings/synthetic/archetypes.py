"""The planted archetypes of the synthetic generator: event types, catalogue words, user types.

Two pairs are RFM twins (see `RFM_TWINS`): identical in every parameter that shapes recency,
frequency, spend and categories, different only in the order of events inside a session or in
the hour of day. `embeddings.synthetic.synth.generate` turns these into event logs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

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
ORDER_RANKS: dict[str, tuple[float, ...]] = {
    #            start search view  wish  cart coupon buy  return review
    "funnel": (-100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0, -49.0),
    "impulse": (-100.0, 6.0, 5.0, 4.0, 1.0, 2.0, 3.0, -50.0, -49.0),
    "browse": (-100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -50.0, -49.0),
}
FIXED_RANK = np.array([t in (START, RETURN, REVIEW) for t in range(len(EVENT_TYPES))])

# category: (median price, lognormal sigma, brands, product nouns, variants)
CATALOG_WORDS: dict[str, tuple[float, float, list[str], list[str], list[str]]] = {
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
CATEGORIES: tuple[str, ...] = tuple(CATALOG_WORDS)
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
