"""Request and response models of the studio routes (part of the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from serving.models import MAX_ID_LEN, _Strict

UserId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]


class LookalikeRequest(_Strict):
    seed_user_ids: list[UserId] = Field(..., min_length=1, max_length=100_000,
                                        description="known user ids of the seed audience")
    size: int = Field(..., ge=1, le=1_000_000, description="how many lookalikes to return")


class LookalikeResponse(BaseModel):
    user_ids: list[str] = Field(description="most similar known users first; seeds excluded")
    scores: list[float] = Field(description="cosine similarity to the seed audience's centre")
    unknown_seed_ids: list[str] = Field(description="seed ids that are not users of this version (ignored)")
    n_seeds: int = Field(description="known seeds used")
    version: str


class EventContribution(BaseModel):
    index: int = Field(description="position of the event in the request (or in the user's stored history)")
    contribution: float = Field(description="drop in cosine to the cohort centroid when this event is removed")


class ExplainResponse(BaseModel):
    user_id: str | None
    cohort_id: int
    cohort_name: str
    confidence: float
    similarity: float = Field(description="cosine of the user's embedding to the cohort centroid")
    events: list[EventContribution] = Field(description="one per event, in the order sent")
    history: list[dict] | None = Field(None, description="the stored events explained, for a known user_id")
    model_version: str
    version: str
    source: str


class RenameRequest(_Strict):
    name: str = Field(..., min_length=1, max_length=120)
    description: str | None = Field(None, max_length=2000)


class PinRequest(_Strict):
    pinned: bool = True


class OverrideResponse(BaseModel):
    cohort_id: int
    name: str
    pinned: bool
    version: str = Field(description="the new workspace version that carries the override")
