"""The training core's fit on a Ray cluster: Ray Train's TorchTrainer runs the same LightningModule with DDP.

    trained = train(cfg, events, out, distributed=RayTrain(workers=2))

Only the fit is distributed. The driver fits the featurizer, builds the encoder (state scaling, habit
profile) and the DataModule exactly as a single-process run does; each of the N workers gets a copy,
Lightning's DistributedSampler gives it its share of the users, and DDP averages the gradients (gloo
on CPUs, NCCL on GPUs). Each worker's batch is `trainer.batch_size` users, so one step reads N times
the users of a single-process step. Rank 0 reports the fitted weights as a Ray Train checkpoint;
the driver loads them and runs the post-fit steps and `save_bundle` (an atomic directory write), so
the bundle is written once, by one process, wherever the caller asked.

A worker that dies is replaced and the fit restarts (`max_failures` times); past that, `ClusterError`.
The caller connects to Ray first (seqcohort.scale.session); without a connection Ray starts a local one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from embeddings.config import Config
from embeddings.errors import ClusterError
from training.chaos import kill_if_due
from training.core import Fitted, trainer_args, trainer_metrics
from training.datamodule import SequenceDataModule
from training.module import quiet_fit, quiet_lightning

log = logging.getLogger(__name__)

STATE_FILE = "module_state.pt"  # the fitted LightningModule's state_dict, rank 0's, in the checkpoint


@dataclass(frozen=True)
class RayTrain:
    """Where and how wide to fit: `workers` DDP ranks, each with one GPU when `use_gpu`.

    `storage` is where Ray Train keeps the run's checkpoint: a local temporary directory by default,
    which works on one machine; on a multi-node cluster give a path every node can write (NFS) or
    an object-store URI (s3://bucket/prefix).
    """

    workers: int = 2  # DDP ranks
    use_gpu: bool = False  # one GPU per worker (NCCL); else CPU workers (gloo)
    cpus_per_worker: float = 1.0
    storage: str | None = None  # Ray Train storage_path; None: a temporary local directory
    max_failures: int = 1  # worker-group restarts after a worker dies, before the fit fails

    def fit(self, cfg: Config, module: L.LightningModule, dm: SequenceDataModule, started: float) -> Fitted:
        """`training.core.fit` on this many Ray Train workers; the fitted weights land in `module`."""
        try:
            import ray
            from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
            from ray.train.torch import TorchConfig, TorchTrainer
        except ImportError as e:
            raise ClusterError(f"Training with --engine ray needs Ray Train ({e}). Install seqcohort again "
                               "(`pip install -e .` brings Ray with its data and train extras), or train with "
                               "--engine local.") from None
        if self.workers < 1:
            raise ClusterError(f"--workers {self.workers}: Ray Train needs at least one worker.")
        storage = self.storage or tempfile.mkdtemp(prefix="seqcohort-raytrain-")
        payload = ray.put((cfg, module, dm))  # once into the object store; every worker reads it from there
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"payload": [payload], "use_gpu": self.use_gpu,  # in a list: Ray leaves it a ref
                               "chaos": os.environ.get("SEQCOHORT_CHAOS_TRAIN")},
            torch_config=TorchConfig(backend="nccl" if self.use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=self.workers, use_gpu=self.use_gpu,
                                         resources_per_worker={"CPU": self.cpus_per_worker}),
            run_config=RunConfig(name=f"seqcohort-train-{os.getpid()}-{int(time.time())}", storage_path=storage,
                                 failure_config=FailureConfig(max_failures=self.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1)),
        )
        log.info("training on %d Ray Train worker(s) (%s)", self.workers, "GPU" if self.use_gpu else "CPU, gloo")
        try:
            result = trainer.fit()
            if result.error is not None:
                raise result.error
            if result.checkpoint is None:
                raise RuntimeError("rank 0 reported no checkpoint")
            with result.checkpoint.as_directory() as d:
                state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        except ClusterError:
            raise
        except Exception as e:  # Ray wraps a worker's error in its own types; the text is what matters
            raise ClusterError(
                f"Ray Train failed with {self.workers} worker(s) after {self.max_failures} restart(s): "
                f"{type(e).__name__}: {_last_line(e)}. Nothing was written. Check the workers' logs "
                "(`ray logs`, or the dashboard), then run again; --engine local trains in this process."
            ) from e
        finally:
            if self.storage is None:
                shutil.rmtree(storage, ignore_errors=True)
        module.load_state_dict(state)
        seconds = time.perf_counter() - started
        metrics = {**result.metrics, "train_seconds": seconds, "workers": float(self.workers)}
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        seqs = metrics.get("steps", 0.0) * dm.sequences_per_step * self.workers
        encoder = module.encoder.cpu().eval()  # type: ignore[union-attr]
        return Fitted(encoder, metrics, seconds, seqs / max(seconds, 1e-9))


def _last_line(e: BaseException) -> str:
    """The line of a (remote) traceback that names the error."""
    text = str(e).strip().splitlines()
    return text[-1] if text else repr(e)


def _worker_loop(config: dict[str, Any]) -> None:
    """One DDP rank: the same Trainer settings as `training.core.fit`, Ray's strategy and environment."""
    import ray
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    quiet_lightning()
    cfg, module, dm = ray.get(config["payload"][0])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if rank == ctx.get_world_size() - 1:
        kill_if_due(config.get("chaos"))  # tests only (training/chaos.py)
    tc = cfg.trainer
    L.seed_everything(tc.seed + rank, workers=True, verbose=False)  # dropout differs per rank; DDP syncs weights
    has_val = len(dm.val_rows) > 0
    args = {**trainer_args(tc, has_val), "enable_progress_bar": False, "callbacks": []}
    trainer = L.Trainer(accelerator="gpu" if config["use_gpu"] else "cpu", devices="auto",
                        # goal-aware training without its BCE term leaves the head unused in the loss
                        strategy=RayDDPStrategy(find_unused_parameters=True), plugins=[RayLightningEnvironment()],
                        **args)
    trainer = prepare_trainer(trainer)
    with quiet_fit():
        trainer.fit(module, datamodule=dm)
        if has_val:
            trainer.validate(module, datamodule=dm, verbose=False)
    metrics = trainer_metrics(trainer)
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, Path(d) / STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

