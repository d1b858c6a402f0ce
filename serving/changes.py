"""`GET /v1/cohorts/{id}/changes?since=VERSION`: who entered or left a cohort since a version, paged.

A mixin of the Ingress, like the studio's routes. The answer is read from the workspace's files
(embeddings.living.activation.changes_since); the cursor pins the version compared against, so a
new version published between pages does not shift them.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations.

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from embeddings.errors import WorkspaceError
from embeddings.living.activation import changes_since
from serving.cursor import decode_cursor, encode_cursor
from serving.models import ErrorResponse

router = APIRouter()
_ERR = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
        422: {"model": ErrorResponse}}


class Change(BaseModel):
    user_id: str
    change: str = Field(description="entered or left")
    previous_cohort_id: int | None = Field(description="the user's cohort in `since`; null: a new user")
    current_cohort_id: int | None = Field(description="the user's cohort now; null: gone (forgotten)")


class ChangesPage(BaseModel):
    cohort_id: int
    since: str
    version: str = Field(description="the version compared with `since`")
    total: int
    entered: int
    left: int
    changes: list[Change]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at the end")


def changes_page(workspace: str, cohort_id: int, since: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """One page of a cohort's activation delta (what the route returns)."""
    try:
        version, offset = decode_cursor(cursor) if cursor else (None, 0)
    except ValueError:
        raise HTTPException(422, "invalid cursor; pass next_cursor from the previous page") from None
    try:
        version = version or _current(workspace)
        df = changes_since(workspace, since, cohort_id, until=version)
    except WorkspaceError as e:
        raise HTTPException(404, str(e)) from None
    page = df.slice(offset, limit)
    n_in = int((df.get_column("change") == "entered").sum())
    nxt = offset + page.height
    return {"cohort_id": cohort_id, "since": since, "version": version, "total": df.height, "entered": n_in,
            "left": df.height - n_in,
            "changes": page.select("user_id", "change", "previous_cohort_id", "current_cohort_id").to_dicts(),
            "next_cursor": encode_cursor(version, nxt) if nxt < df.height else None}


def _current(workspace: str) -> str:
    from embeddings.workspace import Workspace

    return Workspace(workspace).current_id()


class ChangesRoutes:
    """The Ingress method behind the route; `self` is the Ingress (keys, limits, args)."""

    keys: Any
    limits: Any
    args: Any

    @router.get("/v1/cohorts/{cohort_id}/changes", response_model=ChangesPage, responses=_ERR,
                summary="Members who entered or left the cohort since an earlier version, paged")
    async def cohort_changes(self, cohort_id: int, request: Request, since: str = Query(..., max_length=64),
                             limit: int | None = Query(None, ge=1, description="default: the largest page allowed"),
                             cursor: str | None = Query(None, max_length=512)) -> Any:
        self.keys.check_read(request)
        limit = limit or self.limits.max_page_size
        if limit > self.limits.max_page_size:
            raise HTTPException(422, f"limit={limit} exceeds max_page_size={self.limits.max_page_size}")
        return await asyncio.to_thread(changes_page, self.args.workspace, cohort_id, since, limit, cursor)
