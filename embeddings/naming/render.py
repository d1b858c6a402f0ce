"""Profiles and exemplar users as compact text for a language model, and the profile fingerprint.

Numbers are rendered to two significant figures: enough to name a cohort, and coarse enough that a
refresh with slightly different data gives the same text (and so the same cached name).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime, timezone

from embeddings.naming.profile_types import CohortProfile, Exemplar, ExemplarEvent, Share

RENDER_VERSION = "r1"  # bump when the rendering changes what a model sees: it invalidates caches
MAX_LABEL_CHARS = 40
N_EXEMPLARS = 4  # 3-5 diverse users per cohort
REL_KEYS = [
    ("recency", "recency"),
    ("frequency", "frequency"),
    ("monetary", "spend"),
    ("engagement", "engagement"),
    ("tenure", "tenure"),
]


def sig2(x: float) -> str:
    """A number to two significant figures without exponent noise: 2.34 -> "2.3", 1234 -> "1,200"."""
    if not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    digits = 1 - math.floor(math.log10(abs(x)))  # decimals that keep two significant figures
    if digits <= 0:
        return f"{int(round(x, digits)):,}"
    return f"{round(x, digits):.{digits}f}"


def pct(x: float) -> str:
    """A share as a percentage to two significant figures: 0.12 -> "12%", 0.0045 -> "0.45%"."""
    return f"{sig2(100 * x)}%"


def parse_ts(ts: str) -> datetime:
    """ISO-8601 to an aware UTC datetime (naive timestamps are taken as UTC)."""
    dt = datetime.fromisoformat(ts.strip().replace("Z", "+00:00"))
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _ago(ts: str, as_of: datetime) -> str:
    try:
        seconds = max(0.0, (as_of - parse_ts(ts)).total_seconds())
    except ValueError:
        return "?"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def _clip(text: str, n: int = MAX_LABEL_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _event_label(ev: ExemplarEvent, currency: str, show_category: bool = True) -> str:
    parts = [_clip(ev.event, 24)]
    label = ev.text or ev.item
    if label:
        parts.append("'" + _clip(label).replace("'", "’") + "'")
    if ev.category and show_category:
        parts.append(f"({_clip(ev.category, 24)})")
    if ev.amount is not None and math.isfinite(ev.amount) and ev.amount != 0:
        parts.append(f"{'-' if ev.amount < 0 else ''}{currency}{abs(ev.amount):,.2f}")
    return " ".join(parts)


def render_exemplar(e: Exemplar, as_of: datetime, max_events: int = 12, currency: str = "$") -> str:
    """One user's most recent events, oldest first, as one line.

    "… 40 earlier events → 3d ago: purchase 'Garden hose 15m' (Garden) $24.99 → 2d ago: page_view ×3"
    Consecutive identical events at the same relative time are folded into "×n".
    """
    as_of = as_of.replace(tzinfo=timezone.utc) if as_of.tzinfo is None else as_of
    events = (
        sorted(e.events, key=lambda ev: _sort_key(ev.ts))[-max_events:] if max_events > 0 else []
    )
    steps: list[list] = []  # [text, count]
    prev_category = None
    for ev in events:
        # A category is shown when it changes, not on every event: compact, same information.
        label = _event_label(ev, currency, show_category=ev.category != prev_category)
        prev_category = ev.category
        text = f"{_ago(ev.ts, as_of)}: {label}"
        if steps and steps[-1][0] == text:
            steps[-1][1] += 1
        else:
            steps.append([text, 1])
    rendered = [t if n == 1 else f"{t} ×{n}" for t, n in steps]
    earlier = max(e.n_events, len(e.events)) - len(events)
    if earlier > 0:
        rendered.insert(0, f"… {earlier} earlier events")
    return " → ".join(rendered) if rendered else "(no events)"


def _sort_key(ts: str) -> tuple[int, float]:
    try:
        return (0, parse_ts(ts).timestamp())
    except ValueError:
        return (1, 0.0)


def select_exemplars(exemplars: Sequence[Exemplar], k: int = N_EXEMPLARS) -> list[Exemplar]:
    """Up to `k` diverse exemplars: farthest-first on the Jaccard distance of what they did.

    Starts from the first exemplar (the profile lists the most typical first), then repeatedly adds
    the one least like those already chosen, so the model sees the cohort's range, not k copies.
    """
    feats = [
        {f"e:{ev.event}" for ev in x.events}
        | {f"c:{ev.category}" for ev in x.events if ev.category}
        | {f"i:{ev.text or ev.item}" for ev in x.events if ev.text or ev.item}
        for x in exemplars
    ]
    if not exemplars:
        return []
    chosen = [0]
    while len(chosen) < min(k, len(exemplars)):

        def dist(i: int) -> float:
            return min(_jaccard(feats[i], feats[j]) for j in chosen)

        rest = [i for i in range(len(exemplars)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (dist(i), -i)))
    return [exemplars[i] for i in chosen]


def _jaccard(a: set[str], b: set[str]) -> float:
    union = a | b
    return 1.0 - len(a & b) / len(union) if union else 0.0


def _rel_text(p: CohortProfile) -> str:
    absolute = {
        "recency": f"last active {sig2(p.recency_days)} days ago",
        "frequency": f"{sig2(p.frequency)} events per user",
        "monetary": f"{sig2(p.monetary)} spent per user",
        "engagement": f"{sig2(p.engagement)} active days per user",
        "tenure": f"{sig2(p.tenure_days)} days between first and last event",
    }
    parts = []
    for key, label in REL_KEYS:
        v = p.relative.get(key) if isinstance(p.relative, dict) else None
        if key == "monetary" and (p.monetary <= 0 or v is None):
            continue  # no amounts in the data: say nothing rather than "0×"
        if isinstance(v, (int, float)) and math.isfinite(v):
            parts.append(f"{label} {sig2(v)}× the average ({absolute[key]})")
    return "; ".join(parts) if parts else "n/a"


def _shares(items: Sequence[Share], n: int, quote: bool = False) -> str:
    out = []
    for s in items[:n]:
        v = _clip(s.value)
        v = "'" + v.replace("'", "’") + "'" if quote else v
        out.append(f"{v} {pct(s.share)} ({sig2(s.lift)}× population)")
    return ", ".join(out) if out else "n/a"


def _time_text(p: CohortProfile) -> str:
    hours = list(p.hour_hist) if len(p.hour_hist) == 24 else []
    total = sum(h for h in hours if h > 0)
    text = f"mostly {p.daypart}" if p.daypart else "n/a"
    if total > 0:
        peaks = sorted(range(24), key=lambda h: (-hours[h], h))[:3]
        text += " (peak hours UTC: " + ", ".join(f"{h:02d}h" for h in sorted(peaks)) + ")"
    week = list(p.weekday_hist) if len(p.weekday_hist) == 7 else []
    if sum(week) > 0:
        text += f"; weekend {pct((week[5] + week[6]) / sum(week))} of events"
    return text


def _order_text(p: CohortProfile) -> str | None:
    """Where the top event types fall inside a session, vs the population (profile.py's event_place)."""
    places = p.extra.get("event_place") if isinstance(p.extra, dict) else None
    if not isinstance(places, dict):
        return None
    parts = []
    for s in p.top_events[:5]:
        v = places.get(s.value)
        if isinstance(v, dict) and isinstance(v.get("cohort"), (int, float)) and isinstance(v.get("population"), (int, float)):
            parts.append(f"{_clip(s.value)} {v['cohort']:.2f} (population {v['population']:.2f})")
    return "; ".join(parts) or None


def render_stats(p: CohortProfile) -> str:
    """The statistics block of a profile, without its id or exemplars (what the fingerprint hashes)."""
    lines = [
        f"Size: {pct(p.share)} of users",
        f"Relative to the population: {_rel_text(p)}",
        f"Top event types: {_shares(p.top_events, 5)}",
        f"Top categories: {_shares(p.top_categories, 5)}",
        f"Top items: {_shares(p.top_items, 5, quote=True)}",
        f"Time: {_time_text(p)}",
    ]
    order = _order_text(p)
    if order:
        lines.append(f"Place in a session (0 = first event, 1 = last): {order}")
    return "\n".join(lines)


def render_profile(p: CohortProfile, n_exemplars: int = N_EXEMPLARS, max_events: int = 12) -> str:
    """A cohort for the prompt: id, statistics relative to the population, diverse exemplar sequences."""
    lines = [f"### Cohort {p.cohort_id}", render_stats(p)]
    picked = select_exemplars(p.exemplars, n_exemplars)
    if picked:
        try:
            as_of = parse_ts(p.as_of)
        except ValueError:
            as_of = max(
                (parse_ts(ev.ts) for x in picked for ev in x.events),
                default=datetime.now(timezone.utc),
            )
        lines.append(f"Example users ({len(picked)}, oldest event first):")
        lines += [f"- {render_exemplar(x, as_of, max_events)}" for x in picked]
    return "\n".join(lines)


def render_summary(p: CohortProfile) -> str:
    """One line per cohort, for the other cohorts' context when prompts are batched."""
    cat = (
        f"; top category {_clip(p.top_categories[0].value)} ({sig2(p.top_categories[0].lift)}×)"
        if p.top_categories
        else ""
    )
    ev = (
        f"; top event {_clip(p.top_events[0].value)} ({sig2(p.top_events[0].lift)}×)"
        if p.top_events
        else ""
    )
    rel = ", ".join(
        f"{label} {sig2(p.relative[k])}×"
        for k, label in REL_KEYS
        if isinstance(p.relative.get(k), (int, float))
        and math.isfinite(p.relative[k])
        and not (k == "monetary" and p.monetary <= 0)
    )
    return f"Cohort {p.cohort_id}: {pct(p.share)} of users; {rel or 'n/a'}{cat}{ev}; mostly {p.daypart or 'n/a'}"


def profile_fingerprint(p: CohortProfile) -> str:
    """Stable hash of what a name should depend on: the rendered statistics (two significant figures).

    Excluded on purpose: the cohort id (a name describes content; ids are stable anyway, and two
    identical cohorts may share a cached name, then get de-duplicated), the `as_of` time, and the
    exemplar users (samples that change on every refresh; they illustrate, the statistics decide).
    Unknown `extra` keys are ignored.
    """
    text = f"{RENDER_VERSION}\n{render_stats(p)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
