"""Plain data types describing a cohort: its profile and exemplar users.

These are what namers read and what `cohorts.json` stores. They hold only JSON-friendly values
so `to_dict`/`from_dict` round-trip exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ExemplarEvent:
    ts: str  # ISO-8601 timestamp
    event: str
    item: str | None = None
    category: str | None = None
    amount: float | None = None
    text: str | None = None  # item title / free text


@dataclass
class Exemplar:
    user_id: str
    n_events: int  # total events of this user (the list below may be truncated to the most recent)
    events: list[ExemplarEvent]


@dataclass
class Share:
    """A value's share inside the cohort and its lift over the population (share / population share)."""

    value: str
    share: float
    lift: float


@dataclass
class CohortProfile:
    cohort_id: int
    size: int
    share: float  # fraction of all users
    as_of: str  # ISO timestamp that recency is measured against
    # Per-user medians inside the cohort (monetary: mean) and their ratio to the whole population.
    recency_days: float  # days since the user's last event
    frequency: float  # events per user
    monetary: float  # total amount per user (0 when the data has no amounts)
    engagement: float  # distinct active days per user
    tenure_days: float  # days between first and last event
    relative: dict[str, float]  # {"recency", "frequency", "monetary", "engagement", "tenure"} -> cohort / population
    top_events: list[Share]
    top_categories: list[Share]
    top_items: list[Share]  # item titles (text) when present, else item ids
    hour_hist: list[float]  # 24 shares of the cohort's events by hour of day (UTC)
    weekday_hist: list[float]  # 7 shares, Monday first
    daypart: str  # dominant part of day: "night", "morning", "afternoon" or "evening"
    exemplars: list[Exemplar] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. goal rate when a goal is configured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CohortProfile:
        d = dict(d)
        for k in ("top_events", "top_categories", "top_items"):
            d[k] = [Share(**s) for s in d.get(k, [])]
        d["exemplars"] = [
            Exemplar(
                user_id=e["user_id"],
                n_events=e["n_events"],
                events=[ExemplarEvent(**ev) for ev in e["events"]],
            )
            for e in d.get("exemplars", [])
        ]
        return cls(**d)


@dataclass
class CohortName:
    """What a namer returns for one cohort."""

    name: str  # 2-6 words, unique across the cohort set
    description: str  # 1-2 sentences
    suggested_action: str = ""
    namer: str = "stats"  # which namer produced it ("stats", "llm:<model>", "local:<path>", "override")
    fallback_reason: str | None = None  # why an LLM namer fell back to the stats namer
