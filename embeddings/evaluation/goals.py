"""Goals and leak-free labels: "did the user do X within the horizon after a cut-off?".

A goal is an event type and a horizon ("purchase within 30 days") or churn ("no event at all",
or "no purchase", within the horizon). `make_labels` slides cut-offs back through the history;
for each cut-off the model may only see `events_before(events, cutoff)` and the label looks at
(cutoff, cutoff + horizon]. The latest cut-off allowed is `max(ts) - horizon`, so every label has
a complete horizon of observed data (a later cut-off would call users "not converted" merely
because the log ends).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import polars as pl

from embeddings.errors import ConfigError, SchemaError
from embeddings.evaluation.rfm import MARKETER_ORDER, check_events, to_naive_utc

logger = logging.getLogger(__name__)

__all__ = [
    "Goal",
    "events_before",
    "goal_rate_by_segment",
    "latest_cutoff",
    "make_labels",
    "parse_goal",
    "parse_horizon",
]

_CHURN_WORDS = ("churn", "none")
# Calendar months and years vary in length; fixed lengths keep horizons comparable everywhere.
_UNIT_DAYS = {"h": 1 / 24, "d": 1, "w": 7, "m": 30, "y": 365}
_HORIZON_RE = re.compile(r"^\s*(\d+)\s*([hdwmy])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Goal:
    """What a label asks about.

    kind="event": the user has at least one `event` in (cutoff, cutoff + horizon].
    kind="churn": the user has no event at all (event=None), or no `event`, in that window.
    `aliases` are further event types that count as `event` (e.g. purchase_coupon next to
    purchase) wherever the goal is read: labels, past goal rates, the RFM baseline's transactions.
    """

    event: str | None  # None means churn on any activity (no event at all)
    horizon: timedelta  # length of the label window after the cut-off
    kind: Literal["event", "churn"] = "event"
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("event", "churn"):
            raise ConfigError(f"Goal kind must be 'event' or 'churn', got {self.kind!r}.")
        if self.kind == "event" and not self.event:
            raise ConfigError("An 'event' goal needs an event type, e.g. Goal('purchase', ...).")
        if self.horizon <= timedelta(0):
            raise ConfigError(f"Goal horizon must be positive, got {self.horizon}.")
        if self.aliases and self.event is None:
            raise ConfigError("Goal aliases need a goal with an event type (e.g. purchase, churn:purchase).")
        object.__setattr__(self, "aliases", tuple(a for a in dict.fromkeys(self.aliases) if a != self.event))

    @property
    def event_types(self) -> list[str] | None:
        """Every event type that counts as the goal's event; None for churn on any activity."""
        return None if self.event is None else [self.event, *self.aliases]

    def target(self) -> pl.Expr:
        """Polars expression: True for the events the goal counts."""
        types = self.event_types
        return pl.lit(True) if types is None else pl.col("event").is_in(types)

    def describe(self) -> str:
        """Human text, e.g. 'purchase within 30 days' or 'churn (no event) within 90 days'."""
        days = self.horizon / timedelta(days=1)
        span = f"{days:g} days"
        name = " or ".join(self.event_types or [])
        if self.kind == "event":
            return f"{name} within {span}"
        what = "no event" if self.event is None else f"no {name}"
        return f"churn ({what}) within {span}"


def parse_horizon(horizon: str) -> timedelta:
    """Parse '90d', '12w', '3m' (= 90 days), '1y' (= 365 days) or '48h' into a timedelta."""
    m = _HORIZON_RE.match(str(horizon))
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(
            f"Cannot read the goal horizon {horizon!r}: use a positive whole number and a unit, "
            "e.g. '30d' (days), '12w' (weeks), '3m' (months of 30 days), '1y' or '48h'."
        )
    return timedelta(days=int(m.group(1)) * _UNIT_DAYS[m.group(2).lower()])


def parse_goal(goal: str, horizon: str, aliases: list[str] | tuple[str, ...] = ()) -> Goal:
    """Build a Goal from config text.

    'purchase' -> purchase within the horizon; 'churn' or 'none' -> no event at all;
    'churn:purchase' (or 'none:purchase') -> no purchase within the horizon. `aliases`: further
    event types that count as the goal's event (Goal.aliases).
    """
    text = str(goal).strip()
    if not text:
        raise ConfigError("The goal is empty; name an event type (e.g. 'purchase') or 'churn'.")
    h = parse_horizon(horizon)
    head, sep, tail = text.partition(":")
    if head.strip().lower() in _CHURN_WORDS:
        event = tail.strip() or None
        if sep and event is None:
            raise ConfigError(f"Goal {goal!r}: write 'churn' or 'churn:<event type>'.")
        return Goal(event=event, horizon=h, kind="churn", aliases=tuple(aliases))
    return Goal(event=text, horizon=h, kind="event", aliases=tuple(aliases))


def event_variants(events: pl.DataFrame, event: str, counted: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Event types named like variants of `event` (purchase_coupon, coupon_purchase), other than `counted`."""
    stem = event.lower()
    types = events.get_column("event").drop_nulls().unique().sort().to_list()
    return [t for t in types if t not in {event, *counted}
            and (t.lower().startswith(stem + "_") or t.lower().endswith("_" + stem))]


def warn_unlisted_variants(events: pl.DataFrame, goal: Goal) -> list[str]:
    """Log (and return) event types that look like variants of the goal's event but do not count
    as it, e.g. purchase_coupon next to purchase: a marketer probably meant them as the goal too."""
    if goal.event is None:
        return []
    found = event_variants(events, goal.event, goal.event_types or [])
    if found:
        logger.warning("the events also hold %s, which do not count as the goal %r; to count them, add %s",
                       ", ".join(found), goal.event, " ".join(f"--goal-alias {t}" for t in found))
    return found


def events_before(events: pl.DataFrame, cutoff: datetime) -> pl.DataFrame:
    """The history a model may see at `cutoff`: events at or before it."""
    check_events(events)
    return events.filter(pl.col("ts") <= to_naive_utc(cutoff))


def latest_cutoff(events: pl.DataFrame, goal: Goal) -> datetime:
    """Latest cut-off whose label window is fully observed: max(ts) - horizon."""
    check_events(events)
    if events.is_empty():
        raise SchemaError("Cannot make labels from an empty event table.")
    return events.get_column("ts").max() - goal.horizon  # type: ignore[operator]


def _resolve_cutoffs(
    events: pl.DataFrame,
    goal: Goal,
    cutoffs: list[datetime] | None,
    n_cutoffs: int,
    stride: timedelta | None,
    last_cutoff: datetime | None,
) -> list[datetime]:
    latest = latest_cutoff(events, goal)
    why = f"the data ends at {latest + goal.horizon} and the goal horizon is {goal.horizon}"
    if last_cutoff is not None:
        last_cutoff = to_naive_utc(last_cutoff)
        if last_cutoff > latest:
            raise ConfigError(
                f"last_cutoff {last_cutoff} is too late: {why}, so labels after {latest} "
                "would be incomplete. Use an earlier last_cutoff (or omit it)."
            )
        latest = last_cutoff
    if cutoffs is not None:
        resolved = sorted({to_naive_utc(c) for c in cutoffs})
        late = [c for c in resolved if c > latest]
        if late:
            raise ConfigError(
                f"Cut-off(s) {[str(c) for c in late]} are after the latest allowed cut-off "
                f"{latest} ({why}); their labels would peek past the end of the data."
            )
    else:
        if n_cutoffs < 1:
            raise ConfigError(f"n_cutoffs must be at least 1, got {n_cutoffs}.")
        step = stride if stride is not None else goal.horizon
        if step <= timedelta(0):
            raise ConfigError(f"stride must be positive, got {step}.")
        resolved = sorted(latest - i * step for i in range(n_cutoffs))
    first_ts = events.get_column("ts").min()
    early = [c for c in resolved if c < first_ts]  # type: ignore[operator]
    if early:
        logger.warning(
            "make_labels: dropping %d cut-off(s) before the first event (%s): %s",
            len(early),
            first_ts,
            [str(c) for c in early],
        )
        resolved = [c for c in resolved if c >= first_ts]  # type: ignore[operator]
    if not resolved:
        raise ConfigError(
            f"No usable cut-off: all fall before the first event ({first_ts}). Shorten the "
            "horizon or the stride, or ask for fewer cut-offs."
        )
    return resolved


def make_labels(
    events: pl.DataFrame,
    goal: Goal,
    *,
    cutoffs: list[datetime] | None = None,
    n_cutoffs: int = 4,
    stride: timedelta | None = None,
    last_cutoff: datetime | None = None,
) -> pl.DataFrame:
    """Labels for (user, cut-off) pairs without peeking past the horizon.

    Args:
        events: canonical events.
        goal: what to label (see Goal).
        cutoffs: explicit cut-offs; each must be <= the latest allowed one.
        n_cutoffs, stride: otherwise, `n_cutoffs` cut-offs stepping back by `stride` (default:
            the horizon, so label windows do not overlap) from the latest allowed one.
        last_cutoff: an earlier latest cut-off than max(ts) - horizon (e.g. to keep a test period).

    Returns:
        user_id, cutoff (Datetime us), label (Int8 0/1), sorted by cutoff then user_id. A pair
        exists only for users with at least one event at or before that cut-off.

    Raises:
        ConfigError: a cut-off is later than max(ts) - horizon (or than `last_cutoff`).
    """
    check_events(events)
    chosen = _resolve_cutoffs(events, goal, cutoffs, n_cutoffs, stride, last_cutoff)
    target = goal.target()
    frames = []
    for cutoff in chosen:
        window = events.filter(
            (pl.col("ts") > cutoff) & (pl.col("ts") <= cutoff + goal.horizon) & target
        )
        hits = window.select("user_id").unique().with_columns(_hit=pl.lit(True))
        frame = (
            events_before(events, cutoff)
            .select("user_id")
            .unique()
            .join(hits, on="user_id", how="left")
            .select(
                "user_id",
                pl.lit(cutoff, dtype=pl.Datetime("us")).alias("cutoff"),
                pl.col("_hit").fill_null(False).alias("_hit"),
            )
        )
        frames.append(frame)
    labels = pl.concat(frames)
    hit = pl.col("_hit") if goal.kind == "event" else ~pl.col("_hit")
    labels = labels.with_columns(label=hit.cast(pl.Int8)).drop("_hit").sort("cutoff", "user_id")
    logger.info(
        "make_labels: %s; %d cut-offs from %s to %s; %d rows, positive rate %.4f",
        goal.describe(),
        len(chosen),
        chosen[0],
        chosen[-1],
        labels.height,
        labels["label"].mean() if labels.height else float("nan"),
    )
    return labels


def goal_rate_by_segment(
    segments: pl.DataFrame, labels: pl.DataFrame, *, cutoff: datetime | None = None
) -> pl.DataFrame:
    """Goal rate per segment: segment, n (labelled users), n_positive, rate.

    Segments must describe users at the labels' cut-off, or they leak the future into the
    comparison. So: when `segments` has a `cutoff` column it is joined on (user_id, cutoff);
    otherwise labels must hold a single cut-off or `cutoff` must pick one. Segments without any
    labelled user are kept with n = 0 and a null rate. Rows follow MARKETER_ORDER for RFM
    segments, then the other segment names sorted.
    """
    for name, frame, cols in (
        ("segments", segments, ("user_id", "segment")),
        ("labels", labels, ("user_id", "cutoff", "label")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise SchemaError(f"{name} is missing column(s) {missing}; got {frame.columns}.")
    if cutoff is not None:
        labels = labels.filter(pl.col("cutoff") == to_naive_utc(cutoff))
        if labels.is_empty():
            raise ConfigError(f"labels have no rows at cutoff {cutoff}.")
    keys = ["user_id"]
    if "cutoff" in segments.columns:
        keys.append("cutoff")
    elif labels.get_column("cutoff").n_unique() > 1:
        raise ConfigError(
            "labels hold several cut-offs but segments have no 'cutoff' column: pass cutoff=... "
            "(the cut-off the segments were computed at) or add a cutoff column to segments."
        )
    joined = segments.join(labels.select(*keys, "label"), on=keys, how="left")
    out = joined.group_by("segment").agg(
        n=pl.col("label").count().cast(pl.Int64),
        n_positive=pl.col("label").cast(pl.Int64).sum(),
        rate=pl.col("label").cast(pl.Float64).mean(),
    )
    rank = {s: i for i, s in enumerate(MARKETER_ORDER)}
    order = sorted(out["segment"].to_list(), key=lambda s: (rank.get(s, len(rank)), s))
    return (
        pl.DataFrame({"segment": order})
        .join(out, on="segment", how="left", maintain_order="left")
        .select("segment", "n", "n_positive", "rate")
    )
