"""Embedding users/s of the default encoder, end to end and by stage, beside the baselines; training sequences/s.

On the CPU: featurising alone; encoding as it was before (batches in turn, torch's threads inside
each op) and single-threaded; encoding on threads of one torch thread each, through the encoder's
modules and through the fused path (embeddings/model/fused.py, the default), on one thread too; bf16;
the `seqcohort embed` path in process and as a process, fused and `--no-fused`, interleaved. On a GPU
when present: encoding with batches gathered on the device, float32 and bf16, with the difference
from the CPU's vectors.

    python bench/embed_throughput.py [--users 4000] [--events 128] [--repeat 3] [--no-train] [--record]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import machine, record  # noqa: E402
from embeddings.config import load_config  # noqa: E402
from embeddings.model.bundle import Bundle, save_bundle  # noqa: E402
from embeddings.model.embed import BATCH_SIZE, UserEncoder, write_embeddings  # noqa: E402
from seqcohort import pipeline  # noqa: E402
from training.datamodule import ViewCollator  # noqa: E402
from training.module import ContrastiveModule  # noqa: E402
from training.train import build_encoder, fit_featurizer  # noqa: E402


def events_fixed_length(n_users: int, n_events: int, seed: int = 0) -> pl.DataFrame:
    """n_users x n_events realistic-looking events (vectorised: a GPU run wants millions)."""
    rng = np.random.default_rng(seed)
    n = n_users * n_events
    as_of = datetime(2026, 1, 1)
    secs = np.sort(rng.integers(0, 365 * 86400, size=(n_users, n_events)), axis=1)[:, ::-1].ravel()
    ev = rng.choice(["page_view", "search", "add_to_cart", "purchase", "wishlist"], n, p=[.5, .2, .15, .1, .05])
    items = rng.integers(0, 5000, n)
    ids = pl.Series(np.arange(n_users)).cast(pl.String).str.zfill(6)
    return pl.DataFrame({
        "user_id": ("u" + ids).gather(np.repeat(np.arange(n_users), n_events)),
        "ts": pl.Series(np.datetime64(as_of, "us") - secs.astype("timedelta64[s]")),
        "event": ev,
        "item": "i" + pl.Series(items).cast(pl.String),
        "category": "c" + pl.Series(items % 20).cast(pl.String),
        "amount": np.where(ev == "purchase", rng.lognormal(3, 1, n), np.nan),
        "text": pl.Series([None] * n, dtype=pl.String),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us")), pl.col("amount").fill_nan(None)).sort("user_id", "ts")


def best_rate(fn, n_users: int, repeat: int, device: str = "cpu") -> float:
    """Users/s of the fastest of `repeat` calls (a shared machine only ever slows a run down)."""
    best = float("inf")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n_users / best


def before_encode(enc: UserEncoder, data, batch_size: int = 256) -> np.ndarray:
    """`UserEncoder.encode` as it was before the threaded CPU path: batches one after another on the
    host, torch's own threads inside each op (the in-process baseline)."""
    out = np.empty((len(data), enc.dim), dtype=np.float32)
    order = np.argsort(np.minimum(data.lengths, enc.max_len), kind="stable")
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            rows = order[s : s + batch_size]
            batch = {k: v.to(enc.device) for k, v in enc.featurizer.collate_users(data, rows, enc.max_len).items()}
            out[rows] = enc.encoder(batch).float().cpu().numpy()
    return out


def single_thread(fn):
    def run():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(n)
    return run


def embed_path(enc: UserEncoder, events_path: Path, out: Path, cfg) -> None:
    """What `seqcohort embed` runs: read, featurise, encode, write embeddings.parquet."""
    data = enc.featurize(pipeline.load_events(events_path, cfg))
    write_embeddings(out, data.user_ids, enc.encode(data).vectors, data.as_of)


def cli_rate(events_path: Path, bundle: Path, out: Path, device: str, *flags: str) -> tuple[float, float]:
    """(users/s `seqcohort embed` prints: featurise + encode + write; users/s over the whole process)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "seqcohort", "embed", "--events", str(events_path), "--bundle",
                          str(bundle), "--out", str(out), "--device", device, *flags], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    wall = time.perf_counter() - t0
    m = re.search(r"embedded ([\d,]+) users in [\d.]+s \(([\d,]+) users/s", res.stdout)
    if res.returncode or m is None:
        raise SystemExit(f"seqcohort embed failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    n = int(m.group(1).replace(",", ""))
    return float(m.group(2).replace(",", "")), n / wall


def best_cli_rates(events_path: Path, bundle: Path, tmp: Path, device: str, repeat: int,
                   variants: dict[str, tuple[str, ...]]) -> dict[str, tuple[float, float]]:
    """The best of `repeat` runs of each `seqcohort embed` variant (name -> flags), run in turn
    (A B A B ...) so that a change in the machine's load falls on every variant alike."""
    best = {name: (0.0, 0.0) for name in variants}
    for _ in range(repeat):
        for name, flags in variants.items():
            printed, whole = cli_rate(events_path, bundle, tmp / f"cli_{name}.parquet", device, *flags)
            best[name] = (max(best[name][0], printed), max(best[name][1], whole))
    return best


def _to(buckets: list[dict], device: str) -> list[dict]:
    return [{k: v.to(device) for k, v in b.items()} for b in buckets]


def bench_train(cfg, featurizer, data, device: str, steps: int = 20) -> float:
    # the device's own defaults (trainer.length_buckets: 4 on the CPU, 1 on a GPU)
    tc = cfg.trainer.model_copy(update={"accelerator": "gpu" if device == "cuda" else "cpu"})
    module = ContrastiveModule(build_encoder(cfg, featurizer), views=tc.views, temperature=tc.temperature,
                               order_weight=tc.order_weight).to(device)
    opt = module.configure_optimizers()["optimizer"]
    col = ViewCollator(data, featurizer, tc, cfg.model.max_len, 0)
    rows = np.arange(len(data))
    n_seq, t0 = 0, 0.0
    for step in range(steps + 3):
        if step == 3:
            t0 = time.perf_counter()
        batch = col(list(np.random.default_rng(step).choice(rows, cfg.trainer.batch_size, replace=False)))
        batch = {**batch, "buckets": _to(batch["buckets"], device), "order": batch["order"].to(device)}
        if "shuffled" in batch:  # the shuffled-order copies (trainer.order_weight) are encoded too
            batch["shuffled"] = {"buckets": _to(batch["shuffled"]["buckets"], device),
                                 "view": batch["shuffled"]["view"].to(device)}
        z = module(batch)
        loss = module.contrastive_loss(batch, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 3:
            n_seq += len(batch["order"])
    if device == "cuda":
        torch.cuda.synchronize()
    return n_seq / (time.perf_counter() - t0)


def device_rows(dev: str, module, featurizer, data, ref: np.ndarray, tmp: Path, cfg, args) -> list:
    """The embedding rows of one device (and its training row); `ref`: the CPU's float32 vectors of
    the first len(ref) users, computed the straightforward way."""
    n, r, rows = len(data), args.repeat, []
    events_path = tmp / "events.parquet"
    head = data.subset(np.arange(len(ref)))
    enc = UserEncoder(Bundle(module, featurizer, {"version": "bench"}), device=dev)
    enc.encode(data.subset(np.arange(min(n, 512))))  # warm-up
    if dev == "cpu":
        threads = torch.get_num_threads()
        modules = UserEncoder(Bundle(module, featurizer, {"version": "bench"}), device=dev, fused=False)
        bs = BATCH_SIZE["cpu"]
        rows += [
            (dev, "encode users/s, single thread (1 torch thread, batches of 256 in turn)",
             f"{best_rate(single_thread(lambda: before_encode(enc, data)), n, r):,.0f}"),
            (dev, f"encode users/s, before: batches of 256 in turn, {threads} torch threads each op",
             f"{best_rate(lambda: before_encode(enc, data), n, r):,.0f}"),
            (dev, f"encode users/s, modules (--no-fused): batches of {bs} on {threads} threads of 1 torch thread",
             f"{best_rate(lambda: modules.encode(data), n, r):,.0f}"),
            (dev, f"encode users/s, fused (default): batches of {bs} on {threads} threads of 1 torch thread",
             f"{best_rate(lambda: enc.encode(data), n, r):,.0f}"),
            (dev, f"encode users/s, fused, single thread (batches of {bs}, 1 torch thread)",
             f"{best_rate(single_thread(lambda: enc.encode(data, workers=1)), n, r):,.0f}"),
            (dev, f"max abs difference, modules vs before ({len(ref):,} users)",
             f"{float(np.abs(modules.encode(head).vectors - ref).max()):.1e}"),
            (dev, f"max abs difference, fused vs before ({len(ref):,} users)",
             f"{float(np.abs(enc.encode(head).vectors - ref).max()):.1e}"),
        ]
    else:
        rows.append((dev, f"encode users/s, batches of {BATCH_SIZE['cuda']} gathered on the GPU, float32",
                     f"{best_rate(lambda: enc.encode(data), n, r, dev):,.0f}"))
    for dt in ["bfloat16"] + (["float16"] if dev == "cuda" else []):  # no fast float16 on this CPU
        diff = float(np.abs(enc.encode(head, dtype=dt).vectors - ref).max())
        rows.append((dev, f"encode users/s, {dt} autocast (opt-in; max abs difference {diff:.1e})",
                     f"{best_rate(lambda dt=dt: enc.encode(data, dtype=dt), n, r, dev):,.0f}"))
    if dev == "cuda":
        rows.append((dev, "encode users/s, float16 autocast, batches of 16,384",
                     f"{best_rate(lambda: enc.encode(data, dtype='float16', batch_size=16384), n, r, dev):,.0f}"))
    if dev == "cuda":
        rows.append((dev, f"max abs difference, float32 on the GPU vs the CPU ({len(ref):,} users)",
                     f"{float(np.abs(enc.encode(head).vectors - ref).max()):.1e}"))
    enc_path = UserEncoder.load(tmp / "bundle", device=dev)
    rows.append((dev, "embed users/s in process: read + featurize + encode + write (the `seqcohort embed` path)",
                 f"{best_rate(lambda: embed_path(enc_path, events_path, tmp / 'out.parquet', cfg), n, r, dev):,.0f}"))
    variants = {"default": ()} if dev != "cpu" else {"fused (default)": (), "--no-fused": ("--no-fused",)}
    cli = best_cli_rates(events_path, tmp / "bundle", tmp, dev, r, variants)
    for name, (printed, whole) in cli.items():
        label = "" if dev != "cpu" else f", {name}"
        rows.append((dev, f"`seqcohort embed` users/s as it prints (featurize + encode + write){label}", f"{printed:,.0f}"))
        rows.append((dev, f"`seqcohort embed` users/s over the whole process (start, read, featurize, encode, write){label}",
                     f"{whole:,.0f}"))
    if not args.no_train:
        copies = " + shuffled-order copies" if cfg.trainer.order_weight > 0 else ""
        rows.append((dev, f"train sequences/s (batch {cfg.trainer.batch_size} users x {cfg.trainer.views} views{copies})",
                     f"{bench_train(cfg, featurizer, data, dev):,.0f}"))
    return rows


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--events", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each embedding figure; the best is kept")
    ap.add_argument("--no-train", action="store_true", help="leave out the training rows")
    ap.add_argument("--devices", default=None, help="comma-separated, e.g. cuda (default: cpu, and cuda when present)")
    ap.add_argument("--ref-users", type=int, default=4000, help="users the CPU float32 reference is computed for")
    ap.add_argument("--record", action="store_true", help="append the table to bench/LOG.md")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    cfg = load_config(overrides=["trainer.progress=false"])
    ev = events_fixed_length(args.users, args.events)
    featurizer = fit_featurizer(cfg, ev)
    n, r = args.users, args.repeat
    feat_rate = best_rate(lambda: featurizer.transform(ev), n, r)
    data = featurizer.transform(ev)
    torch.manual_seed(0)
    # the profile's PCA fitted, as in a trained bundle (with zero buffers the habit profile is skipped)
    module = build_encoder(cfg, featurizer, data.subset(np.arange(min(n, 2000)))).eval()
    tmp = Path(tempfile.mkdtemp(prefix="embed_throughput_"))
    events_path = tmp / "events.parquet"
    ev.write_parquet(events_path)
    save_bundle(tmp / "bundle", module, featurizer)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [("cpu", f"featurize users/s ({args.events} events/user)", f"{feat_rate:,.0f}")]
    threads = torch.get_num_threads()
    if threads > 1:  # what a GPU's UserEncoder does: parts of users side by side on the host's cores
        host = UserEncoder(Bundle(module, featurizer, {"version": "bench"}), device="cpu")
        rows.append(("cpu", f"featurize users/s, {threads} parts of users side by side (the GPU path's default)",
                     f"{best_rate(lambda: host.featurize(ev, workers=threads), n, r):,.0f}"))
    with torch.inference_mode():  # the reference: one batch at a time, torch's threads, as before
        ref = before_encode(UserEncoder(Bundle(module, featurizer, {"version": "bench"}), device="cpu"),
                            data.subset(np.arange(min(n, args.ref_users))))
    for dev in devices:
        rows += device_rows(dev, module, featurizer, data, ref, tmp, cfg, args)
    shutil.rmtree(tmp, ignore_errors=True)
    table = "| device | metric | value |\n|---|---|---:|\n" + "\n".join(f"| {d} | {m} | {v} |" for d, m, v in rows)
    print(f"{machine()}\ndefault model: {module.num_parameters():,} parameters, "
          f"d_model={cfg.model.d_model}, layers={cfg.model.n_layers}, max_len={cfg.model.max_len}\n"
          f"{n:,} users; best of {r} runs per figure; 1-minute load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print(table)
    if args.record:
        record("Embedding and training throughput", table, "python bench/embed_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
