"""The studio's HTTP routes, a mixin of the Ingress, and the `/ui/` static page.

    GET  /ui/                          the page (static files packaged in serving/studio/static)
    GET  /v1/studio                    cohorts + tiers + goal rates + size changes + map + sizing curve
    POST /v1/explain                   per-event contributions (leave-one-out cosine drop to the centroid)
    POST /v1/lookalike                 the known users nearest a seed audience (FAISS), seeds excluded
    POST /v1/cohorts/{id}/rename|pin   human overrides (admin key), published as a new version

The page keeps no state on the server: it asks for an API key when a call answers 401/403 and
sends it with every request (kept in the browser tab's sessionStorage only).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations.

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from embeddings.cohorts.audience import leave_one_out
from embeddings.cohorts.overview import republish_with_overrides
from embeddings.naming import Overrides
from embeddings.naming.profile_types import CohortName
from serving.models import AssignRequest, ErrorResponse
from serving.studio.models import (
    ExplainResponse,
    LookalikeRequest,
    LookalikeResponse,
    OverrideResponse,
    PinRequest,
    RenameRequest,
)

log = logging.getLogger("seqcohort.serving")
STATIC = Path(__file__).parent / "static"
router = APIRouter()
_ERR = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
        422: {"model": ErrorResponse}}


def mount_ui(app: FastAPI) -> None:
    """Serve the page at /ui/ from the packaged static files (no CDN: vega ships in static/vendor)."""
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")


@router.get("/ui", include_in_schema=False)
async def _ui_slash() -> RedirectResponse:
    return RedirectResponse("/ui/")


def _variants(session: dict[str, Any]) -> list[dict[str, Any]]:
    """The session itself, then one copy without each event (same as_of)."""
    out = [session]
    for keep in leave_one_out(len(session["ts"])):
        out.append({k: [v[j] for j in keep] if isinstance(v, list) else v for k, v in session.items()})
    return out


class StudioRoutes:
    """Ingress methods behind the studio page; `self` is the Ingress (keys, limits, handles, _call)."""

    keys: Any
    limits: Any
    args: Any
    encoder: Any
    assigner: Any

    @router.get("/v1/studio", responses=_ERR, summary="What the studio page shows: cohorts, tiers, map, sizing")
    async def studio(self, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        return await self._call(lambda: self.assigner.overview.remote())  # type: ignore[attr-defined]

    @router.post("/v1/explain", response_model=ExplainResponse, responses={**_ERR, 409: {"model": ErrorResponse}},
                 summary="Why is this user in their cohort: one contribution per event, in the order sent")
    async def explain(self, body: AssignRequest, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        history = None
        if body.events is not None:
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            session, source = self._session(body, ["body"], now), "live"  # type: ignore[attr-defined]
        elif body.user_id is not None:
            r = await self._call(  # type: ignore[attr-defined]
                lambda: self.assigner.user_session.remote(body.user_id, self.limits.max_events))
            if r is None:
                raise HTTPException(404, f"unknown user_id {body.user_id!r}: send the user's events to explain them")
            if "error" in r:  # the version's source events are not readable from the server
                raise HTTPException(409, r["error"])
            session, history, source = r["session"], r["history"], "stored"
        else:
            raise HTTPException(422, [{"loc": ["body"], "msg": "give events (a live session) and/or a known user_id",
                                       "type": "value_error"}])
        sessions = _variants(session)
        emb = await self._call(lambda: self.encoder.embed.remote({"sessions": sessions}))  # type: ignore[attr-defined]
        r = await self._call(lambda: self.assigner.explain.remote(emb))  # type: ignore[attr-defined]
        events = [{"index": i, "contribution": c} for i, c in enumerate(r.pop("contributions"))]
        return {"user_id": body.user_id, **r, "events": events, "history": history, "source": source}

    @router.post("/v1/lookalike", response_model=LookalikeResponse, responses=_ERR,
                 summary="The known users most similar to a seed audience (seeds excluded)")
    async def lookalike(self, body: LookalikeRequest, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        r = await self._call(lambda: self.assigner.lookalike.remote(body.seed_user_ids, body.size))  # type: ignore[attr-defined]
        if "error" in r:  # no seed is a known user
            raise HTTPException(422, [{"loc": ["body", "seed_user_ids"], "msg": r["error"], "type": "value_error"}])
        return r

    async def _override(self, cohort_id: int, change: Any) -> dict[str, Any]:
        c = await self._call(lambda: self.assigner.cohort.remote(cohort_id))  # type: ignore[attr-defined]
        if c is None:
            raise HTTPException(404, f"no cohort {cohort_id}; GET /v1/cohorts lists the ids")
        ws = self.args.workspace
        vid = await asyncio.to_thread(lambda: (change(Overrides(ws), c), republish_with_overrides(ws))[1])
        await asyncio.gather(self._call(lambda: self.encoder.reload.remote()),  # type: ignore[attr-defined]
                             self._call(lambda: self.assigner.reload.remote()))  # type: ignore[attr-defined]
        c = await self._call(lambda: self.assigner.cohort.remote(cohort_id))  # type: ignore[attr-defined]
        log.info("cohort %s overridden in version %s", cohort_id, vid)
        return {"cohort_id": cohort_id, "name": c["name"], "pinned": c["pinned"], "version": c["version"]}

    @router.post("/v1/cohorts/{cohort_id}/rename", response_model=OverrideResponse, responses=_ERR,
                 summary="Rename a cohort (admin key); kept across versions like `seqcohort cohorts rename`")
    async def rename_cohort(self, cohort_id: int, body: RenameRequest, request: Request) -> dict[str, Any]:
        self.keys.check_admin(request)
        return await self._override(cohort_id, lambda ov, c: ov.rename(cohort_id, body.name, body.description))

    @router.post("/v1/cohorts/{cohort_id}/pin", response_model=OverrideResponse, responses=_ERR,
                 summary="Pin (or unpin) a cohort's current name (admin key)")
    async def pin_cohort(self, cohort_id: int, body: PinRequest, request: Request) -> dict[str, Any]:
        self.keys.check_admin(request)

        def change(ov: Overrides, c: dict[str, Any]) -> None:
            if body.pinned:  # the whole current name, suggested action included
                ov.pin(cohort_id, CohortName(c["name"], c["description"], c["suggested_action"], "override"))
            else:
                ov.unpin(cohort_id)

        return await self._override(cohort_id, change)
