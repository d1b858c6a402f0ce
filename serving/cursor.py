"""Page cursors shared by the paged routes: the version a listing was read from and the offset in it."""

from __future__ import annotations

import base64
import json


def encode_cursor(version: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": version, "o": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(version, offset); ValueError for anything that is not a cursor this service wrote."""
    try:
        d = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        v, o = d["v"], d["o"]
    except Exception:
        raise ValueError("invalid cursor") from None
    if not isinstance(v, str) or not isinstance(o, int) or isinstance(o, bool) or o < 0:
        raise ValueError("invalid cursor")
    return v, o
