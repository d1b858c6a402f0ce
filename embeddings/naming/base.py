"""The namer interface and helpers every namer shares: word counting, atomic JSON, unique names."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from embeddings.naming.profile_types import CohortName, CohortProfile

MIN_NAME_WORDS = 2
MAX_NAME_WORDS = 6

_SPACE = re.compile(r"\s+")


@runtime_checkable
class Namer(Protocol):
    """Turns cohort profiles into one `CohortName` per profile, in the same order."""

    def name(self, profiles: Sequence[CohortProfile]) -> list[CohortName]: ...


def word_count(name: str) -> int:
    """Words in a name; hyphenated words ("high-spend") count once."""
    return len(name.split())


def name_key(name: str) -> str:
    """Comparison key for uniqueness: case, spacing and trailing punctuation do not make names differ."""
    return _SPACE.sub(" ", name).strip().strip(".!").casefold()


def sentences(text: str) -> list[str]:
    """Split text into sentences on ., ! or ? followed by a space (so "2.3×" and "$4.99" stay whole)."""
    parts = re.split(r"(?<=[.!?])\s+(?=\S)", text.strip())
    return [p for p in parts if p]


def make_unique(
    profiles: Sequence[CohortProfile],
    names: Sequence[CohortName],
    qualifiers: Callable[[int], list[str]],
    locked: frozenset[int] = frozenset(),
) -> list[CohortName]:
    """Return `names` with collisions resolved deterministically.

    Names are claimed in cohort-id order (ids are stable across refreshes, so the same cohort keeps
    the plain name); positions in `locked` (human overrides) always keep theirs and are claimed
    first. A later duplicate gets the first qualifier from `qualifiers(i)` (words taken from its own
    profile) that makes it unique, e.g. "Garden shoppers (lapsed)"; the cohort id is the last resort.
    """
    out = list(names)
    taken: set[str] = {name_key(out[i].name) for i in locked}
    order = sorted(
        (i for i in range(len(out)) if i not in locked), key=lambda i: profiles[i].cohort_id
    )
    for i in order:
        current = out[i]
        if name_key(current.name) not in taken:
            taken.add(name_key(current.name))
            continue
        base = current.name.strip()
        lowered = base.casefold()
        candidates = [f"{base} ({q})" for q in qualifiers(i) if q.casefold() not in lowered]
        candidates.append(f"{base} (cohort {profiles[i].cohort_id})")
        new = next((c for c in candidates if name_key(c) not in taken), None)
        n = 2
        while new is None:  # only when a human already used "... (cohort <id>)" elsewhere
            new = f"{base} (cohort {profiles[i].cohort_id}.{n})"
            new = None if name_key(new) in taken else new
            n += 1
        taken.add(name_key(new))
        out[i] = CohortName(
            name=new,
            description=current.description,
            suggested_action=current.suggested_action,
            namer=current.namer,
            fallback_reason=current.fallback_reason,
        )
    return out
