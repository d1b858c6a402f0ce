"""Names a marketer can tell apart: no two cohorts share a name up to a numeric suffix.

Namers de-duplicate with the cohort id as a last resort ("New low-spend buyers (cohort 7)"), which
is unique but says nothing. This pass, run after any namer, finds cohorts whose names agree once
such suffixes are removed and names what does differ between them: each gets its largest profile
difference against the others of its group ("… (more grocery)", "… (more recent)"); a larger group
in which some member is neither the most nor the least of anything is named by the values of the
one feature that sets them all apart ("… (goal rate 42%)"). Cohorts whose profiles differ in
nothing worth naming keep the id suffix and are reported as merge candidates: they should probably
not be two cohorts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from embeddings.naming.base import name_key
from embeddings.naming.profile_types import CohortName, CohortProfile

# "(cohort 7)", "(cohort 7.2)", "(7)", " 2": what makes names differ only by a number
_NUMERIC_SUFFIX = re.compile(r"(\s*\((?:cohort\s*)?\d+(?:\.\d+)?\))+\s*$|\s+\d+\s*$", re.I)
MIN_DIFFERENCE = math.log(1.25)  # a difference smaller than 25% (or 1.25x) is not worth naming
_DAYPARTS = {"night": range(0, 6), "morning": range(6, 12), "afternoon": range(12, 18), "evening": range(18, 24)}
_RELATIVE = (("recency", "less recent", "more recent", "days since last event"),
             ("frequency", "more frequent", "less frequent", "events"), ("monetary", "higher spend", "lower spend", "spend"),
             ("engagement", "more active days", "fewer active days", "active days"),
             ("tenure", "longer-standing", "newer", "tenure"))


def base_name(name: str) -> str:
    """The name without numeric suffixes: "Lapsed buyers (cohort 7)" -> "Lapsed buyers"."""
    return _NUMERIC_SUFFIX.sub("", name).strip()


def _log(x: Any) -> float | None:
    return math.log(x) if isinstance(x, (int, float)) and math.isfinite(x) and x > 0 else None


class Feature(NamedTuple):
    value: float  # log scale: differences are ratios
    higher: str  # phrase when this cohort is higher than the others ("more grocery")
    lower: str
    label: str  # the value itself, for groups no single phrase can part ("grocery 44%")


def features(p: CohortProfile) -> dict[str, Feature]:
    """What a profile can be told apart by, each on a log scale with its phrases and value label."""
    f: dict[str, Feature] = {}
    for k, hi, lo, word in _RELATIVE:
        x = p.relative.get(k)
        if (v := _log(x)) is not None:
            f[k] = Feature(v, hi, lo, f"{word} {x:.1f}×")
    for kind, shares in (("category", p.top_categories), ("event", p.top_events)):
        for sh in shares:
            word = str(sh.value).replace("_", " ")
            if (v := _log(sh.share)) is not None:
                f[f"{kind}:{sh.value}"] = Feature(v, f"more {word}", f"less {word}", f"{word} {sh.share:.0%}")
    if len(p.hour_hist) == 24:
        for part, hours in _DAYPARTS.items():
            x = sum(p.hour_hist[h] for h in hours)
            if (v := _log(x)) is not None:
                f[f"daypart:{part}"] = Feature(v, f"more {part}", f"less {part}", f"{part} {x:.0%}")
    if len(p.weekday_hist) == 7:
        x = p.weekday_hist[5] + p.weekday_hist[6]
        if (v := _log(x)) is not None:
            f["weekend"] = Feature(v, "more weekend", "more weekday", f"weekend {x:.0%}")
    x = (p.extra.get("goal") or {}).get("expected_rate")
    if (v := _log(x)) is not None:
        f["goal"] = Feature(v, "higher intent", "lower intent", f"goal rate {x:.0%}")
    return f


def _phrases(group: list[int], feats: list[dict[str, Feature]]) -> dict[int, tuple[str, float]]:
    """Per member, the phrase of its largest difference that holds against every other member of the
    group, and its size (log scale); each phrase is used once, so no two members share a qualifier."""
    shared = set.intersection(*(set(feats[i]) for i in group))
    out: dict[int, tuple[str, float]] = {}
    for i in group:
        ranked = []
        for k in shared:
            diffs = [feats[i][k].value - feats[j][k].value for j in group if j != i]
            d = min(diffs) if min(diffs) > 0 else max(diffs) if max(diffs) < 0 else 0.0  # higher (lower) than all
            ranked.append((d, k))
        ranked.sort(key=lambda t: (t[0] < MIN_DIFFERENCE, -abs(t[0]), t[1]))  # "more X" reads best
        for d, k in ranked:
            phrase = feats[i][k].higher if d > 0 else feats[i][k].lower
            if phrase not in {q for q, _ in out.values()}:
                out[i] = (phrase, abs(d))
                break
    return out


def _labels(group: list[int], feats: list[dict[str, Feature]]) -> dict[int, str] | None:
    """For groups of three or more that no phrases part: the one feature whose values set every member
    furthest apart (at least MIN_DIFFERENCE between neighbours), as value labels; None if none does."""
    best: tuple[float, str] | None = None
    for k in set.intersection(*(set(feats[i]) for i in group)):
        v = sorted(feats[i][k].value for i in group)
        gap = min(b - a for a, b in zip(v, v[1:], strict=False))
        labels = {feats[i][k].label for i in group}
        if gap >= MIN_DIFFERENCE and len(labels) == len(group) and (best is None or (gap, k) > best):
            best = (gap, k)
    return None if best is None else {i: feats[i][best[1]].label for i in group}


def _largest_difference(a: dict[str, Feature], b: dict[str, Feature]) -> float:
    return max((abs(a[k].value - b[k].value) for k in set(a) & set(b)), default=0.0)


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
        phrases = _phrases(group, feats)
        quals = {i: q for i, (q, d) in phrases.items() if d >= MIN_DIFFERENCE}
        if len(quals) < len(group):  # some member is not the most or least of anything: name values instead
            quals = _labels(group, feats) or quals
        for i, q in sorted(quals.items()):
            new = f"{base_name(names[i].name)} ({q})"
            if i in locked or name_key(new) in taken:
                continue
            taken.discard(name_key(names[i].name))
            taken.add(name_key(new))
            out[i] = replace(names[i], name=new)
    return out, merges
