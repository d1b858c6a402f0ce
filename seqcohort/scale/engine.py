"""`--engine ray`: one object that says where Ray runs and how wide, handed to the pipelines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from embeddings.errors import ClusterError
from embeddings.model.embed import Embeddings, UserEncoder
from seqcohort.scale.embed import EmbedJob, RayUserEncoder, embed_frame
from seqcohort.scale.session import cluster_cpus, cluster_gpus, ray_session

if TYPE_CHECKING:
    from training.ray_train import RayTrain


@dataclass(frozen=True)
class RayEngine:
    """Run the heavy steps on Ray: embedding on Ray Data actors, training on Ray Train workers.

    `workers` is both the encoder actors and the DDP ranks. GPUs are used when the cluster has them
    as the job starts (one per actor or rank); `storage` is Ray Train's checkpoint storage, which a
    multi-node cluster needs shared (s3://... or an NFS path).
    """

    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray started for the command
    workers: int = 2
    storage: str | None = None
    num_cpus: int | None = None  # a local Ray's CPUs (None: all of this machine's)
    verbose: bool = False  # workers' logs in this terminal

    @contextmanager
    def session(self) -> Iterator[Any]:
        with ray_session(self.address, num_cpus=self.num_cpus, verbose=self.verbose) as ray:
            yield ray

    def trainer(self) -> RayTrain:
        from training.ray_train import RayTrain

        use_gpu = cluster_gpus() >= self.workers
        if not use_gpu and not (self.address or os.environ.get("RAY_ADDRESS")):
            cpus = cluster_cpus()  # a local Ray does not grow: Ray Train would wait for the missing CPUs forever
            if cpus < self.workers:
                raise ClusterError(f"--workers {self.workers} needs {self.workers} CPUs for its training workers; the "
                                   f"local Ray has {cpus:g}. Lower --workers, or give --address of a cluster.")
        return RayTrain(workers=self.workers, use_gpu=use_gpu, storage=self.storage)

    @property
    def job(self) -> EmbedJob:
        return EmbedJob(actors=self.workers)

    def encoder(self, encoder: UserEncoder) -> RayUserEncoder:
        """`encoder` with its `encode(events)` on Ray Data."""
        return RayUserEncoder(encoder, self.job)

    def embed(self, encoder: UserEncoder, events: pl.DataFrame, as_of: datetime) -> Embeddings:
        return embed_frame(encoder, events, as_of, self.job)
