"""`--engine`, `--address`, `--workers`, `--storage`: the options of the commands that can run on Ray."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from seqcohort.scale.engine import RayEngine


def engine_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--storage", default=None, metavar="PATH|URI",
                      help="Ray Train checkpoint storage (training on a multi-node cluster: s3://... or a "
                           "shared path; default: a local temporary directory).")(fn)
    fn = click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                      help="With --engine ray: training workers (DDP ranks) and encoder actors.")(fn)
    fn = click.option("--address", default=None, metavar="HOST:PORT",
                      help="Ray cluster to run on (ray://host:10001 for Ray Client); default: $RAY_ADDRESS, "
                           "else a local Ray started for this command.")(fn)
    fn = click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                      help="local: this process. ray: embed on Ray Data, train on Ray Train (docs/scaling.md).")(fn)
    return fn


def make_engine(engine: str, address: str | None, workers: int, storage: str | None) -> RayEngine | None:
    """The RayEngine the options describe; None for --engine local."""
    if engine != "ray":
        return None
    import logging

    from seqcohort.scale.engine import RayEngine

    return RayEngine(address=address, workers=workers, storage=storage,
                     verbose=logging.getLogger().getEffectiveLevel() <= logging.DEBUG)


@contextmanager
def connected(engine: RayEngine | None) -> Iterator[None]:
    """Connected to the engine's Ray for the block (nothing for --engine local)."""
    with engine.session() if engine is not None else nullcontext():
        yield
