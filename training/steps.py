"""Post-fit steps: named stages that turn a trained encoder into the one a bundle saves.

Each step takes (encoder, featurizer, data, cfg) and returns a `Stepped`: the encoder to go on
with (a new module when the step changed its config; the one given is never modified) and what it
records in the bundle's manifest. `training.core.POST_FIT` lists them in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from embeddings.config import Config
from embeddings.features.featurizer import Featurizer, SequenceData
from embeddings.model.encoder import EventEncoder

log = logging.getLogger(__name__)


@dataclass
class Stepped:
    """What one post-fit step made."""

    encoder: EventEncoder
    metrics: dict[str, float] = field(default_factory=dict)  # into the manifest's "metrics"
    extra: dict[str, Any] = field(default_factory=dict)  # top-level manifest entries


class Step(NamedTuple):
    name: str
    run: Callable[[EventEncoder, Featurizer, SequenceData, Config], Stepped]


def run_steps(steps: Iterable[Step], encoder: EventEncoder, featurizer: Featurizer, data: SequenceData,
              cfg: Config) -> Stepped:
    """Run `steps` in order, each on the encoder the one before returned; metrics and extras merged."""
    out = Stepped(encoder)
    for step in steps:
        done = step.run(out.encoder, featurizer, data, cfg)
        log.info("post-fit step %r: %s", step.name,
                 ", ".join(f"{k}={v:g}" for k, v in done.metrics.items()) or "nothing to record")
        out = Stepped(done.encoder, {**out.metrics, **done.metrics}, {**out.extra, **done.extra})
    return out
