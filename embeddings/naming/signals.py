"""Signals: how far a cohort is from the population on each axis, as words and clauses.

Every signal is scored by its deviation: |log(relative)| for recency, frequency/engagement, spend and
tenure; log(lift) for categories, event types and time of day. `StatsNamer` turns the strongest into
a name; the LLM namers use them as qualifiers to de-duplicate names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from embeddings.naming.profile_types import CohortProfile

RATIO = 1.4  # a relative value must be >= 1.4x or <= 1/1.4x the population to count
LIFT = 1.25  # a category / event / time-of-day share must be 1.25x the population's
MAX_MODIFIERS = 3
DAYPARTS = {
    "night": range(0, 6),
    "morning": range(6, 12),
    "afternoon": range(12, 18),
    "evening": range(18, 24),
}
DAYPART_PHRASE = {
    "night": "at night",
    "morning": "in the morning",
    "afternoon": "in the afternoon",
    "evening": "in the evening",
}
DAYPART_WORD = {
    "night": "night-owl",
    "morning": "morning",
    "afternoon": "afternoon",
    "evening": "evening",
}
EARLY_MORNING_WORD = "early-bird"  # a morning cohort whose activity is over by 10:00
# Position of each adjective kind in the name ("Lapsed frequent high-spend evening grocery buyers").
ORDER = {
    "recency": 0,
    "tenure": 1,
    "activity": 2,
    "order": 2.5,
    "value": 3,
    "weekend": 4,
    "daypart": 5,
    "category": 6,
}
# Event-type keywords -> behaviour noun, checked in this order ("review" before "view").
BEHAVIOURS: list[tuple[tuple[str, ...], str]] = [
    (("return", "refund"), "returners"),
    (("review", "rating", "rate"), "reviewers"),
    (("cart", "basket"), "cart builders"),
    (("wish", "favorite", "favourite", "bookmark"), "wishlisters"),
    (("search", "query"), "searchers"),
    (("compare",), "comparers"),
    (("purchase", "order", "buy", "checkout", "transaction", "payment", "sale"), "buyers"),
    (("view", "browse", "visit", "impression", "click", "page", "screen"), "browsers"),
    (("share", "invite", "refer"), "sharers"),
    (("signup", "sign_up", "register"), "sign-ups"),
    (("login", "session", "open"), "visitors"),
]


@dataclass(frozen=True)
class Signal:
    """One distinguishing fact: the word it puts in a name, how strong it is, and a clause for prose."""

    kind: str
    word: str
    strength: float
    phrase: str


def _rel(p: CohortProfile, key: str) -> float | None:
    v = p.relative.get(key) if isinstance(p.relative, dict) else None
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return None
    return min(max(float(v), 0.01), 100.0)


def _fmt_x(v: float) -> str:
    return f"{v:.1f}× the average"


def clean_value(value: str, max_words: int = 3) -> str:
    """A category / event value as words in a sentence: "HOME_GARDEN" -> "home garden"."""
    text = re.sub(r"[_/|>]+", " ", str(value))
    text = re.sub(r"\s+", " ", text).strip()
    if text.isupper() or text.istitle():
        text = text.lower()
    return " ".join(text.split()[:max_words])


def behaviour_noun(event: str) -> str | None:
    """Behaviour noun for an event type, or None when no keyword matches."""
    e = event.lower()
    for keys, noun in BEHAVIOURS:
        if any(k in e for k in keys):
            return noun
    return None


def population_hours(profiles: Sequence[CohortProfile]) -> list[float]:
    """Size-weighted mean of the cohorts' hour histograms: the population's hour-of-day pattern."""
    acc = [0.0] * 24
    for p in profiles:
        h = _norm(p.hour_hist, 24)
        w = max(p.size, 0) or 1
        if h:
            acc = [a + w * x for a, x in zip(acc, h, strict=True)]
    return _norm(acc, 24) or [1 / 24] * 24


def population_weekend(profiles: Sequence[CohortProfile]) -> float:
    """Size-weighted share of the population's events on Saturday and Sunday."""
    num = den = 0.0
    for p in profiles:
        h = _norm(p.weekday_hist, 7)
        if h:
            w = max(p.size, 0) or 1
            num += w * (h[5] + h[6])
            den += w
    return num / den if den else 2 / 7


def _norm(hist: Sequence[float], n: int) -> list[float] | None:
    if len(hist) != n:
        return None
    vals = [
        float(x) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else 0.0
        for x in hist
    ]
    total = sum(vals)
    return [x / total for x in vals] if total > 0 else None


def profile_signals(p: CohortProfile, pop_hours: list[float], pop_weekend: float) -> list[Signal]:
    """Every signal of a profile, strongest first (ties broken by kind, so the order is deterministic)."""
    out: list[Signal] = []
    r = _rel(p, "recency")
    if r is not None:
        ago = f"were last active {p.recency_days:.0f} days ago ({_fmt_x(r)})"
        if r >= RATIO:
            ago += " and have not come back"
        if r >= 3 and p.recency_days >= 90:
            out.append(Signal("recency", "dormant", abs(math.log(r)), ago))
        elif r >= RATIO:
            out.append(Signal("recency", "lapsed", abs(math.log(r)), ago))
        elif r <= 1 / RATIO:
            out.append(Signal("recency", "recent", abs(math.log(r)), ago))
    t = _rel(p, "tenure")
    if t is not None and (t >= 2 or t <= 1 / 2):
        word = "long-time" if t > 1 else "new"
        out.append(
            Signal(
                "tenure",
                word,
                abs(math.log(t)),
                f"have a tenure of {p.tenure_days:.0f} days ({_fmt_x(t)})",
            )
        )
    f, e = _rel(p, "frequency"), _rel(p, "engagement")
    if 0 < p.frequency <= 1.5:
        out.append(
            Signal(
                "activity", "one-time", max(1.0, abs(math.log(f or 1))), "have a single event each"
            )
        )
    else:
        best = max(
            ((abs(math.log(v)), k, v) for k, v in (("frequency", f), ("engagement", e)) if v),
            default=None,
        )
        if best and (best[2] >= RATIO or best[2] <= 1 / RATIO):
            _, key, v = best
            amount = (
                f"{p.frequency:.0f} events"
                if key == "frequency"
                else f"{p.engagement:.0f} active days"
            )
            word = "frequent" if v > 1 else "occasional"
            out.append(
                Signal("activity", word, abs(math.log(v)), f"have {amount} each ({_fmt_x(v)})")
            )
    m = _rel(p, "monetary")
    if m is not None and p.monetary > 0 and (m >= RATIO or m <= 1 / RATIO):
        word = "high-spend" if m > 1 else "low-spend"
        how = "a lot" if m > 1 else "little"
        out.append(
            Signal("value", word, abs(math.log(m)), f"spend {how}, {p.monetary:,.2f} each ({_fmt_x(m)})")
        )
    out.extend(_time_signals(p, pop_hours, pop_weekend))
    out.extend(_order_signals(p))
    out.extend(_share_signals(p))
    return sorted(out, key=lambda s: (-round(s.strength, 9), ORDER.get(s.kind, 9), s.word))


def _time_signals(p: CohortProfile, pop_hours: list[float], pop_weekend: float) -> list[Signal]:
    out: list[Signal] = []
    h = _norm(p.hour_hist, 24)
    if h:
        best = None
        for part, hours in DAYPARTS.items():
            c, q = sum(h[i] for i in hours), sum(pop_hours[i] for i in hours)
            if c >= 0.25 and q > 0 and (best is None or c / q > best[0]):
                best = (c / q, part, c, q)
        if best and best[0] >= RATIO:
            lift, part, c, q = best
            when, word = DAYPART_PHRASE[part], DAYPART_WORD[part]
            window = hour_window(h)  # only a tight window is worth stating in clock times
            if window is not None and int((window[0] + window[1]) / 2) % 24 in DAYPARTS[part]:
                start, end = window
                if part == "morning" and end <= 10:
                    when, word = "early in the morning", EARLY_MORNING_WORD
                when += f", between {start:02d}:00 and {end % 24:02d}:00"
            phrase = f"are most active {when} ({c:.0%} of events vs {q:.0%} overall)"
            out.append(Signal("daypart", word, math.log(lift), phrase))
    w = _norm(p.weekday_hist, 7)
    if w and 0 < pop_weekend < 1:
        c = w[5] + w[6]
        if c / pop_weekend >= RATIO:
            phrase = f"act mostly at weekends ({c:.0%} of events vs {pop_weekend:.0%} overall)"
            out.append(Signal("weekend", "weekend", math.log(c / pop_weekend), phrase))
    return out


PLACE_SHIFT = 0.2  # a purchase's mean place in the session (0 first .. 1 last) this far from the population's


def _order_signals(p: CohortProfile) -> list[Signal]:
    """Where in a session the cohort buys, when that differs from everyone: buy-first vs buy-last.

    Cohorts that do the same things in another order (an RFM twin of a research-then-buy cohort)
    differ in nothing else a profile shows; `extra["event_place"]` is computed by profile.py.
    """
    places = p.extra.get("event_place") if isinstance(p.extra, dict) else None
    if not isinstance(places, dict):
        return []
    buys = [(v.get("n", 0), e, v) for e, v in places.items()
            if isinstance(v, dict) and behaviour_noun(str(e)) == "buyers"]
    if not buys:
        return []
    _, event, v = max(buys, key=lambda b: (b[0], b[1]))
    c, q = v.get("cohort"), v.get("population")
    if not isinstance(c, (int, float)) or not isinstance(q, (int, float)):
        return []
    what = clean_value(event)
    where = f"{what} comes {c:.0%} of the way through their sessions vs {q:.0%} overall"
    if c <= 0.45 and c - q <= -PLACE_SHIFT:
        return [Signal("order", "impulse", 2 * (q - c), f"buy early in a session and browse afterwards ({where})")]
    if c >= 0.75 and c - q >= PLACE_SHIFT:
        return [Signal("order", "deliberate", 2 * (c - q), f"look around first and buy at the end of a session ({where})")]
    return []


def _share_signals(p: CohortProfile) -> list[Signal]:
    out: list[Signal] = []
    cats = [s for s in p.top_categories if s.share >= 0.1 and s.lift > 0]
    if cats:
        top = max(cats, key=lambda s: (s.lift, s.share))
        if top.lift < LIFT:
            top = max(cats, key=lambda s: s.share)
        word = clean_value(top.value)
        # Name the cohort's main categories together ("home, fashion and garden"), as people would.
        main = [top] + [s for s in cats if s is not top][: 2]
        main = sorted(main, key=lambda s: -s.share)
        words = [clean_value(s.value) for s in main]
        listed = ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1]
        shares = ", ".join(f"{s.share:.0%}" for s in main)
        phrase = (
            f"focus on {listed} ({shares} of events; {word} at {top.lift:.1f}× the population rate)"
        )
        # A category everyone shares still names the cohort, but only as a weak signal.
        strength = math.log(top.lift) if top.lift >= LIFT else 0.01 * top.share
        if word:
            out.append(Signal("category", word, strength, phrase))
    return out


def hour_window(hist: Sequence[float], mass: float = 0.6, max_hours: int = 4) -> tuple[int, int] | None:
    """Shortest run of hours (circular) holding `mass` of the events: (first hour, hour after the last)."""
    h = _norm(hist, 24)
    if not h:
        return None
    for length in range(1, max_hours + 1):
        sums = [(sum(h[(s + i) % 24] for i in range(length)), s) for s in range(24)]
        total, start = max(sums, key=lambda x: (x[0], -x[1]))
        if total >= mass:
            return start, start + length
    return None


# Verb phrases for the behaviour nouns: what the cohort *does*, in plain words.
BEHAVIOUR_VERBS = {
    "returners": "send many purchases back",
    "reviewers": "write reviews",
    "cart builders": "fill carts",
    "cart abandoners": "add to cart but rarely buy",
    "wishlisters": "fill wishlists",
    "searchers": "search and compare a lot",
    "comparers": "compare products",
    "buyers": "buy often",
    "browsers": "browse many pages",
    "sharers": "share and invite others",
    "sign-ups": "sign up",
    "visitors": "visit often",
}
# Rare event types (rarely in a profile's top events) that say a lot about a cohort when they recur,
# and the behaviour noun they earn when they do (a cohort that keeps returning things is "returners").
RARE_NOUNS = {"send many purchases back": "returners", "write reviews": "reviewers"}
RARE_EVENTS: list[tuple[tuple[str, ...], str]] = [
    (("return", "refund"), "send many purchases back"),
    (("review", "rating"), "write reviews"),
    (("coupon", "voucher", "promo"), "use coupons"),
    (("wish", "favorite", "favourite"), "add to wishlists"),
]


def exemplar_event_clauses(profiles: Sequence[CohortProfile], min_count: int = 3, lift: float = 3.0) -> list[list[str]]:
    """Per profile, clauses for rare event types its exemplars show far more often than all exemplars do."""
    counts: list[dict[str, int]] = []
    for p in profiles:
        c: dict[str, int] = {}
        for ex in p.exemplars:
            for ev in ex.events:
                for keys, clause in RARE_EVENTS:
                    if any(k in str(ev.event).lower() for k in keys):
                        c[clause] = c.get(clause, 0) + 1
                        break
        c["*"] = sum(len(ex.events) for ex in p.exemplars)
        counts.append(c)
    total = sum(c["*"] for c in counts)
    out = []
    for c in counts:
        clauses = []
        for _, clause in RARE_EVENTS:
            n, pooled = c.get(clause, 0), sum(x.get(clause, 0) for x in counts)
            if n >= min_count and c["*"] and pooled and (n / c["*"]) >= lift * (pooled / total):
                clauses.append(clause)
        out.append(clauses)
    return out


def buying_clauses(p: CohortProfile, skip_price: bool = False) -> list[str]:
    """How the cohort buys: rarely or often, cheap or pricey (from event lifts, spend and frequency)."""
    out: list[str] = []
    buys = [s for s in p.top_events if behaviour_noun(s.value) == "buyers"]
    carts = [s for s in p.top_events if behaviour_noun(s.value) == "cart builders"]
    buy_lift = max((s.lift for s in buys), default=None)
    if buy_lift is not None and buy_lift <= 0.5:
        out.append("rarely buy")
    elif buy_lift is None and len(p.top_events) >= 5 and carts and max(s.lift for s in carts) <= 0.5:
        out.append("rarely buy")
    elif buy_lift is not None and buy_lift >= 1.8:
        out.append("buy often")
    m, f = _rel(p, "monetary"), _rel(p, "frequency")
    returns = any(behaviour_noun(s.value) == "returners" for s in p.top_events)
    if buy_lift and m and f and p.monetary > 0 and not returns and not skip_price:
        price = m / (f * buy_lift)  # spend per purchase event, relative to the population
        if price >= 2.0:
            out.append(f"pay high prices (about {price:.1f}× the average per purchase)")
        elif price <= 0.6:
            out.append(f"buy cheap items (about {price:.1f}× the average per purchase)")
    return out


def behaviour(p: CohortProfile) -> Signal:
    """The noun of the name: the event type the cohort over-indexes on, else its most common one."""
    events = [s for s in p.top_events if s.share >= 0.05]
    if not events:
        return Signal("behaviour", "customers", 0.0, "")
    top = max(events, key=lambda s: (s.lift, s.share))
    if top.lift < 1.2:
        top = max(events, key=lambda s: s.share)
    noun = behaviour_noun(top.value)
    buys = [s for s in p.top_events if behaviour_noun(s.value) == "buyers"]
    if noun == "cart builders" and (not buys or max(s.lift for s in buys) < 1):
        noun = "cart abandoners"
    if noun is None:
        noun = f"{clean_value(top.value, 2)} users" if top.lift >= 1.2 else "customers"
    verb = BEHAVIOUR_VERBS.get(noun, f"over-index on {clean_value(top.value)} events")
    phrase = f"{verb} ({clean_value(top.value)} is {top.share:.0%} of their events, {top.lift:.1f}× the population rate)"
    return Signal("behaviour", noun, math.log(max(top.lift, 1.0)), phrase)


def is_strong(s: Signal) -> bool:
    """Whether a signal distinguishes the cohort (a category everyone shares does not)."""
    return s.kind != "category" or s.strength >= math.log(LIFT)


def compose(modifiers: Sequence[Signal], noun: str) -> str:
    """Put adjectives in English order in front of the noun and capitalise: "Lapsed grocery browsers"."""
    words = [s.word for s in sorted(modifiers, key=lambda s: ORDER.get(s.kind, 9))]
    if "new" in words and "recent" in words:  # "new" already says recent
        words.remove("recent")
    if not any(is_strong(s) for s in modifiers):  # nothing stands out: say so
        words.insert(0, "mainstream")
    text = " ".join([*words, noun])
    first = text.split()[0]
    return text if any(c.isupper() for c in first[1:]) else text[0].upper() + text[1:]
