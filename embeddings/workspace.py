"""Workspace: immutable versions under `versions/<id>/` and an atomically swapped `current` link.

    ws/versions/<id>/encoder/            bundle
    ws/versions/<id>/embeddings.parquet  user_id, embedding, as_of
    ws/versions/<id>/assignments.parquet user_id, cohort_id, confidence
    ws/versions/<id>/cohorts.json        cohorts with names, profiles, centroids
    ws/versions/<id>/index.faiss|ids.json FAISS index of the embedded users
    ws/versions/<id>/version.json        what produced it (parent, steps, config)
    ws/versions/<id>/changes.parquet|drift.json  who changed cohort since the parent (embeddings/living)
    ws/current -> versions/<id>
    ws/overrides.json, ws/naming_cache/  survive across versions

A version is built in `versions/.staging-*` and renamed into place only when complete, and
`current` is replaced with os.replace of a symlink: a crash or Ctrl-C mid-run leaves `current`
pointing at the last complete version.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embeddings.errors import WorkspaceError
from embeddings.fsutil import atomic_write_json

if TYPE_CHECKING:
    from embeddings.cohorts.model import CohortModel
    from embeddings.config import Config
    from embeddings.naming import Overrides

REQUIRED = ("encoder", "embeddings.parquet", "assignments.parquet", "cohorts.json")


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    def has_current(self) -> bool:
        return self.current_link.exists()

    def current(self) -> Path:
        """Resolved directory of the current version."""
        if not self.current_link.exists():
            raise WorkspaceError(
                f"Workspace {self.root} has no published version yet. Run "
                f"`seqcohort run --events <file> --workspace {self.root}` first."
            )
        return self.current_link.resolve()

    def current_id(self) -> str:
        return self.current().name

    def overrides(self) -> Overrides:
        """The human renames and pins (`overrides.json`), which survive every version."""
        from embeddings.naming import Overrides

        return Overrides(self.root)

    def publish(self, model: CohortModel, meta: dict[str, Any] | None = None) -> Path:
        """Save `model` (overrides applied) as a new version and point `current` at it; returns its directory."""
        model.rename(overrides=self.overrides())
        with self.new_version(meta) as out:
            model.save(out)
        return self.current()

    def load(self, version: str | None = None, config: Config | None = None) -> CohortModel:
        """The CohortModel of `version` (default: current)."""
        from embeddings.cohorts.model import CohortModel

        if version is None:
            return CohortModel.load(self.current(), config)
        if version not in self.versions():
            raise WorkspaceError(f"Workspace {self.root} has no version {version!r}; versions: {self.versions()}.")
        return CohortModel.load(self.versions_dir / version, config)

    def versions(self) -> list[str]:
        """Ids of the published versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    @contextmanager
    def new_version(self, meta: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a staging directory; on success it becomes a version and `current` points at it."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        vid = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        staging = self.versions_dir / f".staging-{vid}"
        staging.mkdir()
        try:
            yield staging
            missing = [f for f in REQUIRED if not (staging / f).exists()]
            if missing:
                raise WorkspaceError(f"refusing to publish an incomplete version: missing {missing}")
            parent = self.current_id() if self.has_current() else None
            from embeddings.living.changes import record

            record(staging, self.versions_dir / parent if parent else None)  # unless the command wrote its own
            atomic_write_json(
                staging / "version.json",
                {"id": vid, "parent": parent, "created_at": datetime.now(timezone.utc).isoformat(), **(meta or {})},
            )
            final = self.versions_dir / vid
            os.replace(staging, final)
            self._point_current(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _point_current(self, target: Path) -> None:
        tmp = self.root / f".current.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.relpath(target, self.root), tmp)
        os.replace(tmp, self.current_link)

    def path(self, name: str) -> Path:
        return self.current() / name

    def cleanup_staging(self) -> int:
        """Remove leftovers of interrupted runs; returns how many."""
        n = 0
        if self.versions_dir.is_dir():
            for p in self.versions_dir.glob(".staging-*"):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n
