"""Parse a model's answer (JSON, fenced JSON, JSON after prose) and check it against the name schema."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from embeddings.naming.base import MAX_NAME_WORDS, MIN_NAME_WORDS, name_key, sentences, word_count

MAX_NAME_CHARS = 60
MAX_DESCRIPTION_CHARS = 400
MAX_ACTION_CHARS = 200
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON object or array in `text`: whole text, a ``` fence, or after leading prose.

    Raises:
        ValueError: no JSON value could be decoded (the message says why, for the repair prompt).
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("the answer was empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        first_error = e
    for block in _FENCE.findall(text):
        try:
            return json.loads(block.strip())
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:200]
    for i in starts:
        try:
            value, _ = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)):
            return value
    raise ValueError(
        f"the answer is not valid JSON ({first_error.msg} at line {first_error.lineno} column {first_error.colno})"
    )


@dataclass
class Checked:
    """A validated answer: usable entries by cohort id, and problems by cohort id (None: whole answer)."""

    valid: dict[int, dict[str, str]] = field(default_factory=dict)
    problems: dict[int | None, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def messages(self) -> list[str]:
        """All problems as lines for the repair prompt."""
        return [
            m
            for k in sorted(self.problems, key=lambda k: -1 if k is None else k)
            for m in self.problems[k]
        ]

    def reason(self, cohort_id: int) -> str:
        """Why one cohort has no usable name (its own problems, else the answer's)."""
        msgs = self.problems.get(cohort_id) or self.problems.get(None) or ["no usable entry"]
        return "; ".join(msgs)

    def _add(self, key: int | None, msg: str) -> None:
        self.problems.setdefault(key, []).append(msg)


def _entries(value: Any) -> list[Any] | None:
    if isinstance(value, dict) and isinstance(value.get("cohorts"), list):
        return value["cohorts"]
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and "name" in value:
        return [value]
    return None


def _as_id(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"\s*(cohort\s*)?-?\d+\s*", v, re.IGNORECASE):
        return int(re.sub(r"\D", "", v) or 0) * (-1 if "-" in v else 1)
    return None


def _check_fields(item: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    errs: list[str] = []
    out: dict[str, str] = {}
    for key in ("name", "description", "suggested_action"):
        v = item.get(key)
        if not isinstance(v, str) or not v.strip():
            errs.append(f'"{key}" is missing or empty')
        else:
            out[key] = " ".join(v.split()) if key != "suggested_action" else v.strip()
    if errs:
        return out, errs
    name = out["name"] = out["name"].strip("\"'“”").rstrip(".")
    n = word_count(name)
    if not MIN_NAME_WORDS <= n <= MAX_NAME_WORDS:
        errs.append(f'name "{name}" has {n} words; use {MIN_NAME_WORDS} to {MAX_NAME_WORDS}')
    if len(name) > MAX_NAME_CHARS:
        errs.append(f'name "{name}" is {len(name)} characters; use at most {MAX_NAME_CHARS}')
    n_sent = len(sentences(out["description"]))
    if not 1 <= n_sent <= 2 or len(out["description"]) > MAX_DESCRIPTION_CHARS:
        errs.append(
            f"description must be 1 or 2 sentences of at most {MAX_DESCRIPTION_CHARS} characters (it has {n_sent} sentences)"
        )
    action = out["suggested_action"]
    if "\n" in action or len(action) > MAX_ACTION_CHARS:
        errs.append(f"suggested_action must be one line of at most {MAX_ACTION_CHARS} characters")
    return out, errs


def check_answer(text: str, expected_ids: Sequence[int], taken: Collection[str] = ()) -> Checked:
    """Validate a model's answer for the cohorts `expected_ids`; `taken` names may not be reused."""
    out = Checked()
    try:
        value = extract_json(text)
    except ValueError as e:
        out._add(None, str(e))
        return out
    entries = _entries(value)
    if entries is None:
        out._add(None, 'expected a JSON object {"cohorts": [...]} with one entry per cohort')
        return out
    expected = set(expected_ids)
    seen: dict[int, dict[str, str]] = {}
    for item in entries:
        cid = _as_id(item.get("cohort_id", item.get("id"))) if isinstance(item, dict) else None
        if cid is None or cid not in expected:
            out._add(
                None, f"entry {json.dumps(item)[:80]} has no cohort_id among {sorted(expected)}"
            )
            continue
        if cid in seen:
            out._add(cid, f"cohort {cid} appears more than once")
            continue
        fields, errs = _check_fields(item)
        for e in errs:
            out._add(cid, f"cohort {cid}: {e}")
        seen[cid] = fields if not errs else {}
    used = {name_key(n): "another cohort" for n in taken}
    for cid in expected_ids:
        if cid not in seen:
            out._add(cid, f"cohort {cid} is missing from the answer")
            continue
        fields = seen[cid]
        if not fields or cid in out.problems:
            continue
        key = name_key(fields["name"])
        if key in used:
            out._add(
                cid,
                f'cohort {cid}: name "{fields["name"]}" is already used by {used[key]}; make it distinct',
            )
            continue
        used[key] = f"cohort {cid}"
        out.valid[cid] = fields
    return out
