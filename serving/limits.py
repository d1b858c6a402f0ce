"""Request body size limit as a plain ASGI middleware (413 before the body is parsed)."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]


class BodyLimit:
    """Reject request bodies over `max_bytes` (by Content-Length, or while streaming) with 413."""

    max_bytes: int = 1_000_000  # set by the ingress from its configured limits

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _reject(send, limit)
                    return
        seen = 0
        chunks: list[dict[str, Any]] = []
        while True:  # read the (bounded) body first so an oversized chunked body is a clean 413
            msg = await receive()
            if msg["type"] != "http.request":
                chunks.append(msg)
                break
            seen += len(msg.get("body", b""))
            if seen > limit:
                await _reject(send, limit)
                return
            chunks.append(msg)
            if not msg.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            if chunks:
                return chunks.pop(0)
            return await receive()

        await self.app(scope, replay, send)


async def _reject(send: Any, limit: int) -> None:
    body = json.dumps({"detail": [{"loc": ["body"], "msg": f"request body exceeds the limit "
                                   f"max_body_bytes={limit}", "type": "limit"}]}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
