"""What the LLM and local namers share: cache, batching, validation, one repair, per-cohort fallback."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from embeddings.errors import NamingError
from embeddings.naming.base import Namer, name_key
from embeddings.naming.cache import NameCache
from embeddings.naming.profile_types import CohortName, CohortProfile
from embeddings.naming.prompt import PromptTemplate
from embeddings.naming.render import profile_fingerprint
from embeddings.naming.stats import StatsNamer
from embeddings.naming.validate import check_answer

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 300
MAX_ECHO_CHARS = 6000  # how much of a bad answer is sent back in the repair turn


class CompletionError(Exception):
    """A model call failed for good (after retries); the text is the reason recorded on fallbacks."""


class GenerativeNamer(ABC):
    """Names cohorts by prompting a language model; subclasses implement `_complete` only.

    Flow per `name()` call: look every profile up in the cache; send the rest in requests of at most
    `max_cohorts_per_request` cohorts (each request sees the others as one-line summaries, so names
    contrast); validate each answer; on problems, send them back once for a repair; any cohort still
    without a valid name gets the fallback namer's name with `fallback_reason` set. Finally names are
    made unique deterministically and the new valid ones are cached.
    """

    namer_tag = "generative"

    def __init__(
        self,
        *,
        cache_dir: str | Path | None,
        cache_model: str,
        fallback: Namer | None,
        max_cohorts_per_request: int,
        concurrency: int,
        template: PromptTemplate | None = None,
    ) -> None:
        self.template = template or PromptTemplate.load()
        self.cache = NameCache(cache_dir, cache_model, self.template.version) if cache_dir else None
        self.fallback = fallback or StatsNamer()
        self.max_cohorts_per_request = max(1, int(max_cohorts_per_request))
        self.concurrency = max(1, int(concurrency))

    @abstractmethod
    def _complete(self, messages: list[dict[str, str]], n_cohorts: int) -> str:
        """Return the model's reply text; raise `CompletionError` when no reply can be had."""

    def _redact(self, text: str) -> str:
        """Remove secrets from text that may end up in logs or `fallback_reason`."""
        return text

    def name(self, profiles: Sequence[CohortProfile]) -> list[CohortName]:
        """One name per profile, in order; never raises for model failures (it falls back instead)."""
        profiles = list(profiles)
        ids = [p.cohort_id for p in profiles]
        if len(set(ids)) != len(ids):
            raise NamingError(f"Cohort ids must be unique to name cohorts; got {ids}.")
        fps = [profile_fingerprint(p) for p in profiles]
        results: list[CohortName | None] = [
            self.cache.get(fp, self.namer_tag) if self.cache else None for fp in fps
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        chunks = [
            todo[k : k + self.max_cohorts_per_request]
            for k in range(0, len(todo), self.max_cohorts_per_request)
        ]
        logger.info(
            "%s: naming %d cohorts (%d cached, %d requests)",
            self.namer_tag,
            len(profiles),
            len(profiles) - len(todo),
            len(chunks),
        )
        taken = [r.name for r in results if r is not None]
        outcomes: list[dict[int, CohortName | str]] = []
        if self.concurrency > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                futures = [pool.submit(self._name_chunk, profiles, c, list(taken)) for c in chunks]
                outcomes = [f.result() for f in futures]
        else:  # sequential: later requests also avoid the names earlier ones chose
            for c in chunks:
                out = self._name_chunk(profiles, c, list(taken))
                taken += [v.name for v in out.values() if isinstance(v, CohortName)]
                outcomes.append(out)
        reasons: dict[int, str] = {}
        for out in outcomes:
            for i, v in out.items():
                if isinstance(v, CohortName):
                    results[i] = v
                    if self.cache:
                        self.cache.put(fps[i], v)
                else:
                    reasons[i] = v
        if reasons:
            fb = self.fallback.name(profiles)
            for i, reason in reasons.items():
                results[i] = replace(fb[i], fallback_reason=reason)
            logger.warning(
                "%s: %d of %d cohorts fell back to %s",
                self.namer_tag,
                len(reasons),
                len(profiles),
                fb[0].namer,
            )
        final = [r for r in results if r is not None]
        return StatsNamer().make_unique(profiles, final)

    def _name_chunk(
        self, profiles: list[CohortProfile], chunk: list[int], taken: list[str]
    ) -> dict[int, CohortName | str]:
        """Name the cohorts at positions `chunk`: a CohortName or a fallback reason for each."""
        part = [profiles[i] for i in chunk]
        in_chunk = set(chunk)
        others = [p for j, p in enumerate(profiles) if j not in in_chunk]
        ids = [p.cohort_id for p in part]
        messages = self.template.messages(part, others, taken)
        try:
            text = self._complete(messages, len(part))
        except CompletionError as e:
            reason = self._reason(f"request failed: {e}")
            logger.warning("%s: cohorts %s: %s", self.namer_tag, ids, reason)
            return dict.fromkeys(chunk, reason)
        first = check_answer(text, ids, taken)
        second = None
        repair_error = ""
        if not first.ok:
            logger.info(
                "%s: answer for cohorts %s invalid (%s); asking for a repair",
                self.namer_tag,
                ids,
                self._reason(" | ".join(first.messages())),
            )
            repair = [
                *messages,
                {"role": "assistant", "content": text[:MAX_ECHO_CHARS]},
                self.template.repair_message(first.messages(), part),
            ]
            try:
                second = check_answer(self._complete(repair, len(part)), ids, taken)
            except CompletionError as e:
                second = None
                repair_error = self._reason(f"repair request failed: {e}")
        out: dict[int, CohortName | str] = {}
        used = {name_key(n) for n in taken}
        for i, p in zip(chunk, part, strict=True):
            fields = None
            for checked in (second, first):
                f = checked.valid.get(p.cohort_id) if checked else None
                if f and name_key(f["name"]) not in used:
                    fields = f
                    break
            if fields:
                used.add(name_key(fields["name"]))
                out[i] = CohortName(namer=self.namer_tag, **fields)
            elif second is not None:
                out[i] = self._reason(f"invalid after repair: {second.reason(p.cohort_id)}")
            else:
                out[i] = repair_error if not first.ok else self._reason("no valid entry")
        return out

    def _reason(self, text: str) -> str:
        text = self._redact(" ".join(text.split()))
        return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
