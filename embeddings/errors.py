"""Project exceptions. Their text is for people: what was wrong, where, and how to fix it.

The CLI prints these without a traceback and exits with code 2.
"""

from __future__ import annotations


class SeqcohortError(Exception):
    """Base class of every error the CLI reports as a clean one-paragraph message."""


class SchemaError(SeqcohortError):
    """Event data does not fit the canonical schema (missing column, bad values, wrong file type)."""


class ConfigError(SeqcohortError):
    """A configuration file or --set override is invalid."""


class BundleError(SeqcohortError):
    """An encoder bundle directory is missing, incomplete or inconsistent."""


class WorkspaceError(SeqcohortError):
    """A workspace has no published version, or a version is incomplete."""


class ClusterError(SeqcohortError):
    """Ray is not installed, no Ray cluster answers at the address, or a job on it failed past its retries."""


class NotFittedError(SeqcohortError):
    """An estimator was used before `fit`."""


class NamingError(SeqcohortError):
    """A namer could not produce valid names (LLM namers fall back instead of raising)."""
