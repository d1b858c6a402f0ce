"""The core library: events -> features -> encoder -> cohorts -> names, with no Lightning, Ray or CLI (docs/architecture.md)."""

from embeddings.memory import configure_allocators

configure_allocators()  # before anything imports Polars
