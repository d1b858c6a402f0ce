"""The core library: events -> features -> encoder -> cohorts -> names, with no Lightning, Ray or CLI (docs/architecture.md)."""
