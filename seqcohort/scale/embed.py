"""Batch embedding on Ray Data: files (or an in-memory frame) -> user-hash partitions -> encoder actors.

    events --read (one task per file)--> groupby(hash(user_id) % P) --map_groups(EncoderActor)--> embeddings

The same users and vectors as `UserEncoder.encode` in one process (tests/test_scale.py holds them to
1e-4), because every input of a user's embedding is the same there:
- Each file is read by the project's own reader (`pipeline.load_events`): the same column mapping,
  validation and error text as `--engine local`.
- A partition holds every event of its users, so no user is split between actors.
- Rows carry their position in the input (`ORD`) and each actor restores that order before
  featurising: events at the same timestamp keep the order the file gave them, as they do locally.
- Every actor gets the same `as_of` (the latest event of the whole input unless one is given) and
  the same bundle, shipped once through the object store and loaded once per actor.
Output rows come in partition order, not sorted by user: compare results by user id.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from embeddings.config import Config
from embeddings.data.files import SUPPORTED_FORMATS
from embeddings.errors import ClusterError, ConfigError, SchemaError, SeqcohortError
from embeddings.features.featurizer import SequenceData, stable_hash_bucket
from embeddings.fsutil import atomic_path
from embeddings.model.embed import Embeddings, UserEncoder, embeddings_frame
from seqcohort.scale.session import ensure_ray
from training.chaos import kill_if_due

log = logging.getLogger("seqcohort")

ORD = "_seqcohort_ord"  # (file index << 40) + row: the input order, restored inside each partition
PART = "_seqcohort_part"  # hash(user_id) % partitions: what keeps a user's events together
FILE_SHIFT = 40  # rows per file below 2**40
ROWS_PER_PARTITION = 500_000  # events per partition when sizing from rows (one actor featurises one at a time)
BYTES_PER_PARTITION = 32 << 20  # parquet bytes per partition when sizing from files (~10x in memory)
READ_CHUNK = 200_000  # rows per block a read task emits
RAY_RETRY_NOTE = "\nFailed to apply UDF transform"  # what Ray Data appends to a worker's error text
ACTOR_RETRIES = 2  # restarts of a dead encoder actor (and retries of its partition) before the job fails


@dataclass(frozen=True)
class EmbedJob:
    """How wide to embed: `actors` encoders (one GPU each when the cluster has GPUs), `partitions` groups."""

    actors: int = 2
    partitions: int | None = None  # None: from the input's size, at least 2 per actor
    batch_size: int | None = None  # users per encoder forward pass inside an actor (None: the encoder's default)

    def n_partitions(self, rows: int | None = None, nbytes: int | None = None) -> int:
        if self.partitions:
            return self.partitions
        by_size = math.ceil(rows / ROWS_PER_PARTITION) if rows else math.ceil((nbytes or 0) / BYTES_PER_PARTITION)
        return max(2 * self.actors, by_size, 1)


# ----------------------------------------------------------------------------- the actor


class EncoderActor:
    """One encoder per Ray actor: loads the bundle once, then embeds whole partitions of users."""

    def __init__(self, bundle: list[Any], as_of: datetime, batch_size: int | None, chaos: str | None = None) -> None:
        import ray

        files: dict[str, bytes] = ray.get(bundle[0])
        self._dir = tempfile.mkdtemp(prefix="seqcohort-bundle-")
        for rel, data in files.items():
            p = Path(self._dir, rel)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        # "auto": the GPU when Ray gave this actor one (num_gpus), else the CPU
        self.encoder = UserEncoder.load(self._dir, device="auto")
        self.as_of, self.batch_size, self.chaos = as_of, batch_size, chaos

    def __call__(self, part: pa.Table) -> pa.Table:
        kill_if_due(self.chaos)  # tests only (training/chaos.py)
        events = pl.from_arrow(part)
        assert isinstance(events, pl.DataFrame)
        events = events.sort(ORD).drop(ORD, PART)
        ids, X = self.encoder.encode(events, as_of=self.as_of, batch_size=self.batch_size)
        return embeddings_frame(np.asarray(ids).astype(str), X, self.as_of).to_arrow()

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


def bundle_files(path: str | Path) -> dict[str, bytes]:
    """Every file of a bundle directory by relative path: what an actor writes back out and loads."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _encode(ray: Any, ds: Any, bundle_dir: str | Path, as_of: datetime, job: EmbedJob, partitions: int) -> Any:
    """`ds` (canonical events + ORD + PART) -> a dataset of embeddings, one actor pool of encoders."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    actors = min(job.actors, int(gpus)) if gpus >= 1 else job.actors
    resources = {"num_gpus": 1} if gpus >= 1 else {"num_cpus": 1}
    log.info("embedding on %d Ray actor(s) (%s), %d partitions of users", actors,
             "1 GPU each" if gpus >= 1 else "CPU", partitions)
    return ds.groupby(PART, num_partitions=partitions).map_groups(
        EncoderActor,
        batch_format="pyarrow",
        fn_constructor_kwargs={"bundle": [ray.put(bundle_files(bundle_dir))], "as_of": as_of,
                               "batch_size": job.batch_size, "chaos": os.environ.get("SEQCOHORT_CHAOS_EMBED")},
        # min 1: a fixed pool holding every CPU would leave none for the shuffle that feeds it
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        max_restarts=ACTOR_RETRIES,
        max_task_retries=ACTOR_RETRIES,
        **resources,
    )


# ----------------------------------------------------------------------------- in-memory events (run, refresh)


def embed_frame(encoder: UserEncoder, events: pl.DataFrame, as_of: datetime | None = None,
                job: EmbedJob | None = None) -> Embeddings:
    """`encoder.encode(events, as_of=as_of)` on the connected Ray: rows sorted by user id, as locally."""
    ray = ensure_ray()
    job = job or EmbedJob()
    if encoder.path is None:
        raise ConfigError("--engine ray ships the encoder's bundle directory to its actors; this encoder was "
                          "not loaded from one. Save it with save_bundle or load it with UserEncoder.load.")
    if as_of is None:
        as_of = events.get_column("ts").max()  # type: ignore[assignment]
    assert as_of is not None
    n = job.n_partitions(rows=events.height)
    table = events.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias(ORD),
        stable_hash_bucket(events.get_column("user_id").cast(pl.String), n).alias(PART),
    ).to_arrow()
    chunks = [table.slice(i, READ_CHUNK) for i in range(0, table.num_rows, READ_CHUNK)] or [table]
    out = _encode(ray, ray.data.from_arrow(chunks), encoder.path, as_of, job, n)
    ids, X = _collect(out, encoder.dim)
    order = np.argsort(ids, kind="stable")
    return Embeddings(ids[order].astype(object), np.ascontiguousarray(X[order]))


def _collect(ds: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids: list[np.ndarray] = []
    vecs: list[np.ndarray] = []
    with ray_errors():
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            df = pl.from_arrow(batch)
            assert isinstance(df, pl.DataFrame)
            ids.append(df.get_column("user_id").to_numpy().astype(str))
            vecs.append(np.asarray(df.get_column("embedding").to_numpy(), dtype=np.float32).reshape(-1, dim))
    if not ids:
        return np.zeros(0, dtype=str), np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(ids), np.concatenate(vecs)


class RayUserEncoder:
    """A UserEncoder whose `encode` of an event frame runs on Ray; everything else is the wrapped encoder's.

    Hand it to code written against UserEncoder (`updated_embeddings` in refresh) to scale that code out.
    """

    def __init__(self, encoder: UserEncoder, job: EmbedJob | None = None) -> None:
        self.local, self.job = encoder, job or EmbedJob()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def encode(self, sequences: pl.DataFrame | SequenceData, *, as_of: datetime | None = None,
               **kwargs: Any) -> Embeddings:
        if isinstance(sequences, SequenceData):  # already featurised here: nothing to spread
            return self.local.encode(sequences, **kwargs)
        return embed_frame(self.local, sequences, as_of, self.job)


# ----------------------------------------------------------------------------- files (seqcohort embed)


def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a URI: pyarrow's own schemes, else any fsspec one."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError):
        try:
            import fsspec
        except ImportError:
            raise SchemaError(f"{uri}: pyarrow does not know this scheme and fsspec is not installed "
                              "(`pip install fsspec` and the scheme's package, e.g. gcsfs).") from None
        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def _is_part(name: str) -> bool:  # which files of a directory read_events reads
    return name.endswith(".parquet") and not name.startswith((".", "_")) and not name.endswith(".quarantine.parquet")


def list_event_files(source: str | Path) -> list[tuple[str, int]]:
    """(file, size in bytes) of an event file, or of a directory's parquet files in the order `read_events` reads them."""
    if not is_uri(source):
        p = Path(source)
        if not p.exists():
            raise SchemaError(f"{p}: no such file or directory. Check the path; supported inputs: {SUPPORTED_FORMATS}, "
                              "or an object-store URI (s3://bucket/events/).")
        if p.is_file():
            return [(str(p), p.stat().st_size)]
        files = sorted(f for f in p.rglob("*.parquet") if _is_part(f.name))
        if not files:
            raise SchemaError(f"{p}: the directory holds no .parquet files. Point at a directory of parquet files "
                              f"or at a single file ({SUPPORTED_FORMATS}).")
        return [(str(f), f.stat().st_size) for f in files]
    import pyarrow.fs as pafs

    fs, path = _filesystem(str(source))
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SchemaError(f"{source}: nothing at this URI. Check the bucket and prefix, and that this machine's "
                          "credentials can read it.")
    scheme = str(source).split("://", 1)[0]
    if info.type == pafs.FileType.File:
        return [(str(source), info.size or 0)]
    found = sorted((f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                    if f.type == pafs.FileType.File and _is_part(f.base_name)), key=lambda f: f.path)
    if not found:
        raise SchemaError(f"{source}: holds no .parquet files.")
    return [(f"{scheme}://{f.path}", f.size or 0) for f in found]


def read_files(batch: dict[str, np.ndarray], cfg: Config, maps: tuple[str, ...], partitions: int) -> Iterator[pa.Table]:
    """Ray Data read step (a task per file): the project's reader, rows tagged with ORD and PART."""
    for file, index in zip(batch["file"], batch["index"], strict=True):
        events = _read(str(file), cfg, maps)
        events = events.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int64) + (int(index) << FILE_SHIFT)).alias(ORD),
            stable_hash_bucket(events.get_column("user_id"), partitions).alias(PART),
        )
        for chunk in events.iter_slices(READ_CHUNK):
            yield chunk.to_arrow()


def _read(file: str, cfg: Config, maps: tuple[str, ...]) -> pl.DataFrame:
    from seqcohort.pipeline import load_events

    if not is_uri(file):
        return load_events(file, cfg, maps)
    fs, path = _filesystem(file)
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / Path(path).name  # the same suffix: read_events picks the format by it
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        try:
            return load_events(local, cfg, maps)
        except SeqcohortError as e:
            raise type(e)(str(e).replace(str(local), file)) from None


def read_events_dataset(ray: Any, source: str | Path, cfg: Config, maps: tuple[str, ...], job: EmbedJob) -> tuple[Any, int]:
    """(canonical events as a Ray dataset with ORD and PART, the number of partitions)."""
    if cfg.data.mode == "lenient" and is_uri(source):
        raise ConfigError("data.mode=lenient with an object-store URI: the quarantine file would be written beside "
                          "a temporary copy and lost. Use data.mode=strict, or a path on a shared filesystem.")
    files = list_event_files(source)
    partitions = job.n_partitions(nbytes=sum(size for _, size in files))
    items = ray.data.from_items([{"file": f, "index": i} for i, (f, _) in enumerate(files)],
                                override_num_blocks=len(files))
    ds = items.map_batches(read_files, fn_kwargs={"cfg": cfg, "maps": tuple(maps), "partitions": partitions},
                           batch_size=1, batch_format="numpy")
    return ds, partitions


def embed_files(source: str | Path, bundle_dir: str | Path, out: str | Path, cfg: Config, maps: tuple[str, ...] = (),
                *, as_of: datetime | None = None, job: EmbedJob | None = None) -> tuple[int, datetime]:
    """`seqcohort embed --engine ray`: embed every user of `source` and write `out`; (users, as_of).

    `out` ending in .parquet is one file, streamed through this process and renamed into place when
    complete; any other path or URI is a directory of parquet parts written by the workers, with an
    empty `_SUCCESS` file added last (readers of a URI should wait for it).
    """
    ray = ensure_ray()
    job = job or EmbedJob()
    UserEncoder.load(bundle_dir, device="cpu")  # a clear BundleError here, not one per actor
    events, partitions = read_events_dataset(ray, source, cfg, maps, job)
    with ray_errors():
        if as_of is None:  # the latest event of the whole input, as one process would take it
            events = events.materialize()
            latest = events.max("ts")
            if latest is None:
                raise SchemaError(f"{source}: no events.")
            as_of = pl.Series([latest]).cast(pl.Datetime("us")).to_list()[0]
    assert as_of is not None
    emb = _encode(ray, events, bundle_dir, as_of, job, partitions)
    if str(out).endswith(".parquet"):
        return _write_one_file(emb, out), as_of
    return _write_parts(emb, out), as_of


def _write_one_file(emb: Any, out: str | Path) -> int:
    import pyarrow.parquet as pq

    n = 0
    if is_uri(out):
        fs, path = _filesystem(str(out))
        with ray_errors(), fs.open_output_stream(path) as sink:  # an object-store PUT: all or nothing
            n = _stream(emb, lambda schema: pq.ParquetWriter(sink, schema))
        return n
    with ray_errors(), atomic_path(out) as tmp:
        n = _stream(emb, lambda schema: pq.ParquetWriter(tmp, schema))
    return n


def _stream(emb: Any, open_writer: Any) -> int:
    writer, n = None, 0
    try:
        for batch in emb.iter_batches(batch_format="pyarrow", batch_size=None):
            if writer is None:
                writer = open_writer(batch.schema)
            writer.write_table(batch.cast(writer.schema))
            n += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise SchemaError("no users to embed: the input has no events.")
    return n


def _write_parts(emb: Any, out: str | Path) -> int:
    import pyarrow.dataset as pads

    if is_uri(out):
        with ray_errors():
            emb.write_parquet(str(out))
        fs, path = _filesystem(str(out))
        with fs.open_output_stream(f"{path.rstrip('/')}/_SUCCESS"):
            pass
        return pads.dataset(path, filesystem=fs, format="parquet").count_rows()
    final = Path(out)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with ray_errors():
            emb.write_parquet(str(tmp.resolve()))
        (tmp / "_SUCCESS").touch()
        n = pads.dataset(tmp, format="parquet").count_rows()
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n


# ----------------------------------------------------------------------------- errors


class ray_errors:
    """Turn what a Ray job raised into project errors: the worker's own SeqcohortError when it raised
    one (a bad row, a broken bundle), else a ClusterError (a worker died past its retries)."""

    def __enter__(self) -> ray_errors:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        from ray.exceptions import RayError

        if exc is None or not isinstance(exc, Exception):
            return False
        if isinstance(exc, SeqcohortError) and not isinstance(exc, RayError):
            return False  # raised here, not in a worker
        seen: set[int] = set()
        e: BaseException | None = exc
        while e is not None and id(e) not in seen:  # Ray's error types subclass the worker's: find the worker's own
            seen.add(id(e))
            if isinstance(e, SeqcohortError) and not isinstance(e, RayError):
                raise type(e)(str(e).split(RAY_RETRY_NOTE)[0].rstrip()) from None
            e = getattr(e, "cause", None) or e.__cause__ or e.__context__
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise ClusterError(
            f"The Ray job failed and could not recover ({type(exc).__name__}: {lines[-1] if lines else exc!r}). "
            f"Each encoder actor is restarted up to {ACTOR_RETRIES} times; this failure outlasted that. "
            "Nothing was written. Run with -v for the workers' logs (or `ray logs`, the dashboard) and try again."
        ) from exc
