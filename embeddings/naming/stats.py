"""The default namer: deterministic names built from what most distinguishes each cohort.

The strongest signals (at most three, see `signals.py`) become adjectives in a fixed English order,
the dominant behaviour becomes the noun: "Lapsed low-spend grocery browsers", "Recent high-spend
electronics buyers", "High-spend night-owl fashion buyers".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from embeddings.naming.base import MAX_NAME_WORDS, make_unique, name_key, word_count
from embeddings.naming.profile_types import CohortName, CohortProfile
from embeddings.naming.signals import (
    BEHAVIOUR_VERBS,
    DAYPART_PHRASE,
    DAYPART_WORD,
    MAX_MODIFIERS,
    RARE_NOUNS,
    Signal,
    behaviour,
    buying_clauses,
    clean_value,
    compose,
    exemplar_event_clauses,
    is_strong,
    population_hours,
    population_weekend,
    profile_signals,
)

logger = logging.getLogger(__name__)
MAX_DESCRIPTION_CHARS = 400  # what the LLM namers' outputs are held to (validate.py)


class StatsNamer:
    """Deterministic, offline namer: names from the strongest signals, unique across the cohort set."""

    namer_tag = "stats"

    def name(self, profiles: Sequence[CohortProfile]) -> list[CohortName]:
        """Name every profile; identical inputs give identical names."""
        hours, weekend = population_hours(profiles), population_weekend(profiles)
        rare = exemplar_event_clauses(profiles)
        taken: set[str] = set()
        out: list[CohortName | None] = [None] * len(profiles)
        for i in sorted(range(len(profiles)), key=lambda i: profiles[i].cohort_id):
            p = profiles[i]
            sigs = profile_signals(p, hours, weekend)
            noun = behaviour(p)
            for clause in rare[i]:  # a recurring rare event says more than the common top event
                if clause in RARE_NOUNS and noun.word in ("buyers", "browsers", "visitors", "customers"):
                    word = RARE_NOUNS[clause]
                    noun = Signal("behaviour", word, max(noun.strength, math.log(1.2)), BEHAVIOUR_VERBS[word])
                    break
            candidates = self._candidates(p, sigs, noun.word)
            name = next((c for c in candidates if name_key(c) not in taken), None)
            if name is None:
                name = self._last_resort(p, candidates[0], sigs, noun.word, taken)
            taken.add(name_key(name))
            out[i] = CohortName(
                name=name,
                description=self._describe(p, sigs, noun, rare[i]),
                suggested_action=self._action(sigs, noun.word),
                namer=self.namer_tag,
            )
        logger.debug("stats namer named %d cohorts", len(profiles))
        return [n for n in out if n is not None]

    def qualifiers(self, profiles: Sequence[CohortProfile]) -> list[list[str]]:
        """Per profile, short words that distinguish it (strongest first): used to de-duplicate names."""
        hours, weekend = population_hours(profiles), population_weekend(profiles)
        out = []
        for p in profiles:
            words = [s.word for s in profile_signals(p, hours, weekend)]
            words += [clean_value(s.value, 2) for s in p.top_categories[1:3]]
            out.append(list(dict.fromkeys(w for w in words if w)))
        return out

    def make_unique(
        self,
        profiles: Sequence[CohortProfile],
        names: Sequence[CohortName],
        locked: frozenset[int] = frozenset(),
    ) -> list[CohortName]:
        """Resolve duplicate names (from any namer) with qualifiers taken from each profile."""
        quals = self.qualifiers(profiles)
        return make_unique(profiles, names, lambda i: quals[i], locked)

    @staticmethod
    def _fits(mods: Sequence[Signal], noun: str) -> bool:
        return word_count(compose(mods, noun)) <= MAX_NAME_WORDS

    def _candidates(self, p: CohortProfile, sigs: list[Signal], noun: str) -> list[str]:
        strong = [s for s in sigs if is_strong(s)]
        weak = [s for s in sigs if s not in strong]
        chosen: list[Signal] = []
        for s in strong:
            if len(chosen) < MAX_MODIFIERS and self._fits([*chosen, s], noun):
                chosen.append(s)
        if not chosen:
            chosen = [s for s in weak[:1] if self._fits([s], noun)]
        names = [compose(chosen, noun)]
        # More detail, one signal at a time, when the short name is already taken.
        extra = list(chosen)
        for s in [x for x in sigs if x not in chosen]:
            if self._fits([*extra, s], noun) and all(x.kind != s.kind for x in extra):
                extra.append(s)
                names.append(compose(extra, noun))
        for c in p.top_categories[1:3]:
            alt = [s for s in chosen if s.kind != "category"] + [
                Signal("category", clean_value(c.value), 0, "")
            ]
            if self._fits(alt, noun) and alt[-1].word:
                names.append(compose(alt, noun))
        return names

    @staticmethod
    def _last_resort(
        p: CohortProfile, first: str, sigs: list[Signal], noun: str, taken: set[str]
    ) -> str:
        """Identical profiles: only the (stable) cohort id can tell them apart."""
        mods = [s for s in sigs if is_strong(s)][:MAX_MODIFIERS]
        while mods and word_count(compose(mods, noun)) > MAX_NAME_WORDS - 2:
            mods = mods[:-1]
        base = first if word_count(first) <= MAX_NAME_WORDS - 2 else compose(mods, noun)
        name = f"{base} (cohort {p.cohort_id})"
        n = 2
        while name_key(name) in taken:
            name = f"{compose(mods[:1], noun)} (cohort {p.cohort_id}.{n})"
            n += 1
        return name

    @staticmethod
    def _describe(
        p: CohortProfile, sigs: list[Signal], noun: Signal, rare: Sequence[str] = ()
    ) -> str:
        """One sentence: the strongest signals, then what the cohort does (behaviour, buying, rare events)."""
        strong = [s.phrase for s in sigs if is_strong(s) and s.phrase][:3]
        if noun.phrase and noun.strength >= math.log(1.2):
            strong.append(noun.phrase)
        said = " ".join(strong)
        # Net spend per purchase is meaningless when purchases are sent back: no price clause then.
        returns = any("back" in c for c in rare)
        for clause in [*rare, *buying_clauses(p, skip_price=returns)]:
            key = clause.split(" (")[0]
            if key not in said and key.split()[-1] not in said and len(strong) < 6:
                strong.append(clause)
                said += " " + clause
        share = f"{p.share:.0%}" if p.share >= 0.01 else "under 1%"
        if not strong:
            tail = (
                f"; their top event is {clean_value(max(p.top_events, key=lambda s: s.share).value)}"
                if p.top_events
                else ""
            )
            return f"{share} of users whose recency, activity, spend and timing are close to the population's{tail}."
        while True:
            body = ", ".join(strong[:-1]) + (" and " if len(strong) > 1 else "") + strong[-1]
            text = f"{share} of users who {body}."
            if len(text) <= MAX_DESCRIPTION_CHARS or len(strong) == 1:
                return text
            strong = strong[:-1]

    @staticmethod
    def _action(sigs: list[Signal], noun: str) -> str:
        words = {s.kind: s.word for s in sigs if is_strong(s)}
        cat = f" {words['category']}" if "category" in words else ""
        rec, val, act = words.get("recency"), words.get("value"), words.get("activity")
        if noun == "cart abandoners":
            action = "Send cart reminders with a time-limited free-shipping offer"
        elif rec in ("lapsed", "dormant"):
            action = f"Run a win-back campaign with a personalised{cat} incentive"
        elif words.get("tenure") == "new":
            action = f"Send an onboarding series that introduces{cat} best-sellers"
        elif noun in ("browsers", "searchers", "comparers", "wishlisters"):
            action = f"Retarget with{cat} recommendations and a first-purchase discount"
        elif noun == "returners":
            action = f"Improve{cat} fit and sizing information and follow up on returns"
        elif noun == "reviewers":
            action = f"Invite them to review new{cat} products and join an ambassador programme"
        elif val == "high-spend":
            action = f"Offer VIP early access to new{cat} arrivals"
        elif val == "low-spend":
            action = f"Promote{cat} bundles and value packs"
        elif act == "frequent":
            action = f"Enrol them in the loyalty programme with{cat} rewards"
        else:
            action = f"Test personalised{cat} recommendations against the generic campaign"
        if "weekend" in words:
            action += "; schedule sends for the weekend"
        elif "daypart" in words:
            part = next((k for k, v in DAYPART_WORD.items() if v == words["daypart"]), "morning")
            action += f"; schedule sends {DAYPART_PHRASE[part]}"
        return action
