"""The `seqcohort` command line: `seqcohort.cli.root` builds the root command from the command modules."""

from __future__ import annotations

__all__ = ["cli", "main"]


def __getattr__(name: str):
    if name in __all__:
        from seqcohort.cli import root as _root

        return getattr(_root, name)
    raise AttributeError(name)
