"""Request and response models of the HTTP API (they are also the OpenAPI schema at /docs).

Every request model forbids unknown fields, bounds string lengths and rejects NaN/inf, so a
malformed payload is a 422 naming the field, never a 500.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_ID_LEN = 256  # user ids
MAX_TOKEN_LEN = 256  # event type, item, category
MAX_TEXT_LEN = 2000  # free text / item title
_MIN_TS = datetime(1970, 1, 1)
_MAX_TS = datetime(2200, 1, 1)


def parse_ts(v: Any) -> datetime:
    """ISO-8601 string (tz-aware is converted to UTC) or epoch number -> naive UTC datetime.

    Epoch numbers are seconds; values above 1e11 are read as milliseconds, above 1e14 as
    microseconds (the same "auto" rule as file loading).
    """
    if isinstance(v, bool) or v is None:
        raise ValueError("timestamp must be an ISO-8601 string or an epoch number")
    if isinstance(v, (int, float)):
        x = float(v)
        if not math.isfinite(x):
            raise ValueError("timestamp must be finite")
        if abs(x) > 1e14:
            x /= 1e6
        elif abs(x) > 1e11:
            x /= 1e3
        if not 0 <= x < 7.2e9:
            raise ValueError("epoch timestamp out of range (1970..2200)")
        return datetime.fromtimestamp(x, tz=timezone.utc).replace(tzinfo=None)
    if isinstance(v, str):
        if len(v) > 64:
            raise ValueError("timestamp string is longer than 64 characters")
        try:
            d = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO-8601 timestamp, e.g. 2025-06-01T12:00:00Z") from None
        if d.tzinfo is not None:
            d = d.astimezone(timezone.utc).replace(tzinfo=None)
        if not _MIN_TS <= d < _MAX_TS:
            raise ValueError("timestamp out of range (1970..2200)")
        return d
    raise ValueError("timestamp must be an ISO-8601 string or an epoch number")


Timestamp = Annotated[datetime, BeforeValidator(parse_ts)]
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LEN)]
UserId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)


class EventIn(_Strict):
    """One event. Unknown event types and items are fine (they map to an out-of-vocabulary slot)."""

    ts: Timestamp = Field(description="ISO-8601 (e.g. 2025-06-01T12:00:00Z) or epoch seconds/ms")
    event: Token = Field(description="event type, e.g. view / cart / purchase")
    item: Token | None = None
    category: Token | None = None
    amount: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None
    text: Annotated[str, Field(max_length=MAX_TEXT_LEN)] | None = None


class AssignRequest(_Strict):
    """A user: a live session (`events`), a known `user_id`, or both (events win)."""

    user_id: UserId | None = None
    events: list[EventIn] | None = Field(
        None, description="the session's events (at least one); omit to look up a known user_id")
    as_of: Timestamp | None = Field(
        None, description="time recency is measured against; default: now; must be >= every event's ts")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "u42", "events": [
            {"ts": "2025-06-01T12:00:00Z", "event": "view", "item": "sku-1", "category": "books"},
            {"ts": "2025-06-01T12:03:00Z", "event": "purchase", "item": "sku-1", "amount": 12.5}]}]},
    )


class BatchRequest(_Strict):
    users: list[AssignRequest] = Field(..., min_length=1, description="users, answered in order")


class AssignResponse(BaseModel):
    user_id: str | None
    cohort_id: int
    cohort_name: str
    confidence: float
    neighbors: list[str] = Field(description="most similar known users (evidence)")
    model_version: str = Field(description="encoder bundle version that embedded the user")
    version: str = Field(description="workspace version (cohort set) that answered")
    source: str = Field(description="'live' (embedded from events) or 'stored' (known user)")


class BatchAssignResponse(BaseModel):
    results: list[AssignResponse]


class EmbedResponse(BaseModel):
    user_id: str | None
    embedding: list[float]
    dim: int
    model_version: str
    version: str
    source: str


class BatchEmbedResponse(BaseModel):
    results: list[EmbedResponse]


class CohortSummary(BaseModel):
    id: int
    name: str
    description: str
    suggested_action: str
    size: int
    share: float
    pinned: bool


class CohortList(BaseModel):
    version: str
    model_version: str
    cohorts: list[CohortSummary]


class Member(BaseModel):
    user_id: str
    confidence: float


class MembersPage(BaseModel):
    cohort_id: int
    version: str
    total: int
    members: list[Member]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


class VersionInfo(BaseModel):
    version: str
    model_version: str
    encoder_version: str
    workspace: str
    dim: int


class ReloadResponse(BaseModel):
    version: str
    model_version: str
    changed: bool


class ErrorResponse(BaseModel):
    detail: Any


def session_columns(events: list[EventIn]) -> dict[str, list[Any]]:
    """Canonical columns of one session (ts as epoch microseconds), cheap to ship to the Encoder."""
    return {
        "ts": [int((e.ts - datetime(1970, 1, 1)).total_seconds() * 1_000_000) for e in events],
        "event": [e.event for e in events],
        "item": [e.item for e in events],
        "category": [e.category for e in events],
        "amount": [e.amount for e in events],
        "text": [e.text for e in events],
    }
