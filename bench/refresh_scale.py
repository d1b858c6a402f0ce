"""What `seqcohort refresh` costs on a large log: wall time and peak memory, as separate processes.

    .venv/bin/python bench/refresh_scale.py [--users 1000000] [--days 7] [--active 0.05] [--out DIR] [--record]

A synthetic log of `--users` users (`seqcohort synth`, made once under `--out` and reused) is cut
`--days` before its end. `seqcohort run` publishes the events before the cut; then `seqcohort
refresh` gets the last `--days` of events of a share `--active` of the users (a week in which 5% of
everyone comes back). Each command runs as its own process: wall time, peak RSS (wait4) and the
split by step that each prints. The logs are split with lazy scans, so making them stays small.
`bench/refresh_cost.py` compares a refresh with a full run on logs that fit in one process.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, record  # noqa: E402
from bench.scale_curve import SEQCOHORT, timed_run  # noqa: E402


def split(events: Path, out: Path, days: int, active: float, seed: int) -> tuple[int, int, int]:
    """Write out/p1.parquet (before the cut) and out/new.parquet; (users, new events, their users)."""
    lf = pl.scan_parquet(events)
    cut = lf.select(pl.col("ts").max()).collect().item() - timedelta(days=days)
    lf.filter(pl.col("ts") <= cut).sink_parquet(out / "p1.parquet")
    late = lf.filter(pl.col("ts") > cut)
    users = late.select(pl.col("user_id").unique().sort()).collect().to_series()
    n_users = lf.select(pl.col("user_id").n_unique()).collect().item()
    keep = users.sample(n=min(len(users), int(active * n_users)), seed=seed).sort()
    late.filter(pl.col("user_id").is_in(keep.implode())).sink_parquet(out / "new.parquet")
    return n_users, pl.scan_parquet(out / "new.parquet").select(pl.len()).collect().item(), len(keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--active", type=float, default=0.05, help="share of all users with new events")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for both commands")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "refresh_scale")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    data = args.out / f"synth-{args.users}-{args.seed}"
    if not (data / "truth.parquet").is_file():
        subprocess.run([SEQCOHORT, "-q", "synth", "--users", str(args.users), "--seed", str(args.seed), "--out",
                        str(data)], check=True)
    n_users, n_new, n_active = split(data / "events.parquet", args.out, args.days, args.active, args.seed)
    ws = args.out / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    sets = [a for s in args.sets for a in ("--set", s)]
    rows = []
    for name, cmd in (("run (first period)", [SEQCOHORT, "run", "--events", str(args.out / "p1.parquet"),
                                              "--workspace", str(ws), *sets]),
                      ("refresh", [SEQCOHORT, "refresh", "--events", str(args.out / "new.parquet"),
                                   "--workspace", str(ws), *sets])):
        wall, peak, _, out = timed_run(cmd, args.out / f"{name.split()[0]}.log")
        summary = next((ln.strip() for ln in out.splitlines() if "·" in ln and "s" in ln), "")
        rows.append((name, f"{wall:.1f} s", f"{peak:.2f} GiB", summary))
        print(f"{name}: {wall:.1f} s, {peak:.2f} GiB  {summary}", flush=True)
    table = (f"{n_users:,} users; {n_new:,} new events of {n_active:,} users ({args.active:.0%}) in the last "
             f"{args.days} days\n\n| command | wall | peak RSS | steps |\n|---|---:|---:|---|\n"
             + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows))
    print(f"{machine()}\n\n{table}")
    if args.record:
        record(f"Refresh on a large log ({args.users:,} users, {args.active:.0%} active)", table,
               "python bench/refresh_scale.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
