"""Cohort naming: turn `CohortProfile`s into short, unique, faithful names.

Three swappable namers share one interface (`Namer.name(profiles) -> list[CohortName]`):
`StatsNamer` (default, offline, deterministic), `LLMNamer` (any OpenAI-compatible server) and
`LocalNamer` (a transformers causal LM from a directory). Model namers validate their JSON,
ask once for a repair and fall back per cohort to `StatsNamer`. `Overrides` apply human renames
and pins after any namer.
"""

from __future__ import annotations

from embeddings.naming.base import Namer, make_unique
from embeddings.naming.cache import NameCache
from embeddings.naming.factory import make_namer
from embeddings.naming.generative import CompletionError, GenerativeNamer
from embeddings.naming.llm import LLMNamer
from embeddings.naming.local import LocalNamer
from embeddings.naming.overrides import Overrides
from embeddings.naming.prompt import PROMPT_VERSION, PromptTemplate
from embeddings.naming.render import (
    profile_fingerprint,
    render_exemplar,
    render_profile,
    render_summary,
    select_exemplars,
)
from embeddings.naming.stats import StatsNamer
from embeddings.naming.validate import check_answer, extract_json

__all__ = [
    "PROMPT_VERSION",
    "CompletionError",
    "GenerativeNamer",
    "LLMNamer",
    "LocalNamer",
    "NameCache",
    "Namer",
    "Overrides",
    "PromptTemplate",
    "StatsNamer",
    "check_answer",
    "extract_json",
    "make_namer",
    "make_unique",
    "profile_fingerprint",
    "render_exemplar",
    "render_profile",
    "render_summary",
    "select_exemplars",
]
