"""Independent held-out generator: an e-commerce app event log with planted behavioural archetypes.

Designed separately from `embeddings/synthetic/synth.py` so the product can be checked on data it was not
developed against. 12 archetypes with unequal shares (3%-18%), 9 event types (login, search,
page_view, wishlist, add_to_cart, remove_from_cart, purchase, refund, review), a 600-item catalog
in 12 categories (category-specific titles and price ranges), sessions with second-to-minute
intra-session gaps and hour-to-week gaps between sessions, 12 months ending 2025-03-01.

RFM twins (same recency / frequency / monetary / #events distributions, `twins.json`):
  * researcher vs restocker (order): identical session contents; the researcher searches and
    views items and then adds to cart and buys, the restocker buys first, then searches/browses.
  * comparer vs list_shopper (order): identical contents (views of a and b, add a, add b, remove
    a, buy b); the comparer interleaves views with cart adds, the list shopper adds both from a
    list, buys, cleans the cart, then browses.
  * lunch_break vs night_owl (time of day): identical in everything except session start hours
    (11:00-14:00 vs 21:00-02:00).
Other archetypes: window_shopper, whale, bargain_hunter, serial_returner, lapsed, critic.

About 12% of every archetype are new users: only their first 1-3 events are kept and their
history is moved by whole weeks into the last 60 days, keeping hour and weekday (label kept;
truth.short_history = user has <= 3 events).

Columns: user_id, ts (Datetime us, naive UTC), event, item (null for login/search), category
(the searched category for search, null for login), amount (price paid on purchase, negative
price on refund, null otherwise), text (item title; the query for search; null for login).

    python bench/heldout_synth.py --users 3000 --seed 11 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the product's RFM features

EV = "login search page_view wishlist add_to_cart remove_from_cart purchase refund review".split()
LOGIN, SEARCH, VIEW, WISH, CART, UNCART, BUY, REFUND, REVIEW = range(9)
GAP_MED_S = np.array([4, 15, 40, 10, 25, 15, 80, 60, 150], dtype=float)  # gap before the event
START = np.datetime64("2024-03-01T00:00:00", "s")
END = np.datetime64("2025-03-01T00:00:00", "s")
DAYS = int((END - START) / np.timedelta64(1, "D"))
MAX_EVENTS = 400

# category | price lo hi | brands | adjectives | nouns (titles: "brand adjective noun [variant]")
_CATALOG = """
electronics | 9 1500 | Voltix Nuvo Kestrel Arcline | wireless portable 4K smart compact noise-cancelling | headphones charger speaker keyboard monitor webcam tablet router
books       | 4 60   | Penfold Quarto Inkwell | illustrated paperback hardcover annotated collected pocket | novel cookbook atlas memoir anthology guide thriller
grocery     | 1 40   | FieldFresh Harvesta Pantry&Co | organic roasted wholegrain spicy unsweetened family-size | coffee pasta granola olive-oil tea crackers rice
apparel     | 8 250  | Northloom Urbana Tidewear | slim-fit linen waterproof merino oversized vintage | jacket jeans sneakers shirt hoodie dress scarf
beauty      | 3 120  | Lumea Petalis Dermacraft | hydrating matte vegan fragrance-free overnight mineral | serum lipstick cleanser moisturiser sunscreen shampoo
home        | 5 600  | Hearthly Casa Nordvik | ceramic bamboo cast-iron linen modular scented | lamp skillet rug candle shelf duvet vase
toys        | 5 150  | Playtoria Brickly Wondo | wooden magnetic remote-control plush educational glow | puzzle robot train doll blocks kite
sports      | 6 400  | Stridex Peakform Aquila | lightweight adjustable insulated carbon grip-tape foldable | dumbbells yoga-mat racket bottle tent helmet
garden      | 3 300  | Greenhold Terrafirm | self-watering heirloom stainless solar raised frost-proof | planter seeds hose shears lantern trellis
pet         | 2 90   | Pawsome Furrow Kibbly | grain-free chew-proof orthopedic calming reflective | kibble leash bed treats collar litter
jewelry     | 20 3000 | Aurelle Solenne Mirova | sterling rose-gold diamond pearl hand-made engraved | ring necklace bracelet earrings watch pendant
automotive  | 5 500  | Motrix Roadline Gearhaus | heavy-duty all-weather LED magnetic universal | wipers dashcam floor-mats jump-starter phone-mount
"""
CATS = {}
for _line in _CATALOG.strip().splitlines():
    _name, _price, _brands, _adjs, _nouns = (f.strip() for f in _line.split("|"))
    _lo, _hi = map(float, _price.split())
    CATS[_name] = (_lo, _hi, _brands, _adjs, _nouns)
CAT_NAMES = list(CATS)

# Archetypes. med: median sessions; rec: mean recency in days ("lapsed": 120-280 days); tilt:
# price preference within a category; generic sessions: login prob, searches (Poisson mean),
# views (1 + Poisson), wishlist / cart / buy-given-cart / remove-if-not-bought / review / refund
# probabilities. Twins share every column except the style (order pairs) or hours (time pair).
_ARCHETYPES = """
name            share style         favourites             med rec  tilt hours   login search views wish cart buy  remove review refund
researcher      0.12  o1_browse_buy electronics,books,home 7   25   0.3  evening -
restocker       0.07  o1_buy_browse electronics,books,home 7   25   0.3  evening -
comparer        0.09  o2_interleave apparel,beauty,sports  6   20   0.0  evening -
list_shopper    0.05  o2_list       apparel,beauty,sports  6   20   0.0  evening -
lunch_break     0.10  generic       grocery,home,pet       8   15   0.0  lunch   0.6   1.0    3.0   0.15 0.45 0.7  0.4    0.05   0.02
night_owl       0.06  generic       grocery,home,pet       8   15   0.0  night   0.6   1.0    3.0   0.15 0.45 0.7  0.4    0.05   0.02
window_shopper  0.18  generic       apparel,home,toys      11  12   0.5  evening 0.3   1.5    5.0   0.4  0.15 0.3  0.6    0.0    0.0
whale           0.03  generic       jewelry,electronics,home 4 30   1.5  evening 0.8   0.5    2.5   0.1  0.7  0.85 0.2    0.05   0.03
bargain_hunter  0.12  generic       grocery,beauty,pet     14  10   -1.2 commute 0.5   2.0    4.0   0.05 0.5  0.75 0.5    0.02   0.02
serial_returner 0.05  generic       apparel,jewelry,beauty 8   20   0.5  evening 0.6   1.0    3.0   0.1  0.65 0.75 0.3    0.03   0.4
lapsed          0.08  generic       toys,books,garden      6   0    0.0  evening 0.7   1.0    3.0   0.1  0.4  0.6  0.3    0.05   0.02
critic          0.05  generic       books,electronics,beauty 8 20   0.0  evening 0.7   1.0    3.0   0.1  0.45 0.7  0.3    0.65   0.02
"""
_KEYS = "login search views wish cart buy remove review refund".split()
ARCH = {}
for _line in _ARCHETYPES.strip().splitlines()[1:]:
    _f = _line.split()
    _gp = dict(zip(_KEYS, map(float, _f[8:]), strict=True)) if _f[8] != "-" else None
    _num = [float(v) for v in (_f[1], _f[4], _f[5], _f[6])]
    ARCH[_f[0]] = (_num[0], _f[2], _f[3].split(","), _num[1], _num[2] or None, _num[3], _f[7], _gp)
TWINS = [["researcher", "restocker"], ["comparer", "list_shopper"], ["lunch_break", "night_owl"]]
O1_PARAMS = dict(login=0.5, views=3.0, wish=0.25, buy=0.5, restock=0.35, review=0.08)
O2_PARAMS = dict(login=0.3, views=2.0, buy=0.55)


def _hours(name: str) -> np.ndarray:
    h = np.arange(24)
    w = {
        "evening": np.where((h >= 7) & (h <= 23), 1.0, 0.1) + 2.5 * ((h >= 19) & (h <= 22)),
        "lunch": np.where((h >= 11) & (h <= 13), 1.0, 0.0) + 0.0,
        "night": np.where((h >= 21) | (h <= 1), 1.0, 0.0) + 0.0,
        "commute": np.where((h >= 7) & (h <= 22), 0.3, 0.02) + 2.0 * np.isin(h, [7, 8, 17, 18]),
    }[name]
    return w / w.sum()


def make_catalog(rng: np.random.Generator, n_items: int = 600) -> dict:
    sizes = rng.multinomial(n_items - 10 * len(CATS), rng.dirichlet(np.full(len(CATS), 3.0))) + 10
    cat, title, price, pop = [], [], [], []
    for c, (lo, hi, brands, adjs, nouns) in enumerate(CATS.values()):
        b, a, n = brands.split(), adjs.split(), nouns.split()
        k = sizes[c]
        med = np.sqrt(lo * hi) / 2
        p = np.clip(np.exp(rng.normal(np.log(med), 0.7, k)), lo, hi)
        price += list(np.floor(p) + 0.99)
        cat += [c] * k
        title += [
            f"{rng.choice(b)} {rng.choice(a)} {rng.choice(n)} {rng.choice(['', 'Pro', 'Mini', 'XL', 'II', 'Lite'])}".strip()
            for _ in range(k)
        ]
        pop += list(rng.permutation(np.arange(1, k + 1)) ** -0.9)
    cat, price, pop = np.array(cat), np.array(price), np.array(pop)
    members = [np.flatnonzero(cat == c) for c in range(len(CATS))]
    return dict(
        cat=cat,
        title=np.array(title, dtype=object),
        price=price,
        pop=pop,
        members=members,
        ids=np.array([f"sku-{i:04d}" for i in range(len(cat))], dtype=object),
    )


class Picker:
    """Draws items of a category, weighted by popularity x (price / category median) ** tilt."""

    def __init__(self, cat: dict, tilt: float):
        self.members, self.cdf = cat["members"], []
        for m in self.members:
            w = cat["pop"][m] * (cat["price"][m] / np.median(cat["price"][m])) ** tilt
            self.cdf.append(np.cumsum(w) / w.sum())

    def __call__(self, rng, c: int, k: int) -> list[int]:
        return list(
            self.members[c][
                np.minimum(np.searchsorted(self.cdf[c], rng.random(k)), len(self.cdf[c]) - 1)
            ]
        )


def _session(
    style: str, prm: dict, rng, c: int, pick: Picker, bought: list, refunded: set, reviewed: set
):
    """One session's events as (event, item, searched category) tuples."""
    out = []
    if rng.random() < prm["login"]:
        out.append((LOGIN, -1, -1))
    if style.startswith("o1"):
        views = pick(rng, c, 1 + rng.poisson(prm["views"]))
        buy = rng.random() < prm["buy"]
        x = -1
        if buy:
            x = (
                bought[rng.integers(len(bought))]
                if bought and rng.random() < prm["restock"]
                else views[-1]
            )
            views = [v for v in views if v != x]
        wish = [(WISH, views[0], -1)] if views and rng.random() < prm["wish"] else []
        rev = (
            [(REVIEW, bought[rng.integers(len(bought))], -1)]
            if bought and rng.random() < prm["review"]
            else []
        )
        browse = [(SEARCH, -1, c)] + [(VIEW, v, -1) for v in views]
        if buy:
            bought.append(x)
            if style == "o1_browse_buy":
                return out + browse + [(VIEW, x, -1)] + wish + [(CART, x, -1), (BUY, x, -1)] + rev
            return (
                out
                + [(CART, x, -1), (BUY, x, -1), (SEARCH, -1, c), (VIEW, x, -1)]
                + browse[1:]
                + wish
                + rev
            )
        return out + browse + wish + rev
    if style.startswith("o2"):
        a, b = pick(rng, c, 2)
        others = [(VIEW, v, -1) for v in pick(rng, c, rng.poisson(prm["views"]))]
        if rng.random() < prm["buy"]:
            bought.append(b)
            if style == "o2_interleave":
                return (
                    out
                    + [(VIEW, a, -1), (CART, a, -1)]
                    + others
                    + [(VIEW, b, -1), (CART, b, -1), (UNCART, a, -1), (BUY, b, -1)]
                )
            return (
                out
                + [(CART, a, -1), (CART, b, -1), (BUY, b, -1), (UNCART, a, -1), (VIEW, a, -1)]
                + others
                + [(VIEW, b, -1)]
            )
        if style == "o2_interleave":
            return out + [(VIEW, a, -1), (CART, a, -1)] + others + [(VIEW, b, -1), (UNCART, a, -1)]
        return out + [(CART, a, -1), (UNCART, a, -1), (VIEW, a, -1)] + others + [(VIEW, b, -1)]
    # generic: after-sales first, then search/browse blocks, then maybe cart and checkout
    open_ = [x for x in bought if x not in refunded]
    if open_ and rng.random() < prm["refund"]:
        x = open_[rng.integers(len(open_))]
        refunded.add(x)
        out.append((REFUND, x, -1))
    unrev = [x for x in bought if x not in reviewed]
    if unrev and rng.random() < prm["review"]:
        x = unrev[rng.integers(len(unrev))]
        reviewed.add(x)
        out.append((REVIEW, x, -1))
    views = pick(rng, c, 1 + rng.poisson(prm["views"]))
    n_search = rng.poisson(prm["search"])
    cuts = np.bincount(rng.integers(0, len(views) + 1, n_search), minlength=len(views) + 1)
    for i in range(len(views) + 1):  # cuts[i] searches right before view i (or at the end)
        out += [(SEARCH, -1, c)] * int(cuts[i]) + ([(VIEW, views[i], -1)] if i < len(views) else [])
    if rng.random() < prm["wish"]:
        out.append((WISH, views[-1], -1))
    if rng.random() < prm["cart"]:
        x = views[-1]
        out.append((CART, x, -1))
        if rng.random() < prm["buy"]:
            bought.append(x)
            out.append((BUY, x, -1))
        elif rng.random() < prm["remove"]:
            out.append((UNCART, x, -1))
    return out


def _lookup(table: list[str], idx: np.ndarray) -> pl.Series:
    """table[idx] as a String series; negative indices become null."""
    out = pl.Series(table, dtype=pl.String).gather(np.maximum(idx, 0))
    return pl.select(pl.when(pl.Series(idx >= 0)).then(out)).to_series()


def generate(n_users: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    cat = make_catalog(rng)
    names = list(ARCH)
    shares = np.array([ARCH[a][0] for a in names])
    counts = np.floor(shares * n_users).astype(int)
    counts[np.argsort(-(shares * n_users - counts))[: n_users - counts.sum()]] += 1
    arch = rng.permutation(np.repeat(np.arange(len(names)), counts))
    pickers = {t: Picker(cat, t) for t in {ARCH[a][5] for a in names}}
    hours = {h: _hours(h) for h in ("evening", "lunch", "night", "commute")}

    # --- session layout per user (days, then hour of day) ------------------------------------
    med = np.array([ARCH[names[a]][3] for a in arch], dtype=float)
    n_sess = np.clip(np.round(np.exp(rng.normal(np.log(med), 1.0))), 1, 150).astype(int)
    rec_mean = np.array([ARCH[names[a]][4] or 0 for a in arch], dtype=float)
    lapsed = rec_mean == 0
    recency = np.where(
        lapsed, rng.uniform(120, 280, n_users), rng.exponential(np.maximum(rec_mean, 1))
    )
    last_day = DAYS - 1 - recency
    span = np.minimum(last_day, n_sess * rng.lognormal(np.log(4.0), 0.6, n_users))

    u_rows, s_user, s_start, ev, item, qcat = [], [], [], [], [], []
    sid = 0
    for u in range(n_users):
        a = names[arch[u]]
        _, style, favs, _, _, tilt, hp, gp = ARCH[a]
        prm = gp or (O1_PARAMS if style.startswith("o1") else O2_PARAMS)
        w = np.full(len(CATS), 0.15 / (len(CATS) - 3))
        w[[CAT_NAMES.index(f) for f in favs]] = [0.45, 0.25, 0.15]
        w = rng.dirichlet(30 * w)
        k = n_sess[u]
        g = rng.lognormal(0, 1.2, k)
        g[0] = 0
        day = np.floor(
            last_day[u]
            - span[u]
            + span[u] * np.cumsum(g) / max(g.sum(), 1e-9) * (k > 1)
            + span[u] * (k == 1)
        )
        sec = (
            day * 86400 + rng.choice(24, k, p=hours[hp]) * 3600 + rng.integers(0, 3600, k)
        ).astype(np.int64)
        sec.sort()
        cats = rng.choice(len(CATS), k, p=w)
        bought, refunded, reviewed = [], set(), set()
        for j in range(k):
            evs = _session(style, prm, rng, int(cats[j]), pickers[tilt], bought, refunded, reviewed)
            s_user.append(u)
            s_start.append(sec[j])
            for e, it, q in evs:
                u_rows.append(sid)
                ev.append(e), item.append(it), qcat.append(q)
            sid += 1
    sess = np.array(u_rows)
    ev, item, qcat = np.array(ev), np.array(item), np.array(qcat)
    s_user, s_start = np.array(s_user), np.array(s_start, dtype=np.int64)

    # --- intra-session timing, non-overlapping sessions, end before END ----------------------
    gap = GAP_MED_S[ev] * rng.lognormal(0, 0.8, len(ev))
    first = np.r_[True, sess[1:] != sess[:-1]]
    gap[first] = 0
    cum = np.cumsum(gap)
    off = cum - cum[np.flatnonzero(first)][sess]
    dur = np.zeros(sid)
    np.maximum.at(dur, sess, off)
    start = s_start.astype(float)
    for s in range(1, sid):
        if s_user[s] == s_user[s - 1]:
            start[s] = max(start[s], start[s - 1] + dur[s - 1] + 600)
    end = start + dur
    last_end = np.full(n_users, -np.inf)
    np.maximum.at(last_end, s_user, end)
    horizon = DAYS * 86400 - 60
    start -= np.maximum(last_end - horizon, 0)[s_user]
    ts = start[sess] + off

    # --- cap at MAX_EVENTS (drop oldest sessions), then new users keep their first 1-3 events --
    n_per_sess = np.bincount(sess, minlength=sid)
    keep_sess = np.ones(sid, bool)
    from_end = pl.DataFrame({"u": s_user, "n": n_per_sess}).with_row_index().reverse()
    from_end = from_end.with_columns(c=pl.col("n").cum_sum().over("u"))
    keep_sess[from_end.filter(pl.col("c") > MAX_EVENTS)["index"].to_numpy()] = False
    keep = keep_sess[sess]
    user = s_user[sess]
    short_u = np.zeros(n_users, bool)
    for a in range(len(names)):
        idx = np.flatnonzero(arch == a)
        short_u[rng.choice(idx, int(round(0.12 * len(idx))), replace=False)] = True
    n_keep = rng.choice([1, 2, 3], n_users, p=[0.45, 0.35, 0.2])
    rank = (
        pl.DataFrame({"u": user, "k": keep})
        .with_columns(r=pl.col("k").cum_sum().over("u"))["r"]
        .to_numpy()
    )
    keep &= ~short_u[user] | (rank <= n_keep[user])
    shift = np.zeros(n_users)
    last_ts = np.full(n_users, -np.inf)
    np.maximum.at(last_ts, user[keep], ts[keep])
    target_end = horizon - rng.uniform(0, 60 * 86400, n_users)
    # whole weeks, so a new user's hour and weekday stay their archetype's (lunch_break vs night_owl
    # is told apart by hour alone)
    week = 7 * 86400.0
    shift[short_u] = (np.floor((target_end - last_ts) / week) * week)[short_u]
    ts = ts + shift[user]

    ev, item, qcat, user, ts = ev[keep], item[keep], qcat[keep], user[keep], ts[keep]
    has_item = item >= 0
    it = np.where(has_item, item, 0)
    ccode = np.where(has_item, cat["cat"][it], qcat)
    queries = [
        f"{adj} {noun}"
        for v in CATS.values()
        for adj in v[3].split()[:5]
        for noun in v[4].split()[:5]
    ]
    q_idx = np.maximum(qcat, 0) * 25 + rng.integers(0, 25, len(ev))  # 5 x 5 queries per category
    text = np.where(has_item, it, np.where(ev == SEARCH, len(cat["title"]) + q_idx, -1))
    amount = np.where(
        ev == BUY, cat["price"][it], np.where(ev == REFUND, -cat["price"][it], np.nan)
    )
    uid = [f"u{(i * 7919 + seed) % 1000003:07d}" for i in range(n_users)]
    events = pl.DataFrame(
        {
            "user_id": _lookup(uid, user),
            "ts": pl.Series(
                START + np.round(ts * 1e6).astype(np.int64).astype("timedelta64[us]")
            ).cast(pl.Datetime("us")),
            "event": _lookup(EV, ev),
            "item": _lookup(list(cat["ids"]), np.where(has_item, it, -1)),
            "category": _lookup(CAT_NAMES, ccode),
            "amount": pl.Series(amount, dtype=pl.Float64, nan_to_null=True),
            "text": _lookup(list(cat["title"]) + queries, text),
        }
    )
    events = events.sort("user_id", "ts", maintain_order=True)
    n_ev = np.bincount(user, minlength=n_users)
    truth = pl.DataFrame(
        {"user_id": uid, "archetype": _lookup(names, arch), "short_history": n_ev <= 3}
    ).sort("user_id")
    return events, truth


def rfm(events: pl.DataFrame) -> pl.DataFrame:
    """The product's own RFM features at the log's last event (purchases are the transactions)."""
    from embeddings.evaluation.rfm import rfm_features

    return rfm_features(events, events["ts"].max(), monetary_event="purchase")


def twin_probe(
    events: pl.DataFrame, truth: pl.DataFrame, pairs, seed: int = 0, repeats: int = 5
) -> dict[str, float]:
    """Mean RFM-probe accuracy per pair over `repeats` balanced, stratified 5-fold CVs (long-history
    users only); ~0.5 means recency/frequency/monetary/#events cannot tell the pair apart."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = rfm(events).join(truth, on="user_id").filter(~pl.col("short_history"))
    rng, out = np.random.default_rng(seed), {}
    for a, b in pairs:
        d = df.filter(pl.col("archetype").is_in([a, b]))
        x = d.select(
            pl.col("recency_days"),
            pl.col("frequency"),
            pl.col("monetary").clip(lower_bound=0).log1p(),
            pl.col("n_events").log(),
        ).to_numpy()
        x = np.c_[x, x**2]  # features and their squares
        y = (d["archetype"] == b).to_numpy()
        i0, i1, accs = np.flatnonzero(~y), np.flatnonzero(y), []
        m = min(len(i0), len(i1))
        for r in range(repeats):  # balanced classes: 0.5 is chance
            idx = np.r_[rng.choice(i0, m, replace=False), rng.choice(i1, m, replace=False)]
            cv = StratifiedKFold(5, shuffle=True, random_state=seed + r)
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=100.0, max_iter=2000))
            accs.append(cross_val_score(probe, x[idx], y[idx], cv=cv).mean())
        out[f"{a} vs {b}"] = float(np.mean(accs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    events, truth = generate(args.users, args.seed)
    gen_s = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    events.write_parquet(args.out / "events.parquet")
    truth.write_parquet(args.out / "truth.parquet")
    (args.out / "twins.json").write_text(json.dumps(TWINS))
    per_user = rfm(events).join(truth, on="user_id")
    table = (
        per_user.group_by("archetype")
        .agg(
            users=pl.len(),
            share=pl.len() / per_user.height,
            short=pl.col("short_history").mean(),
            mean_events=pl.col("n_events").mean(),
            mean_purchases=pl.col("frequency").mean(),
            mean_spend=pl.col("monetary").mean(),
        )
        .sort("users", descending=True)
    )
    with pl.Config(tbl_rows=30, float_precision=2, tbl_hide_dataframe_shape=True):
        print(table)
    lens = per_user["n_events"]
    print(
        f"{events.height} events, {truth.height} users, events/user min {lens.min():.0f} "
        f"median {lens.median():.0f} max {lens.max():.0f}, short-history "
        f"{truth['short_history'].mean():.1%}; generated in {gen_s:.1f}s"
    )
    pairs = TWINS + [["window_shopper", "bargain_hunter"]]
    for k, v in twin_probe(events, truth, pairs, args.seed).items():
        tag = "  (control, not twins)" if k.startswith("window") else ""
        print(f"RFM probe accuracy {k}: {v:.3f}{tag}")


if __name__ == "__main__":
    main()
