"""`refresh.keep_versions`: prune the oldest versions, never `current`, each removed as a whole."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from embeddings.workspace import Workspace

log = logging.getLogger("seqcohort")


def _created(vdir: Path) -> str:
    try:
        return str(json.loads((vdir / "version.json").read_text()).get("created_at", ""))
    except (OSError, ValueError):
        return ""


def prune_versions(ws: Workspace, keep: int) -> list[str]:
    """Remove all but the newest `keep` versions (0: keep all); returns the ids removed.

    A version is first renamed to a hidden name (atomic: readers see it whole or not at all), then
    deleted; a crash in between leaves only a hidden directory that `versions()` ignores.
    """
    if keep <= 0:
        return []
    current = ws.current_id() if ws.has_current() else None
    versions = sorted(ws.versions(), key=lambda v: (_created(ws.versions_dir / v), v))  # ids order by second only
    drop = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for v in drop:
        trash = ws.versions_dir / f".trash-{v}"
        os.replace(ws.versions_dir / v, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for left in ws.versions_dir.glob(".trash-*"):  # an earlier prune that was interrupted
        shutil.rmtree(left, ignore_errors=True)
    if drop:
        log.info("pruned %d old version(s) (refresh.keep_versions=%d): %s", len(drop), keep, ", ".join(drop))
    return drop
