"""Optional API keys: a read key for the API, an admin key for /v1/admin/*.

Keys come from `X-API-Key: KEY` or `Authorization: Bearer KEY`. Missing -> 401, wrong -> 403.
With no read key configured the read endpoints are open; with no admin key configured the admin
endpoints are open only when no read key is configured either (a local development server).
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


class KeyChecker:
    def __init__(self, api_key: str | None, admin_key: str | None) -> None:
        self.api_key, self.admin_key = api_key, admin_key

    def check_read(self, request: Request) -> None:
        if self.api_key is None:
            return
        key = presented_key(request)
        if key is None:
            raise HTTPException(401, "Missing API key: send it as `X-API-Key: <key>` or "
                                     "`Authorization: Bearer <key>`.", headers={"WWW-Authenticate": "Bearer"})
        if not (_eq(key, self.api_key) or (self.admin_key is not None and _eq(key, self.admin_key))):
            raise HTTPException(403, "Invalid API key.")

    def check_admin(self, request: Request) -> None:
        if self.admin_key is None:
            if self.api_key is None:
                return
            raise HTTPException(403, "Admin endpoints are disabled: set SEQCOHORT_ADMIN_KEY (or args.admin_key).")
        key = presented_key(request)
        if key is None:
            raise HTTPException(401, "Missing admin key: send it as `X-API-Key: <admin key>`.",
                                headers={"WWW-Authenticate": "Bearer"})
        if not _eq(key, self.admin_key):
            raise HTTPException(403, "Invalid admin key (the read key does not grant admin access).")
