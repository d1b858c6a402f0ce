"""The versioned prompt template: loading, filling named placeholders, building chat messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embeddings.errors import NamingError
from embeddings.naming.profile_types import CohortProfile
from embeddings.naming.render import render_profile, render_summary

PROMPT_VERSION = "v1"
PROMPTS_DIR = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")  # JSON braces like {"cohorts": never match
_SECTION = re.compile(r"^\[(system|user|repair)\]\s*$", re.MULTILINE)


def fill(template: str, **values: object) -> str:
    """Replace `{name}` placeholders; every placeholder in the template must be given a value."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise NamingError(f"Prompt template needs values for {missing}; got {sorted(values)}.")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


@dataclass(frozen=True)
class PromptTemplate:
    """The three parts of a prompt file: system message, user message, repair message."""

    version: str
    system: str
    user: str
    repair: str

    @classmethod
    def load(cls, version: str = PROMPT_VERSION, path: str | Path | None = None) -> PromptTemplate:
        """Read `prompts/cohort_names_<version>.txt` (or `path`) and split it into its sections."""
        path = Path(path) if path else PROMPTS_DIR / f"cohort_names_{version}.txt"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise NamingError(f"Cannot read prompt template {path}: {e}.") from e
        parts = _SECTION.split(text)
        sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
        missing = {"system", "user", "repair"} - sections.keys()
        if missing:
            raise NamingError(
                f"Prompt template {path} lacks sections {sorted(missing)}: start each with a line like [user]."
            )
        return cls(version, sections["system"], sections["user"], sections["repair"])

    def messages(
        self,
        profiles: Sequence[CohortProfile],
        others: Sequence[CohortProfile] = (),
        taken_names: Sequence[str] = (),
    ) -> list[dict[str, str]]:
        """Chat messages naming `profiles` in full, with `others` as one-line summaries for contrast."""
        user = fill(
            self.user,
            n_cohorts=len(profiles),
            cohort_ids=", ".join(str(p.cohort_id) for p in profiles),
            cohorts="\n\n".join(render_profile(p) for p in profiles),
            context="\n".join(f"- {render_summary(p)}" for p in others)
            or "(none: every cohort is listed above)",
            taken_names=", ".join(f'"{n}"' for n in taken_names) or "(none)",
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def repair_message(
        self, errors: Sequence[str], profiles: Sequence[CohortProfile]
    ) -> dict[str, str]:
        """The follow-up user message that sends validation errors back to the model."""
        text = fill(
            self.repair,
            errors="\n".join(f"- {e}" for e in errors),
            cohort_ids=", ".join(str(p.cohort_id) for p in profiles),
        )
        return {"role": "user", "content": text}
