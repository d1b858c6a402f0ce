"""The Ray Serve application: a FastAPI ingress composed by handles with the Encoder and Assigner.

    serve run serving.app:build_app workspace=/path/to/ws      # or: seqcohort serve --workspace ...

Endpoints are documented at /docs and /openapi.json.
"""

# No `from __future__ import annotations` here: Ray reads build_app's parameter annotation as a
# class to validate the typed application arguments, and FastAPI reads the route annotations.

import asyncio
import csv
import inspect
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from embeddings.errors import SeqcohortError, WorkspaceError
from serving.auth import KeyChecker
from serving.changes import ChangesRoutes
from serving.changes import router as changes_router
from serving.config import AppArgs
from serving.cursor import decode_cursor, encode_cursor
from serving.deployments import AssignerDeployment, AssignerModel, Encoder, EncoderModel
from serving.limits import BodyLimit
from serving.models import (
    AssignRequest,
    AssignResponse,
    BatchAssignResponse,
    BatchEmbedResponse,
    BatchRequest,
    CohortList,
    EmbedResponse,
    ErrorResponse,
    MembersPage,
    ReloadResponse,
    VersionInfo,
    session_columns,
)
from serving.studio.routes import StudioRoutes, mount_ui

log = logging.getLogger("seqcohort.serving")
CLOCK_SKEW = timedelta(seconds=60)  # events this far past "now" are tolerated when as_of is omitted
_ERR = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
        422: {"model": ErrorResponse}}

app = FastAPI(
    title="seqcohort",
    version="1",
    description="Which cohort is this user or live session in? Cohorts, members and embeddings of the "
    "workspace's current version. Send the API key as `X-API-Key` when one is configured.",
)
app.add_middleware(BodyLimit)
mount_ui(app)  # the cohort studio: /ui/ and its routes (serving/studio/)
app.include_router(changes_router)  # /v1/cohorts/{id}/changes (serving/changes.py)


def _problem(loc: list[Any], msg: str, status: int = 422) -> HTTPException:
    return HTTPException(status, [{"loc": loc, "msg": msg, "type": "value_error" if status == 422 else "limit"}])


@app.exception_handler(RequestValidationError)
async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI echoes the offending input by default; with a 1 MB string that is a 1 MB error.
    errs = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:300], "type": e.get("type", "")}
            for e in exc.errors()[:20]]
    return JSONResponse({"detail": errs}, status_code=422)


@app.exception_handler(SeqcohortError)
async def _project_error(request: Request, exc: SeqcohortError) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body"], "msg": str(exc)[:500], "type": "value_error"}]}, 422)


async def _or_error(aw: Awaitable[Any]) -> Any:
    try:
        return await aw
    except SeqcohortError as e:
        return e


def _ceil_second(t: datetime) -> datetime:
    return t if t.microsecond == 0 else t.replace(microsecond=0) + timedelta(seconds=1)


_encode_cursor = encode_cursor


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        return decode_cursor(cursor)
    except ValueError:
        raise _problem(["query", "cursor"], "invalid cursor; pass next_cursor from the previous page") from None


class InProcess:
    """A model object inside the ingress replica, called as its deployment would be: `x.method.remote(...)`."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._obj, name)

        async def remote(*args: Any, **kwargs: Any) -> Any:
            r = fn(*args, **kwargs)
            return await r if inspect.isawaitable(r) else r

        return SimpleNamespace(remote=remote)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress(StudioRoutes, ChangesRoutes):
    def __init__(self, args: dict[str, Any], encoder: DeploymentHandle | None = None,
                 assigner: DeploymentHandle | None = None) -> None:
        self.args = AppArgs(**args)
        self.keys = KeyChecker(*self.args.resolved_keys())
        self.limits = self.args.limits
        BodyLimit.max_bytes = self.limits.max_body_bytes
        # without handles (models_in_ingress), the models run here: no actor hop per request
        self.encoder = encoder if encoder is not None else InProcess(
            EncoderModel(self.args.workspace, self.args.encoder.model_dump()))
        self.assigner = assigner if assigner is not None else InProcess(
            AssignerModel(self.args.workspace, self.args.assigner.model_dump()))

    async def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Await a handle call, retrying on a dead or unavailable replica (Serve replaces it)."""
        for attempt in range(self.args.retries + 1):
            try:
                return await fn()
            except RayActorError as e:
                if attempt == self.args.retries:
                    raise HTTPException(503, f"model replica unavailable, retry shortly ({type(e).__name__})") from e
                log.warning("replica failed (%s); retrying (%d)", type(e).__name__, attempt + 1)
                await asyncio.sleep(0.1 * 2**attempt)  # 0.1 .. 1.6 s: time for Serve to replace it

    # ------------------------------------------------------------------ helpers
    # several batches in flight: while one waits on the Encoder, the next is already forming
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.001, max_concurrent_batches=4)
    async def _live(self, groups: list[list[dict[str, Any]]]) -> list[Any]:
        """Embed + assign the sessions of concurrent requests with one Encoder and one Assigner call.

        Batching here, not only in the Encoder, saves two actor calls per HTTP request — on a small
        machine those calls, not the model, are most of the latency.
        """
        try:
            r = await self._embed_assign([s for g in groups for s in g])
        except SeqcohortError:  # keep one bad request from failing its neighbours
            return [await _or_error(self._embed_assign(g)) for g in groups]
        out, start = [], 0
        for g in groups:
            out.append({**r, "results": r["results"][start : start + len(g)]})
            start += len(g)
        return out

    async def _embed_assign(self, sessions: list[dict[str, Any]]) -> dict[str, Any]:
        req = {"sessions": sessions}
        # two plain calls, not a chained DeploymentResponse: chaining goes through the object store,
        # which costs more than the extra hop here, and each call is retried on its own
        emb = await self._call(lambda: self.encoder.embed.remote(req))
        return await self._call(lambda: self.assigner.assign.remote(emb))

    def _session(self, u: AssignRequest, loc: list[Any], now: datetime) -> dict[str, Any]:
        assert u.events is not None
        if not u.events:
            raise _problem([*loc, "events"], "events must contain at least one event; omit it to look up a known user_id")
        if len(u.events) > self.limits.max_events:
            raise _problem([*loc, "events"], f"{len(u.events)} events exceed the limit "
                           f"max_events={self.limits.max_events} per user", 413)
        latest = max(e.ts for e in u.events)
        if u.as_of is not None:
            as_of = u.as_of
            if latest > as_of:
                raise _problem([*loc, "as_of"], f"as_of={as_of.isoformat()} is before the latest event "
                               f"({latest.isoformat()}); as_of must be >= every event's ts")
        else:
            if latest > now + CLOCK_SKEW:
                raise _problem([*loc, "events"], f"event at {latest.isoformat()} is in the future (now is "
                               f"{now.isoformat()} UTC); pass as_of or fix the timestamps")
            # rounded up to the second so concurrent sessions share as_of and are featurised together
            as_of = _ceil_second(max(now, latest))
        s = session_columns(u.events)
        s["as_of"] = int((as_of - datetime(1970, 1, 1)) / timedelta(microseconds=1))
        return s

    async def _assign_many(self, users: list[AssignRequest], loc0: str) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        live = [i for i, u in enumerate(users) if u.events is not None]
        known = [i for i, u in enumerate(users) if u.events is None]
        for i in known:
            if users[i].user_id is None:
                raise _problem([*([loc0, i] if loc0 else []), "body"], "give events (a live session) and/or a known user_id")
        sessions = [self._session(users[i], ["body", *([loc0, i] if loc0 else [])], now) for i in live]
        out: list[dict[str, Any] | None] = [None] * len(users)
        jobs = []
        if live:
            jobs.append(self._live(sessions))
        if known:
            ids = [users[i].user_id for i in known]
            jobs.append(self._call(lambda: self.assigner.lookup.remote(ids)))
        res = await asyncio.gather(*jobs)
        for x in res:
            if isinstance(x, Exception):
                raise x
        if live:
            r = res.pop(0)
            for i, a in zip(live, r["results"], strict=True):
                out[i] = {"user_id": users[i].user_id, **a, "model_version": r["model_version"],
                          "version": r["version"], "source": "live"}
        if known:
            r = res.pop(0)
            missing = [i for i, a in zip(known, r["results"], strict=True) if a is None]
            if missing:
                where = ", ".join(f"{loc0}[{i}]" if loc0 else "user_id" for i in missing[:10])
                raise HTTPException(404, f"unknown user_id {users[missing[0]].user_id!r} ({where}) in version "
                                         f"{r['version']} and no events given: send the session's events to assign it")
            for i, a in zip(known, r["results"], strict=True):
                out[i] = {"user_id": users[i].user_id, **a, "model_version": r["model_version"],
                          "version": r["version"], "source": "stored"}
        return out  # type: ignore[return-value]

    async def _embed_many(self, users: list[AssignRequest], loc0: str) -> list[dict[str, Any]]:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        out: list[dict[str, Any] | None] = [None] * len(users)
        live = [i for i, u in enumerate(users) if u.events is not None]
        known = [i for i, u in enumerate(users) if u.events is None]
        if live:
            req = {"sessions": [self._session(users[i], ["body", *([loc0, i] if loc0 else [])], now) for i in live]}
            r = await self._call(lambda: self.encoder.embed.remote(req))
            for j, i in enumerate(live):
                out[i] = {"user_id": users[i].user_id, "embedding": r["X"][j].tolist(), "dim": int(r["X"].shape[1]),
                          "model_version": r["model_version"], "version": r["version"], "source": "live"}
        if known:
            if any(users[i].user_id is None for i in known):
                raise _problem(["body"], "give events (a live session) and/or a known user_id")
            ids = [users[i].user_id for i in known]
            r = await self._call(lambda: self.assigner.stored_embeddings.remote(ids))
            for i, e in zip(known, r["embeddings"], strict=True):
                if e is None:
                    raise HTTPException(404, f"unknown user_id {users[i].user_id!r} and no events given")
                out[i] = {"user_id": users[i].user_id, "embedding": e, "dim": r["dim"],
                          "model_version": r["model_version"], "version": r["version"], "source": "stored"}
        return out  # type: ignore[return-value]

    def _check_batch(self, n: int) -> None:
        if n > self.limits.max_batch_users:
            raise _problem(["body", "users"], f"{n} users exceed the limit max_batch_users="
                           f"{self.limits.max_batch_users} per batch call", 413)

    # ------------------------------------------------------------------ assign / embed
    @app.post("/v1/assign", response_model=AssignResponse, responses={**_ERR, 404: {"model": ErrorResponse}},
              summary="Cohort of a live session (events) or of a known user (user_id)")
    async def assign(self, body: AssignRequest, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        return (await self._assign_many([body], ""))[0]

    @app.post("/v1/assign/batch", response_model=BatchAssignResponse, responses={**_ERR, 404: {"model": ErrorResponse}},
              summary="Several users in one call (same answers as one by one)")
    async def assign_batch(self, body: BatchRequest, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        self._check_batch(len(body.users))
        return {"results": await self._assign_many(body.users, "users")}

    @app.post("/v1/embed", response_model=EmbedResponse, responses={**_ERR, 404: {"model": ErrorResponse}},
              summary="Embedding of a live session or a known user")
    async def embed(self, body: AssignRequest, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        return (await self._embed_many([body], ""))[0]

    @app.post("/v1/embed/batch", response_model=BatchEmbedResponse, responses={**_ERR, 404: {"model": ErrorResponse}})
    async def embed_batch(self, body: BatchRequest, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        self._check_batch(len(body.users))
        return {"results": await self._embed_many(body.users, "users")}

    # ------------------------------------------------------------------ cohorts
    @app.get("/v1/cohorts", response_model=CohortList, responses=_ERR, summary="All cohorts of the current version")
    async def cohorts(self, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        return await self._call(lambda: self.assigner.cohorts.remote())

    @app.get("/v1/cohorts/{cohort_id}", responses={**_ERR, 404: {"model": ErrorResponse}},
             summary="One cohort: name, description, profile and exemplars")
    async def cohort(self, cohort_id: int, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        c = await self._call(lambda: self.assigner.cohort.remote(cohort_id))
        if c is None:
            raise HTTPException(404, f"no cohort {cohort_id}; GET /v1/cohorts lists the ids")
        return c

    @app.get("/v1/cohorts/{cohort_id}/members", response_model=MembersPage,
             responses={**_ERR, 404: {"model": ErrorResponse}, 200: {"content": {"text/csv": {}}}},
             summary="Members, paged with a cursor; ?format=csv downloads them all as CSV")
    async def members(self, cohort_id: int, request: Request, limit: int = Query(1000, ge=1),
                      cursor: str | None = Query(None, max_length=512),
                      format: Literal["json", "csv"] = "json") -> Any:
        self.keys.check_read(request)
        if format == "csv":  # the whole cohort, fetched in max_page_size chunks
            limit = self.limits.max_page_size
        elif limit > self.limits.max_page_size:
            raise _problem(["query", "limit"], f"limit={limit} exceeds max_page_size={self.limits.max_page_size}")
        version, offset = _decode_cursor(cursor) if cursor else (None, 0)
        try:
            page = await self._call(lambda: self.assigner.members.remote(cohort_id, offset, limit, version))
        except WorkspaceError:
            raise _problem(["query", "cursor"], f"version {version} of this cursor is gone; start without a cursor") from None
        if page is None:
            raise HTTPException(404, f"no cohort {cohort_id}; GET /v1/cohorts lists the ids")
        if format == "csv":
            return self._csv(cohort_id, page, offset)
        nxt = offset + len(page["user_id"])
        return {"cohort_id": cohort_id, "version": page["version"], "total": page["total"],
                "members": [{"user_id": u, "confidence": c} for u, c in zip(page["user_id"], page["confidence"], strict=True)],
                "next_cursor": _encode_cursor(page["version"], nxt) if nxt < page["total"] else None}

    def _csv(self, cohort_id: int, first: dict[str, Any], offset: int) -> StreamingResponse:
        version, chunk = first["version"], self.limits.max_page_size

        async def rows() -> AsyncIterator[str]:
            page, off = first, offset
            yield "user_id,cohort_id,cohort_name,confidence\n"
            while True:
                buf = io.StringIO()
                w = csv.writer(buf, lineterminator="\n")
                for u, c in zip(page["user_id"], page["confidence"], strict=True):
                    w.writerow([u, cohort_id, page["cohort_name"], c])
                yield buf.getvalue()
                off += len(page["user_id"])
                if off >= page["total"] or not page["user_id"]:
                    return
                page = await self._call(lambda o=off: self.assigner.members.remote(cohort_id, o, chunk, version))

        slug = re.sub(r"[^A-Za-z0-9]+", "-", first["cohort_name"]).strip("-").lower()[:60] or "cohort"
        return StreamingResponse(rows(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="cohort-{cohort_id}-{slug}.csv"',
            "X-Seqcohort-Version": version})

    # ------------------------------------------------------------------ ops
    @app.get("/healthz", summary="Alive (the process answers)")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready: bundle and index loaded")
    async def readyz(self) -> JSONResponse:
        try:
            e, a = await asyncio.wait_for(asyncio.gather(self.encoder.info.remote(), self.assigner.info.remote()), 5)
        except Exception as exc:  # not ready yet (or a replica is restarting)
            return JSONResponse({"ready": False, "reason": f"{type(exc).__name__}: {exc}"[:300]}, 503)
        return JSONResponse({"ready": True, "encoder": e, "assigner": a})

    @app.get("/v1/version", response_model=VersionInfo, responses=_ERR)
    async def version(self, request: Request) -> dict[str, Any]:
        self.keys.check_read(request)
        e, a = await asyncio.gather(self._call(lambda: self.encoder.info.remote()),
                                    self._call(lambda: self.assigner.info.remote()))
        return {"version": a["version"], "model_version": a["model_version"], "encoder_version": e["version"],
                "workspace": self.args.workspace, "dim": e["dim"]}

    @app.post("/v1/admin/reload", response_model=ReloadResponse, responses=_ERR,
              summary="Load the workspace's current version now (admin key)")
    async def reload(self, request: Request) -> dict[str, Any]:
        self.keys.check_admin(request)
        before = (await self._call(lambda: self.assigner.info.remote()))["version"]
        t0 = time.perf_counter()
        await asyncio.gather(self._call(lambda: self.encoder.reload.remote()),
                             self._call(lambda: self.assigner.reload.remote()))
        a = await self._call(lambda: self.assigner.info.remote())
        log.info("reload to %s in %.2fs", a["version"], time.perf_counter() - t0)
        return {"version": a["version"], "model_version": a["model_version"], "changed": a["version"] != before}


def build_app(args: AppArgs) -> serve.Application:
    """Typed application builder (`import_path: serving.app:build_app`, args: serving.config.AppArgs)."""
    if isinstance(args, dict):
        args = AppArgs(**args)
    if args.models_in_ingress:
        return Ingress.options(**args.ingress_options).bind(args.model_dump(mode="json"))
    enc_tun, asg_tun = args.encoder.model_dump(), args.assigner.model_dump()
    enc = Encoder.options(**args.encoder_options, user_config=enc_tun).bind(args.workspace, enc_tun)
    asg = AssignerDeployment.options(**args.assigner_options, user_config=asg_tun).bind(args.workspace, asg_tun)
    return Ingress.options(**args.ingress_options).bind(args.model_dump(mode="json"), enc, asg)
