"""seqcohort: behavioural audience segmentation from event sequences.

    import seqcohort as sc
    model = sc.CohortModel(config).fit(events, sc.Encoder.train(events, config))

The names are imported on first use, so `seqcohort --help` does not load torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CohortModel", "Config", "Embeddings", "Encoder", "Goal", "SynthData", "Workspace", "load_config",
           "make_namer", "parse_goal", "read_events", "synthetic"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from seqcohort import api

        return getattr(api, name)
    raise AttributeError(f"module 'seqcohort' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
