"""Embedding users with a trained bundle: in memory (`UserEncoder.encode`) or to parquet."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import torch

from embeddings.features.device_batch import DeviceSequences
from embeddings.features.featurizer import SequenceData
from embeddings.features.small import SMALL_MAX_EVENTS, Columns, SmallFeaturizer, columns_frame
from embeddings.fsutil import atomic_path
from embeddings.model.bundle import Bundle, load_bundle
from embeddings.model.encoder import EventEncoder
from embeddings.model.fused import FusedEncoder

log = logging.getLogger(__name__)

# users per batch by device type: on the CPU a batch's activations stay in cache (128 users ran ~20%
# faster per core than 512); a GPU needs thousands to be busy (docs/decisions.md#embedding-batches-and-threads)
BATCH_SIZE = {"cpu": 128, "cuda": 4096}
# autocast dtypes (opt-in): bf16 ~5e-3 from float32 at most, float16 ~7e-4 (its 10-bit mantissa) and
# as fast on a GPU, slow on CPUs without AVX512-FP16 (docs/decisions.md#embedding-batches-and-threads)
AUTOCAST = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PARALLEL_MIN_EVENTS = 200_000  # smaller logs are featurised in one part: threads cost more than they save


def _progress(total: int) -> Any:
    from rich.progress import Progress

    p = Progress()
    p.add_task("embedding", total=total)
    p.start()
    return p


def resolve_device(device: str | None = None) -> str:
    """The torch device to embed on: "auto" (or None) is the GPU when torch sees one, else the CPU.

    "gpu" is accepted for "cuda" so that `trainer.accelerator` values can be passed straight in.
    Under Ray, a replica without `num_gpus` sees no GPU, so "auto" stays on the CPU there.
    """
    d = (device or "auto").lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d == "gpu":
        d = "cuda"
    if d.startswith("cuda") and not torch.cuda.is_available():
        from embeddings.errors import ConfigError

        raise ConfigError(
            f"device {device!r} was asked for, but torch sees no CUDA GPU (torch {torch.__version__}). "
            "Use device 'cpu' or 'auto', or install a CUDA build of torch on a machine with a GPU."
        )
    return d


class Embeddings(NamedTuple):
    """Users and their embeddings, row for row: `user_ids, X = encoder.encode(events)`."""

    user_ids: np.ndarray  # (n,) user ids as strings
    vectors: np.ndarray  # (n, dim) float32


class UserEncoder:
    """Turns event histories into embeddings with a bundle's featurizer and encoder.

    Example:
        enc = UserEncoder.load("ws/current/encoder")
        user_ids, X = enc.encode(events)   # (n_users,) ids and (n_users, dim) float32, row for row
    """

    def __init__(self, bundle: Bundle, device: str | None = "auto", path: str | Path | None = None,
                 dtype: str = "float32", fused: bool = True) -> None:
        if dtype not in AUTOCAST:
            raise ValueError(f"dtype={dtype!r}: use one of {sorted(AUTOCAST)}.")
        self.bundle = bundle
        self.dtype = dtype  # what `encode` runs the encoder in unless told otherwise
        # float32 on the CPU through embeddings/model/fused.py: the same vectors, more users per core
        # (docs/decisions.md#fused-cpu-inference); False: the modules' own forward
        self.fused = fused
        self.path = Path(path) if path is not None else None  # the bundle directory, when loaded from one
        self.device = resolve_device(device)
        # a copy on another device: moving the caller's module in place would leave the bundle on the
        # GPU for code that feeds it CPU batches afterwards (propensity, backtests)
        on, want = next(iter(bundle.encoder.parameters()), torch.empty(0)).device, torch.device(self.device)
        same = on.type == want.type and want.index in (None, on.index)
        enc = bundle.encoder if same else copy.deepcopy(bundle.encoder).to(want)
        self.encoder = enc.eval()
        self.featurizer = bundle.featurizer
        self.max_len = bundle.config.max_len
        self._small: SmallFeaturizer | None = None
        # a goal-aware encoder (IntentEncoder) runs its own forward: the fused view covers EventEncoder only
        self._fused = FusedEncoder(self.encoder) if isinstance(self.encoder, EventEncoder) else None

    @classmethod
    def load(cls, path: str | Path, device: str | None = "auto", dtype: str = "float32",
             fused: bool = True) -> UserEncoder:
        device = resolve_device(device)
        return cls(load_bundle(path, device=device), device, path, dtype, fused)

    @property
    def dim(self) -> int:
        return self.bundle.dim

    @property
    def version(self) -> str:
        return self.bundle.version

    def featurize(self, events: pl.DataFrame, as_of: datetime | None = None, workers: int | None = None) -> SequenceData:
        """`Featurizer.transform`; a large log in `workers` parts of users side by side.

        A user's features depend only on its own events and `as_of`, so the parts join into the same
        SequenceData. Default: one part on the CPU, where encoding takes ~95% of the time and parts
        cost ~40% more CPU time; torch's thread count on a GPU, whose host's cores are otherwise idle
        while featurising is what the GPU waits on (half of `transform` is numpy on one core).
        """
        workers = workers or (1 if self.device == "cpu" else torch.get_num_threads())
        if workers <= 1 or events.height < PARALLEL_MIN_EVENTS:
            return self.featurizer.transform(events, as_of=as_of)
        as_of = as_of or events.get_column("ts").max()  # type: ignore[assignment]  # one as_of for every part
        parts = events.with_columns(_part=pl.col("user_id").hash(0) % workers).partition_by("_part", include_key=False)
        with ThreadPoolExecutor(len(parts)) as pool:
            done = list(pool.map(lambda part: self.featurizer.transform(part, as_of=as_of), parts))
        ids = np.concatenate([d.user_ids for d in done])
        sizes = np.concatenate([np.diff(d.offsets) for d in done])
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        fields = {k: np.concatenate([d.fields[k] for d in done]) for k in done[0].fields}
        order = pl.Series(ids).arg_sort().to_numpy()  # users sorted by id, as transform sorts them
        return SequenceData(ids, offsets, fields, done[0].as_of).subset(order)

    def featurize_columns(self, columns: Columns, as_of: datetime | None = None) -> SequenceData:
        """`featurize` for events given as canonical columns (see embeddings.features.small).

        A few users' events (live sessions) skip polars: the same SequenceData in ~0.4 ms instead of
        ~3.5 ms for one 20-event session.
        """
        if len(columns["ts"]) > SMALL_MAX_EVENTS:
            return self.featurize(columns_frame(columns, self.featurizer.config), as_of)
        if self._small is None or self._small.featurizer is not self.featurizer:
            self._small = SmallFeaturizer(self.featurizer)
        return self._small.transform(columns, as_of)

    def encode(
        self,
        sequences: pl.DataFrame | SequenceData,
        *,
        as_of: datetime | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
        dtype: str | None = None,
        workers: int | None = None,
    ) -> Embeddings:
        """Embed every user: (user_ids (n_users,), vectors (n_users, dim) float32), row for row.

        Rows follow `sequences.user_ids` (for a DataFrame: users sorted by id). Users are batched by similar length so padding stays small; the
        result for a user does not depend on which other users share its batch.

        Args:
            batch_size: users per batch; default BATCH_SIZE[device type] (docs/decisions.md#embedding-batches-and-threads).
            dtype: "float32", or "bfloat16" / "float16" to run the encoder under autocast (opt-in):
                faster where the hardware has them (a GPU; bf16 on a CPU with AVX512-BF16); vectors
                within about 6e-3 (bf16) and 7e-4 (float16) of float32. Default: the encoder's `dtype`.
            workers: CPU only: threads that encode batches side by side, each with one torch thread
                (default: torch's thread count). On a GPU the batches are gathered on the device.
        """
        data = sequences if isinstance(sequences, SequenceData) else self.featurize(sequences, as_of)
        dtype = dtype or self.dtype
        if dtype not in AUTOCAST:
            raise ValueError(f"dtype={dtype!r}: use one of {sorted(AUTOCAST)}.")
        dev = torch.device(self.device)
        bs = batch_size or BATCH_SIZE.get(dev.type, BATCH_SIZE["cuda"])
        n = len(data)
        lengths = np.minimum(data.lengths, self.max_len)
        order = np.argsort(lengths, kind="stable")
        batches = [order[s : s + bs] for s in range(0, n, bs)]
        progress = _progress(len(batches)) if show_progress else None
        cast = AUTOCAST[dtype]

        def autocast() -> AbstractContextManager[Any]:
            # a new context each time (autocast keeps its previous state on the object, and CPU
            # batches enter it from several threads); float32 enters none
            return nullcontext() if cast == torch.float32 else torch.autocast(dev.type, dtype=cast)

        try:
            if dev.type != "cpu":
                X = self._encode_on_device(data, batches, lengths, autocast, progress)
            else:
                model = self._fused if self._fused is not None and self.fused and cast == torch.float32 else self.encoder
                X = self._encode_on_cpu(data, batches, model, autocast, progress, workers or torch.get_num_threads())
        finally:
            if progress is not None:
                progress.stop()
        return Embeddings(data.user_ids, X)

    def _encode_on_cpu(self, data: SequenceData, batches: list[np.ndarray],
                       model: Callable[[dict[str, torch.Tensor]], torch.Tensor], autocast: Callable[[], Any],
                       progress: Any, workers: int) -> np.ndarray:
        out = np.empty((len(data), self.dim), dtype=np.float32)

        def run(rows: np.ndarray) -> None:
            with torch.inference_mode(), autocast():  # both are per thread
                batch = self.featurizer.collate_users(data, rows, self.max_len)
                out[rows] = model(batch).float().numpy()
            if progress is not None:
                progress.advance(progress.task_ids[0])

        if workers <= 1 or len(batches) <= 1:
            for rows in batches:
                run(rows)
            return out
        # one torch thread per worker: torch's own threads wait for each other at the end of every
        # op, and on a busy machine one descheduled thread stalls them all
        # (docs/decisions.md#embedding-batches-and-threads)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for _ in pool.map(run, batches):
                    pass
        finally:
            torch.set_num_threads(before)
        return out

    def _encode_on_device(self, data: SequenceData, batches: list[np.ndarray], lengths: np.ndarray,
                          autocast: Callable[[], Any], progress: Any) -> np.ndarray:
        """Features copied to the device once; each batch gathered there (embeddings/features/device_batch.py)."""
        ds = DeviceSequences.from_data(self.featurizer, data, self.device)
        out = torch.empty(len(data), self.dim, dtype=torch.float32, device=self.device)
        context = bool(self.bundle.config.n_context)
        with torch.inference_mode(), autocast():
            for rows in batches:
                rows_t = torch.from_numpy(rows).to(self.device, non_blocking=True)
                width = max(int(lengths[rows].max(initial=1)), 1)
                batch = ds.collate_users(rows_t, self.max_len, width, context=context)
                out[rows_t] = self.encoder(batch).float()
                if progress is not None:
                    progress.advance(progress.task_ids[0])
        return out.cpu().numpy()

def embeddings_frame(user_ids: np.ndarray, X: np.ndarray, as_of: datetime | None) -> pl.DataFrame:
    """`user_id`, `embedding` (fixed-size float32 array), `as_of`."""
    return pl.DataFrame(
        {
            "user_id": pl.Series(user_ids.astype(str), dtype=pl.String),
            "embedding": pl.Series(X, dtype=pl.Array(pl.Float32, X.shape[1])),
            "as_of": pl.Series([as_of] * len(user_ids), dtype=pl.Datetime("us")),
        }
    )


def write_embeddings(path: str | Path, user_ids: np.ndarray, X: np.ndarray, as_of: datetime | None) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        embeddings_frame(user_ids, X, as_of).write_parquet(tmp)
    return path


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns (user_ids (n,) object, X (n, dim) float32 C-contiguous)."""
    df = pl.read_parquet(path, columns=["user_id", "embedding"])
    X = np.ascontiguousarray(df.get_column("embedding").to_numpy(), dtype=np.float32)
    return df.get_column("user_id").to_numpy().astype(object), X
