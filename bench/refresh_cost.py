"""What a refresh costs against a full run, on the same machine, back to back.

    nice -n 10 .venv/bin/python bench/refresh_cost.py [--users 20000] [--days 7] [--set trainer.max_steps=200] [--record]

A synthetic log (embeddings.synthetic, planted archetypes) is cut `--days` before its end. Then:
1. `run` on the events before the cut (the workspace a refresh starts from; its time is shown too);
2. `refresh` with the last `--days` of events (timed: the incremental path);
3. `run` on all the events in a fresh workspace (timed: what a refresh replaces).
`--switch N` plants behaviour changes first: N users active in both periods get, as their new events,
the new events of a user of another archetype. Prints refresh / full run, peak memory (ru_maxrss of
this process), how often switchers, other active users and users without new events changed
cohort. `--record` appends the table to bench/LOG.md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--switch", type=int, default=0, help="users whose new events come from another archetype")
    ap.add_argument("--active", type=float, default=None, help="keep the new events of only this share of users")
    ap.add_argument("--skip-full", action="store_true", help="time the refresh only (large --users)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "refresh_cost")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    from embeddings.config import load_config
    from embeddings.synthetic import synth
    from embeddings.workspace import Workspace
    from seqcohort import pipeline
    from seqcohort.refresh import refresh

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    data = synth.generate(args.users, seed=args.seed)
    ev = data.events
    cut = ev.get_column("ts").max() - timedelta(days=args.days)
    paths = {"p1": args.out / "p1.parquet", "new": args.out / "new.parquet", "all": args.out / "all.parquet"}
    p1 = ev.filter(pl.col("ts") <= cut)
    p2 = ev.filter(pl.col("ts") > cut)
    if args.active is not None:  # e.g. 0.05: a week in which 5% of all users come back
        users = p2.get_column("user_id").unique().sort().sample(fraction=1.0, shuffle=True, seed=args.seed)
        p2 = p2.filter(pl.col("user_id").is_in(users.head(int(args.active * args.users)).implode()))
    new, switchers = plant_switches(p1, p2, data.truth, args.switch, args.seed)
    p1.write_parquet(paths["p1"])
    new.write_parquet(paths["new"])
    pl.concat([p1, new]).write_parquet(paths["all"])
    cfg = load_config(overrides=args.sets)

    t0 = time.perf_counter()
    pipeline.run(paths["p1"], args.out / "ws", cfg)
    t_base = time.perf_counter() - t0
    before = pl.read_parquet(Workspace(args.out / "ws").current() / "assignments.parquet")
    t0 = time.perf_counter()
    res = refresh(args.out / "ws", paths["new"], cfg)
    t_refresh = time.perf_counter() - t0
    t_full = float("nan")
    if not args.skip_full:
        t0 = time.perf_counter()
        pipeline.run(paths["all"], args.out / "ws_full", cfg)
        t_full = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB

    after = pl.read_parquet(Workspace(args.out / "ws").current() / "assignments.parquet")
    j = before.join(after, on="user_id", suffix="_new").with_columns(moved=pl.col("cohort_id") != pl.col("cohort_id_new"))
    active = set(new.get_column("user_id").unique().to_list())

    def moved(users: set[str], inside: bool = True) -> str:
        g = j.filter(pl.col("user_id").is_in(sorted(users)) == inside)
        return f"{g['moved'].mean():.1%} of {g.height:,}" if g.height else "–"
    changed = new.get_column("user_id").n_unique()
    rows = [
        ("users / with new events", f"{args.users:,} / {changed:,} ({changed / args.users:.0%})"),
        ("new events", f"{new.height:,}"),
        ("run on the first period (setup)", f"{t_base:.1f} s"),
        ("refresh with the last period", f"{t_refresh:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in res.timings.items())})"),
        ("full run on everything", f"{t_full:.1f} s" if not args.skip_full else "skipped"),
        ("refresh / full run", f"{t_refresh / t_full:.1%}"),
        ("changed cohort: users without new events", moved(active, inside=False)),
        ("changed cohort: active users, behaviour unchanged", moved(active - switchers)),
        ("changed cohort: active users who switched archetype", moved(switchers)),
        ("peak memory (this process)", f"{peak:.1f} GiB"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(f"{machine()}\n\n{table}\n\n{res.message}")
    if args.record:
        record(f"Refresh cost ({args.users:,} users, {args.days} days new)", table,
               "python bench/refresh_cost.py " + " ".join(sys.argv[1:]))


def plant_switches(p1: pl.DataFrame, p2: pl.DataFrame, truth: pl.DataFrame, n: int,
                   seed: int) -> tuple[pl.DataFrame, set[str]]:
    """p2 where `n` users active in both periods have, instead of their own, the period-2 events of a
    user of another archetype (renamed to them): a planted behaviour change."""
    if n <= 0:
        return p2, set()
    rng = np.random.default_rng(seed)
    arch = dict(zip(truth["user_id"].to_list(), truth["archetype"].to_list(), strict=True))
    active = sorted(set(p2["user_id"].to_list()) & set(p1["user_id"].to_list()))
    switchers = set(rng.choice(active, size=min(n, len(active)), replace=False).tolist())
    by_arch: dict[str, list[str]] = {}
    for u in active:
        by_arch.setdefault(arch[u], []).append(u)
    parts = [p2.filter(~pl.col("user_id").is_in(sorted(switchers)))]
    for u in sorted(switchers):
        others = sorted(a for a in by_arch if a != arch[u])
        donor = str(rng.choice(by_arch[others[int(rng.integers(len(others)))]]))
        parts.append(p2.filter(pl.col("user_id") == donor).with_columns(user_id=pl.lit(u)))
    return pl.concat(parts), switchers


if __name__ == "__main__":
    main()
