"""Names a marketer can tell apart: no two cohorts share a name up to a numeric suffix.

Namers de-duplicate with the cohort id as a last resort ("New low-spend buyers (cohort 7)"), which
is unique but says nothing. This pass, run after any namer, finds cohorts whose names agree once
such suffixes are removed and names what does differ between them: each gets its largest profile
difference against the others of its group ("… (more grocery)", "… (more recent)"). Cohorts whose
profiles differ in nothing worth naming keep the id suffix and are reported as merge candidates:
they should probably not be two cohorts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from embeddings.naming.base import name_key
from embeddings.naming.profile_types import CohortName, CohortProfile

# "(cohort 7)", "(cohort 7.2)", "(7)", " 2": what makes names differ only by a number
_NUMERIC_SUFFIX = re.compile(r"(\s*\((?:cohort\s*)?\d+(?:\.\d+)?\))+\s*$|\s+\d+\s*$", re.I)
MIN_DIFFERENCE = math.log(1.25)  # a difference smaller than 25% (or 1.25x) is not worth naming
_DAYPARTS = {"night": range(0, 6), "morning": range(6, 12), "afternoon": range(12, 18), "evening": range(18, 24)}
_RELATIVE = (("recency", "less recent", "more recent"), ("frequency", "more frequent", "less frequent"),
             ("monetary", "higher spend", "lower spend"), ("engagement", "more active days", "fewer active days"),
             ("tenure", "longer-standing", "newer"))


def base_name(name: str) -> str:
    """The name without numeric suffixes: "Lapsed buyers (cohort 7)" -> "Lapsed buyers"."""
    return _NUMERIC_SUFFIX.sub("", name).strip()


def _log(x: Any) -> float | None:
    return math.log(x) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else None


def features(p: CohortProfile) -> dict[str, tuple[float, str, str]]:
    """What a profile can be told apart by: name -> (value on a log scale, phrase if higher, phrase if lower)."""
    f: dict[str, tuple[float, str, str]] = {}
    for k, hi, lo in _RELATIVE:
        v = _log(p.relative.get(k))
        if v is not None:
            f[k] = (v, hi, lo)
    for s in p.top_categories:
        v = _log(s.share)
        if v is not None:
            f[f"category:{s.value}"] = (v, f"more {s.value}", f"less {s.value}")
    for s in p.top_events:
        v = _log(s.share)
        if v is not None:
            f[f"event:{s.value}"] = (v, f"more {s.value}", f"less {s.value}")
    if len(p.hour_hist) == 24:
        for part, hours in _DAYPARTS.items():
            v = _log(sum(p.hour_hist[h] for h in hours))
            if v is not None:
                f[f"daypart:{part}"] = (v, f"more {part}", f"less {part}")
    if len(p.weekday_hist) == 7:
        v = _log(p.weekday_hist[5] + p.weekday_hist[6])
        if v is not None:
            f["weekend"] = (v, "more weekend", "more weekday")
    goal = p.extra.get("goal") or {}
    v = _log(goal.get("expected_rate"))
    if v is not None:
        f["goal"] = (v, "higher intent", "lower intent")
    return f


def _qualify(group: list[int], feats: list[dict[str, tuple[float, str, str]]]) -> dict[int, tuple[str, float]]:
    """Per member, the phrase of its largest difference that holds against every other member of the
    group, and its size (log scale); each phrase is used once, so no two members share a qualifier."""
    shared = set.intersection(*(set(feats[i]) for i in group))
    out: dict[int, tuple[str, float]] = {}
    for i in group:
        ranked = []
        for k in shared:
            diffs = [feats[i][k][0] - feats[j][k][0] for j in group if j != i]
            d = min(diffs) if min(diffs) > 0 else max(diffs) if max(diffs) < 0 else 0.0  # higher (lower) than all
            ranked.append((d, k))
        ranked.sort(key=lambda t: (t[0] < MIN_DIFFERENCE, -abs(t[0]), t[1]))  # "more X" reads best
        for d, k in ranked:
            phrase = feats[i][k][1] if d > 0 else feats[i][k][2]
            if phrase not in {q for q, _ in out.values()}:
                out[i] = (phrase, abs(d))
                break
    return out


def _largest_difference(a: dict[str, tuple[float, str, str]], b: dict[str, tuple[float, str, str]]) -> float:
    return max((abs(a[k][0] - b[k][0]) for k in set(a) & set(b)), default=0.0)


def distinct_names(profiles: Sequence[CohortProfile], names: Sequence[CohortName],
                   locked: frozenset[int] = frozenset()) -> tuple[list[CohortName], list[dict[str, Any]]]:
    """`names` with every group that agrees up to a numeric suffix told apart by profile differences.

    Args:
        locked: positions whose names a person chose; they are never changed (but still compared).
    Returns:
        (names, merge candidates: [{"cohort_ids", "names", "largest_difference"}], the pairs of a group
        that differ by less than MIN_DIFFERENCE in everything the profile shows; they keep their id suffix).
    """
    out = list(names)
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(name_key(base_name(n.name)), []).append(i)
    feats = [features(p) for p in profiles]
    merges: list[dict[str, Any]] = []
    taken = {name_key(n.name) for n in names}
    for group in groups.values():
        if len(group) < 2:
            continue
        for x, i in enumerate(group):
            for j in group[x + 1:]:
                d = _largest_difference(feats[i], feats[j])
                if d < MIN_DIFFERENCE:
                    merges.append({"cohort_ids": [profiles[i].cohort_id, profiles[j].cohort_id],
                                   "names": [names[i].name, names[j].name], "largest_difference": round(d, 3)})
        for i, (phrase, d) in sorted(_qualify(group, feats).items()):
            new = f"{base_name(names[i].name)} ({phrase})"
            if i in locked or d < MIN_DIFFERENCE or name_key(new) in taken:
                continue
            taken.discard(name_key(names[i].name))
            taken.add(name_key(new))
            out[i] = replace(names[i], name=new)
    return out, merges
