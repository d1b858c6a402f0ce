"""`make_namer`: build a namer by kind name, as configs and the CLI do."""

from __future__ import annotations

from typing import Any

from embeddings.errors import NamingError
from embeddings.naming.base import Namer


def make_namer(kind: str, **kwargs: Any) -> Namer:
    """A namer of `kind` ("stats", "llm" or "local") built with `kwargs` as its arguments."""
    kind = kind.strip().lower()
    if kind == "stats":
        from embeddings.naming.stats import StatsNamer

        kwargs.pop(
            "cache_dir", None
        )  # a shared config may pass it to every namer; stats has no cache
        if kwargs:
            raise NamingError(f"The stats namer takes no options; got {sorted(kwargs)}.")
        return StatsNamer()
    if kind == "llm":
        from embeddings.naming.llm import LLMNamer

        return _build(LLMNamer, kind, kwargs)
    if kind == "local":
        from embeddings.naming.local import LocalNamer

        return _build(LocalNamer, kind, kwargs)
    raise NamingError(f'Unknown namer kind "{kind}": use "stats", "llm" or "local".')


def _build(cls: Any, kind: str, kwargs: dict[str, Any]) -> Namer:
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise NamingError(
            f"Bad options for the {kind} namer ({e}); see {cls.__name__}'s docstring."
        ) from e
