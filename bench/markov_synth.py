"""A third archetype generator, built unlike the other two: per-archetype Markov chains over actions.

`embeddings/synthetic/synth.py` (the demo's data) and `bench/heldout_synth.py` (an app log with scripted
sessions) plant behaviour by writing sessions out. This one draws every session from a first-order
Markov chain over 9 actions with its own start and transition probabilities per archetype, so what
tells archetypes apart is the chain, the department mix, the price level, the session rhythm and
the clock. It also ships the log the way an export from another system would: its own column names
(`customer`, `event_time` in epoch milliseconds, `action`, `sku`, `department`, `price`), read with
`--map`.

10 archetypes, shares 2%-22%. Two RFM twin pairs:
  * planner vs reverser (order): the reverser's every session is the planner's session reversed
    (same actions, items and amounts; timestamps still rise), so counts, spend and timing agree.
  * weekday vs weekend (calendar): identical in everything except the day of week of sessions
    (Mon-Fri vs Sat-Sun), at the same hours.
About 15% of every archetype are short-history users (1-3 events): half keep the first events of
their history (new users), half the last (a live session of someone the log barely saw); their
history ends in the last 30 days. Histories are 1-400 events (the log keeps a user's last 400).

    python bench/markov_synth.py --users 3000 --seed 21 --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

ACTIONS = ["app_open", "browse", "product_view", "add_to_basket", "checkout", "coupon_applied",
           "support_ticket", "rating", "share"]
A = {a: i for i, a in enumerate(ACTIONS)}
DEPTS = ["fresh", "frozen", "bakery", "drinks", "household", "baby", "pets", "garden", "diy", "media"]
START = np.datetime64("2024-01-01T00:00:00", "ms")
DAYS = 365
MAX_EVENTS = 400
TWINS = [["planner", "reverser"], ["weekday", "weekend"]]
MAPS = ["user_id=customer", "ts=event_time", "event=action", "item=sku", "category=department", "amount=price"]


def _chain(stay_browse: float, buy: float, coupon: float, support: float, social: float) -> np.ndarray:
    """A 9x9 transition matrix; row `checkout` leads to the end-of-session-ish actions."""
    P = np.full((9, 9), 0.01)
    P[A["app_open"], [A["browse"], A["product_view"]]] = [0.6, 0.3]
    P[A["browse"], [A["browse"], A["product_view"]]] = [stay_browse, 0.8 - stay_browse]
    P[A["product_view"], [A["product_view"], A["add_to_basket"], A["browse"], A["share"]]] = [
        0.35, buy, 0.35 - buy / 2, social]
    P[A["add_to_basket"], [A["checkout"], A["coupon_applied"], A["product_view"]]] = [0.5, coupon, 0.3]
    P[A["coupon_applied"], A["checkout"]] = 0.8
    P[A["checkout"], [A["rating"], A["support_ticket"], A["browse"]]] = [0.2 + social, support, 0.3]
    P[A["support_ticket"], [A["support_ticket"], A["browse"]]] = [0.3, 0.3]
    P[A["rating"], [A["share"], A["browse"]]] = [social, 0.3]
    P[A["share"], A["browse"]] = 0.4
    return P / P.sum(1, keepdims=True)


# name: share, session-count median, recency mean (days; 0 = lapsed), departments (weights),
# price level (x department median), hours, days of week, chain(stay_browse, buy, coupon, support,
# social), session length mean
ARCH = {
    "planner":    (0.12, 10, 20, {"fresh": 4, "household": 3, "baby": 2}, 1.0, (18, 21), "all",
                   (0.3, 0.3, 0.05, 0.03, 0.02), 7),
    "reverser":   (0.07, 10, 20, {"fresh": 4, "household": 3, "baby": 2}, 1.0, (18, 21), "all",
                   (0.3, 0.3, 0.05, 0.03, 0.02), 7),
    "weekday":    (0.10, 9, 15, {"drinks": 3, "bakery": 3, "fresh": 2}, 0.8, (12, 14), "weekday",
                   (0.4, 0.25, 0.05, 0.02, 0.05), 6),
    "weekend":    (0.08, 9, 15, {"drinks": 3, "bakery": 3, "fresh": 2}, 0.8, (12, 14), "weekend",
                   (0.4, 0.25, 0.05, 0.02, 0.05), 6),
    "couponer":   (0.14, 14, 10, {"household": 3, "frozen": 3, "pets": 2}, 0.6, (7, 22), "all",
                   (0.3, 0.35, 0.6, 0.01, 0.01), 8),
    "browser":    (0.22, 12, 8, {"garden": 3, "diy": 3, "media": 2}, 1.2, (19, 23), "all",
                   (0.7, 0.05, 0.02, 0.01, 0.08), 12),
    "complainer": (0.06, 8, 25, {"baby": 3, "household": 2, "fresh": 2}, 1.0, (9, 17), "all",
                   (0.3, 0.3, 0.05, 0.5, 0.01), 7),
    "influencer": (0.05, 11, 10, {"media": 4, "garden": 2, "drinks": 2}, 1.1, (20, 24), "all",
                   (0.35, 0.2, 0.05, 0.02, 0.5), 9),
    "premium":    (0.02, 5, 30, {"diy": 3, "garden": 3, "media": 2}, 3.5, (10, 20), "all",
                   (0.3, 0.5, 0.0, 0.05, 0.05), 6),
    "lapsed":     (0.14, 6, 0, {"frozen": 3, "pets": 3, "bakery": 2}, 0.9, (8, 22), "all",
                   (0.4, 0.3, 0.1, 0.03, 0.03), 7),
}


def _catalog(rng: np.random.Generator, per_dept: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dept = np.repeat(np.arange(len(DEPTS)), per_dept)
    med = rng.uniform(3, 60, len(DEPTS))[dept]
    price = np.round(med * rng.lognormal(0, 0.5, len(dept)), 2)
    pop = np.concatenate([rng.permutation(np.arange(1, per_dept + 1)) ** -0.8 for _ in DEPTS])
    return dept, price, pop


def generate(n_users: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(events with this generator's own column names, truth: user_id, archetype, short_history)."""
    rng = np.random.default_rng(seed)
    dept, price, pop = _catalog(rng)
    names = list(ARCH)
    shares = np.array([ARCH[a][0] for a in names])
    arch = rng.choice(len(names), size=n_users, p=shares / shares.sum())
    short = rng.random(n_users) < 0.15
    chains = {a: _chain(*ARCH[a][7]) for a in names}
    cols: dict[str, list] = {k: [] for k in ("customer", "event_time", "action", "sku", "department", "price")}
    for u in range(n_users):
        name = names[arch[u]]
        _, med, rec, depts, level, (h0, h1), dow, _, sess_len = ARCH[name]
        n_sess = int(np.clip(round(np.exp(rng.normal(np.log(med), 0.9))), 1, 120))
        last = DAYS - 1 - (rng.uniform(150, 300) if rec == 0 else rng.exponential(rec))
        if short[u]:
            last = DAYS - 1 - rng.uniform(0, 30)
        span = min(last, n_sess * rng.lognormal(np.log(5), 0.5))
        days = np.sort(last - span * rng.random(n_sess))
        days[-1] = last
        days = np.floor(days).astype(int)
        weekday = (days + 0) % 7  # 2024-01-01 was a Monday
        if dow != "all":
            want = weekday < 5 if dow == "weekday" else weekday >= 5
            # move each session to the nearest allowed day at or before it
            for i in np.flatnonzero(~want):
                d = days[i]
                while ((d % 7 < 5) != (dow == "weekday")) and d > 0:
                    d -= 1
                days[i] = d
        w = np.full(len(DEPTS), 0.3)
        for d, v in depts.items():
            w[DEPTS.index(d)] = v
        w = rng.dirichlet(20 * w / w.sum())
        P = chains[name]
        user_events: list[tuple] = []
        for day in days:
            t = START + np.timedelta64(int(day), "D") + np.timedelta64(
                int(rng.uniform(h0, h1) * 3600_000), "ms")
            c = rng.choice(len(DEPTS), p=w)
            members = np.flatnonzero(dept == c)
            pw = pop[members] * (price[members] / np.median(price[members])) ** np.log(level)
            n = 1 + rng.poisson(sess_len - 1)
            s, seq = A["app_open"] if rng.random() < 0.7 else A["browse"], []
            basket: list[int] = []
            for _ in range(n):
                item = -1
                if s in (A["product_view"], A["share"], A["rating"]):
                    item = int(rng.choice(members, p=pw / pw.sum()))
                elif s == A["add_to_basket"]:
                    item = int(rng.choice(members, p=pw / pw.sum()))
                    basket.append(item)
                amount = float(price[basket].sum() * level) if s == A["checkout"] and basket else None
                if s == A["checkout"]:
                    basket = []
                seq.append((s, item, amount))
                s = int(rng.choice(9, p=P[s]))
            if name == "reverser":
                seq = seq[::-1]
            gaps = np.cumsum(rng.exponential(40_000, len(seq))).astype(int)
            user_events += [(t + np.timedelta64(int(g), "ms"), *e) for g, e in zip(gaps, seq, strict=True)]
        user_events = user_events[-MAX_EVENTS:]  # the log keeps a user's last 400 events
        if short[u]:
            k = int(rng.integers(1, 4))
            user_events = user_events[:k] if rng.random() < 0.5 else user_events[-k:]
        for ts, s, item, amount in user_events:
            cols["customer"].append(f"C{u:06d}")
            cols["event_time"].append(int((ts - np.datetime64("1970-01-01T00:00:00", "ms")).astype(np.int64)))
            cols["action"].append(ACTIONS[s])
            cols["sku"].append(f"P{item:04d}" if item >= 0 else None)
            cols["department"].append(DEPTS[dept[item]] if item >= 0 else None)
            cols["price"].append(amount)
    events = pl.DataFrame(cols, schema={"customer": pl.String, "event_time": pl.Int64, "action": pl.String,
                                        "sku": pl.String, "department": pl.String, "price": pl.Float64})
    n = events.group_by("customer").len()
    truth = pl.DataFrame({"user_id": [f"C{u:06d}" for u in range(n_users)],
                          "archetype": [names[a] for a in arch]}).join(
        n.rename({"customer": "user_id"}), on="user_id").with_columns(short_history=pl.col("len") <= 3).drop("len")
    return events, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    events, truth = generate(args.users, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    events.write_csv(args.out / "events.csv")
    truth.write_parquet(args.out / "truth.parquet")
    (args.out / "twins.json").write_text(json.dumps(TWINS))
    print(f"{events.height:,} events, {truth.height:,} users -> {args.out} (read with "
          + " ".join(f"--map {m}" for m in MAPS) + ")")


if __name__ == "__main__":
    main()
