"""On-disk cache of generated names keyed by (profile fingerprint, model, prompt version)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from embeddings.fsutil import atomic_write_json
from embeddings.naming.profile_types import CohortName

logger = logging.getLogger(__name__)


class NameCache:
    """One JSON file per (fingerprint, model, prompt version) in `cache_dir`, written atomically.

    Only names a model produced and that passed validation are stored; fallbacks are not, so a
    transient outage is retried on the next run instead of being remembered.
    """

    def __init__(self, cache_dir: str | Path, model: str, prompt_version: str) -> None:
        self.cache_dir = Path(cache_dir)
        self.model = model
        self.prompt_version = prompt_version

    def path(self, fingerprint: str) -> Path:
        key = hashlib.sha256(
            f"{fingerprint}\n{self.model}\n{self.prompt_version}".encode()
        ).hexdigest()
        return self.cache_dir / f"{key[:40]}.json"

    def get(self, fingerprint: str, namer: str) -> CohortName | None:
        """The cached name for a fingerprint, or None (missing, unreadable or from another key)."""
        path = self.path(fingerprint)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable naming cache file %s: %s", path, e)
            return None
        key = (d.get("fingerprint"), d.get("model"), d.get("prompt_version"))
        if key != (fingerprint, self.model, self.prompt_version) or not isinstance(
            d.get("name"), str
        ):
            return None
        return CohortName(
            name=d["name"],
            description=str(d.get("description", "")),
            suggested_action=str(d.get("suggested_action", "")),
            namer=namer,
        )

    def put(self, fingerprint: str, name: CohortName) -> None:
        """Store one validated name."""
        atomic_write_json(
            self.path(fingerprint),
            {
                "fingerprint": fingerprint,
                "model": self.model,
                "prompt_version": self.prompt_version,
                "name": name.name,
                "description": name.description,
                "suggested_action": name.suggested_action,
            },
        )
