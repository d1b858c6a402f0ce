"""Training sequences/s and embedding users/s of the default encoder (CPU; GPU when present).

    python bench/embed_throughput.py [--users 4000] [--events 128] [--record]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import machine, record  # noqa: E402
from embeddings.config import load_config  # noqa: E402
from embeddings.model.bundle import Bundle  # noqa: E402
from embeddings.model.embed import UserEncoder  # noqa: E402
from training.datamodule import ViewCollator  # noqa: E402
from training.module import ContrastiveModule  # noqa: E402
from training.train import build_encoder, fit_featurizer  # noqa: E402


def events_fixed_length(n_users: int, n_events: int, seed: int = 0) -> pl.DataFrame:
    """n_users x n_events realistic-looking events (vectorised)."""
    rng = np.random.default_rng(seed)
    n = n_users * n_events
    as_of = datetime(2026, 1, 1)
    secs = np.sort(rng.integers(0, 365 * 86400, size=(n_users, n_events)), axis=1)[:, ::-1].ravel()
    ev = rng.choice(["page_view", "search", "add_to_cart", "purchase", "wishlist"], n, p=[.5, .2, .15, .1, .05])
    items = rng.integers(0, 5000, n)
    return pl.DataFrame({
        "user_id": np.repeat([f"u{i:06d}" for i in range(n_users)], n_events),
        "ts": [as_of - timedelta(seconds=int(s)) for s in secs],
        "event": ev,
        "item": [f"i{i}" for i in items],
        "category": [f"c{i % 20}" for i in items],
        "amount": np.where(ev == "purchase", rng.lognormal(3, 1, n), np.nan),
        "text": pl.Series([None] * n, dtype=pl.String),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us")), pl.col("amount").fill_nan(None)).sort("user_id", "ts")


def bench_embed(enc: UserEncoder, data, batch_size: int, device: str) -> float:
    enc.encoder.to(device)
    enc.device = device
    enc.encode(data.subset(np.arange(min(len(data), batch_size))), batch_size=batch_size)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    enc.encode(data, batch_size=batch_size)
    if device == "cuda":
        torch.cuda.synchronize()
    return len(data) / (time.perf_counter() - t0)


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


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--events", type=int, default=128)
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    cfg = load_config(overrides=["trainer.progress=false"])
    ev = events_fixed_length(args.users, args.events)
    featurizer = fit_featurizer(cfg, ev)
    t0 = time.perf_counter()
    data = featurizer.transform(ev)
    feat_rate = len(data) / (time.perf_counter() - t0)
    torch.manual_seed(0)
    enc = UserEncoder(Bundle(build_encoder(cfg, featurizer).eval(), featurizer, {"version": "bench"}))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for dev in devices:
        for bs in (256, 1024):
            rows.append((dev, f"embed users/s (batch {bs}, {args.events} events/user)", bench_embed(enc, data, bs, dev)))
        copies = " + shuffled-order copies" if cfg.trainer.order_weight > 0 else ""
        rows.append((dev, f"train sequences/s (batch {cfg.trainer.batch_size} users x {cfg.trainer.views} views{copies})",
                     bench_train(cfg, featurizer, data, dev)))
    rows.insert(0, ("cpu", f"featurize users/s ({args.events} events/user)", feat_rate))
    table = "| device | metric | value |\n|---|---|---:|\n" + "\n".join(
        f"| {d} | {m} | {v:,.0f} |" for d, m, v in rows)
    print(f"{machine()}\ndefault model: {enc.encoder.num_parameters():,} parameters, "
          f"d_model={cfg.model.d_model}, layers={cfg.model.n_layers}, max_len={cfg.model.max_len}\n")
    print(table)
    if args.record:
        record("Embedding and training throughput", table, "python bench/embed_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
