"""Human overrides of cohort names: renames and pins, stored in `<workspace>/overrides.json`.

A rename replaces a cohort's name (and optionally description) whatever any namer says. A pin
freezes the cohort's current name: the first name seen while pinned is stored and returned from
then on, so refreshes and re-naming never change it. Both survive re-naming and refreshes because
they live in the workspace root, keyed by the stable cohort id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from embeddings.errors import NamingError
from embeddings.fsutil import atomic_write_json
from embeddings.naming.base import name_key
from embeddings.naming.profile_types import CohortName, CohortProfile

logger = logging.getLogger(__name__)

FILENAME = "overrides.json"
FORMAT_VERSION = 1


class Overrides:
    """Renames and pins for a workspace; every change is written atomically at once."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / FILENAME

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise NamingError(
                f"{self.path} is not valid JSON ({e}); fix or delete it to drop all overrides."
            ) from e
        cohorts = d.get("cohorts", {}) if isinstance(d, dict) else None
        if not isinstance(cohorts, dict):
            raise NamingError(
                f'{self.path} must hold {{"cohorts": {{"<id>": {{...}}}}}}; fix or delete it.'
            )
        return cohorts

    def _save(self, cohorts: dict[str, dict[str, Any]]) -> None:
        cohorts = {k: v for k, v in sorted(cohorts.items(), key=lambda kv: int(kv[0])) if v}
        atomic_write_json(self.path, {"version": FORMAT_VERSION, "cohorts": cohorts})

    def _update(self, cohort_id: int, **changes: Any) -> None:
        cohorts = self._load()  # re-read: another process (the browser, the CLI) may have written
        entry = dict(cohorts.get(str(int(cohort_id)), {}))
        for k, v in changes.items():
            if v is None:
                entry.pop(k, None)
            else:
                entry[k] = v
        cohorts[str(int(cohort_id))] = entry
        self._save(cohorts)

    def rename(self, cohort_id: int, name: str, description: str | None = None) -> None:
        """Give a cohort a human name (and description); it wins over every namer and pin."""
        name = " ".join(str(name).split())
        if not name:
            raise NamingError(f"A new name for cohort {cohort_id} must not be empty.")
        self._update(
            cohort_id, name=name, description=" ".join(description.split()) if description else None
        )
        logger.info("cohort %s renamed to %r", cohort_id, name)

    def clear_rename(self, cohort_id: int) -> None:
        """Drop a human name; the namer's (or the pinned) name applies again."""
        self._update(cohort_id, name=None, description=None)

    def pin(
        self,
        cohort_id: int,
        current: CohortName | str | None = None,
        description: str | None = None,
    ) -> None:
        """Freeze a cohort's name: `current` (a CohortName, or a name plus `description`) if given,
        else the first name `apply` sees for it."""
        if isinstance(current, str):
            current = CohortName(" ".join(current.split()), description or "", namer="override")
        self._update(cohort_id, pinned=True, pinned_name=asdict(current) if current else None)

    def unpin(self, cohort_id: int) -> None:
        """Let the namer rename the cohort again."""
        self._update(cohort_id, pinned=None, pinned_name=None)

    def is_pinned(self, cohort_id: int) -> bool:
        return bool(self._load().get(str(int(cohort_id)), {}).get("pinned"))

    def pinned_ids(self) -> list[int]:
        """Ids of all pinned cohorts, sorted."""
        return sorted(int(k) for k, v in self._load().items() if v.get("pinned"))

    def get(self, cohort_id: int) -> dict[str, Any]:
        """The stored override entry for a cohort ({} when none)."""
        return dict(self._load().get(str(int(cohort_id)), {}))

    def apply(
        self,
        cohort_ids: Sequence[int],
        names: Sequence[CohortName],
        profiles: Sequence[CohortProfile] | None = None,
    ) -> list[CohortName]:
        """Names after overrides: renames win, then pins; run after any namer.

        A pinned cohort without a stored name gets the one given here, stored for next time. When
        `profiles` are given, a namer's name that now collides with a human one is made unique.
        """
        if len(cohort_ids) != len(names):
            raise NamingError(f"apply got {len(cohort_ids)} cohort ids but {len(names)} names.")
        cohorts = self._load()
        out: list[CohortName] = []
        locked: set[int] = set()
        to_store: dict[str, dict[str, Any]] = {}
        for i, (cid, current) in enumerate(zip(cohort_ids, names, strict=True)):
            entry = cohorts.get(str(int(cid)), {})
            if entry.get("pinned"):
                frozen = entry.get("pinned_name")
                if isinstance(frozen, dict) and isinstance(frozen.get("name"), str):
                    current = CohortName(
                        **{k: v for k, v in frozen.items() if k in CohortName.__dataclass_fields__}
                    )
                else:
                    to_store[str(int(cid))] = {**entry, "pinned_name": asdict(current)}
                locked.add(i)
            if entry.get("name"):
                current = replace(
                    current,
                    name=entry["name"],
                    description=entry.get("description") or current.description,
                    namer="override",
                    fallback_reason=None,
                )
                locked.add(i)
            out.append(current)
        if to_store:
            self._save({**cohorts, **to_store})
        return self._unique(out, frozenset(locked), profiles)

    @staticmethod
    def _unique(
        names: list[CohortName], locked: frozenset[int], profiles: Sequence[CohortProfile] | None
    ) -> list[CohortName]:
        keys = [name_key(n.name) for n in names]
        if len(set(keys)) == len(keys):
            return names
        if profiles is None:
            logger.warning(
                "cohort names are not unique after overrides; pass profiles to apply() to fix"
            )
            return names
        from embeddings.naming.stats import StatsNamer

        return StatsNamer().make_unique(profiles, names, locked)
