"""The parts of a large run that are chosen by size: the FAISS index, and profiles read from a sample.

    .venv/bin/python bench/scale_parts.py index --workspace WS [--copies 5]
    .venv/bin/python bench/scale_parts.py profiles --workspace WS --events EVENTS [--users 60000 --sample 20000]

`index`: exact search against IVF (sqrt(n) lists, 32 probed: `VectorIndex("ivf")`) and HNSW on the
workspace's embeddings, then on `--copies` jittered copies of them (a larger population of the same
shape): build seconds, ms per query, recall@10 against exact, for 1,000 random queries.
`profiles`: cohort profiles of the first `--users` users read in full and from a `--sample`: how far
the event and category shares move (docs/decisions.md#profiles-from-a-sample-of-users).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from embeddings.cohorts.index import VectorIndex, l2_normalize  # noqa: E402
from embeddings.model.embed import read_embeddings  # noqa: E402


def index(ws: Path, copies: int, hnsw_max: int) -> None:
    _, X = read_embeddings(ws / "current" / "embeddings.parquet")
    rng = np.random.default_rng(0)
    sets = {f"{len(X):,}": X}
    if copies > 1:
        sets[f"{copies * len(X):,} ({copies} jittered copies)"] = np.vstack(
            [X + rng.normal(0, 0.02, X.shape).astype(np.float32) for _ in range(copies)])
    print("| vectors | index | build | ms per query | recall@10 |\n|---|---|---:|---:|---:|")
    for name, Y in sets.items():
        Y = l2_normalize(Y)
        ids = np.arange(len(Y)).astype(str)
        Q = Y[rng.choice(len(Y), 1000, replace=False)]
        exact = VectorIndex("flat").fit(Y, ids)
        t = time.perf_counter()
        truth = exact.search(Q, 10)[1]
        print(f"| {name} | flat (exact) | — | {(time.perf_counter() - t):.2f} |  1 |", flush=True)
        for kind in ("ivf", "hnsw"):
            if kind == "hnsw" and len(Y) > hnsw_max:
                continue
            t = time.perf_counter()
            v = VectorIndex(kind).fit(Y, ids)
            build = time.perf_counter() - t
            t = time.perf_counter()
            got = v.search(Q, 10)[1]
            per_q = (time.perf_counter() - t) / len(Q) * 1e3
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got, strict=True)])
            print(f"| {name} | {kind} | {build:.1f} s | {per_q:.2f} | {recall:.3f} |", flush=True)


def profiles(ws: Path, events: Path, users: int, sample: int) -> None:
    from embeddings.cohorts.profile import compute_profiles

    a = pl.read_parquet(ws / "current" / "assignments.parquet").select("user_id", "cohort_id")
    keep = a["user_id"].sort().head(users).implode()
    a = a.filter(pl.col("user_id").is_in(keep))
    ev = pl.read_parquet(events).filter(pl.col("user_id").is_in(keep))
    as_of = datetime.fromisoformat(str(ev["ts"].max()))
    full = compute_profiles(ev, a, as_of, n_exemplars=0, max_users=None)
    part = compute_profiles(ev, a, as_of, n_exemplars=0, max_users=sample)
    d = []
    for f, p in zip(full, part, strict=True):
        assert (f.size, f.share) == (p.size, p.share)
        for attr in ("top_events", "top_categories"):
            fs = {s.value: s.share for s in getattr(f, attr)}
            d += [abs(s.share - fs[s.value]) for s in getattr(p, attr) if s.value in fs]
    print(f"sample {sample:,} of {a.height:,} users, {len(full)} cohorts: event and category shares move "
          f"{100 * np.mean(d):.2f} percentage points on average, {100 * np.max(d):.2f} at most, over {len(d)} shares")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("index")
    i.add_argument("--workspace", type=Path, required=True)
    i.add_argument("--copies", type=int, default=5)
    i.add_argument("--hnsw-max", type=int, default=300_000, help="skip HNSW above this many vectors (minutes)")
    p = sub.add_parser("profiles")
    p.add_argument("--workspace", type=Path, required=True)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--users", type=int, default=60000)
    p.add_argument("--sample", type=int, default=20000)
    args = ap.parse_args()
    if args.cmd == "index":
        index(args.workspace, args.copies, args.hnsw_max)
    else:
        profiles(args.workspace, args.events, args.users, args.sample)


if __name__ == "__main__":
    main()
