"""Synthetic event logs with planted behavioural archetypes (ground truth for tests and the demo)."""
