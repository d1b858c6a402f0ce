"""How `seqcohort run` grows with users: wall time, peak memory and the split by step, back to back.

    .venv/bin/python bench/scale_curve.py [--users 20000 200000 1000000] [--out DIR] [--set K=V ...] [--record]

For each size a synthetic log (planted archetypes, `seqcohort synth`, written in parts so that
generating it stays small) is made once under `--out` and reused; then `seqcohort run` runs on it
in a fresh workspace as its own process. Its peak RSS is the kernel's (wait4's ru_maxrss); the
peak within each step comes from sampling /proc every 0.2 s against the step times the run prints.
Archetype agreement (ARI against the planted truth) shows that the larger runs still find the
archetypes. `--record` appends the table to bench/LOG.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, record  # noqa: E402

SEQCOHORT = str(Path(sys.executable).with_name("seqcohort"))
STEP = re.compile(r"(\w+) ([\d.]+)s")


def rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def timed_run(cmd: list[str], log_path: Path) -> tuple[float, float, list[tuple[float, float]], str]:
    """(wall s, peak RSS GiB, [(t, RSS GiB)], output) of `cmd` as a child process."""
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                samples.append((time.perf_counter() - t0, rss_gib(proc.pid)))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    out = log_path.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; its output is in {log_path}:\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 2**20, samples, out


def step_peaks(out: str, wall: float, samples: list[tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """step -> (seconds, peak RSS GiB in it), the steps laid back to back ending where the process ended."""
    line = next((ln for ln in out.splitlines() if "load " in ln and "train " in ln and "·" in ln), "")
    steps = [(k, float(v)) for k, v in STEP.findall(line)]
    end, peaks = wall, {}
    for name, secs in reversed(steps):
        start = end - secs
        inside = [r for t, r in samples if start <= t <= end]
        peaks[name] = (secs, max(inside, default=0.0))
        end = start
    peaks["start-up"] = (end, max((r for t, r in samples if t <= end), default=0.0))
    return dict(reversed(list(peaks.items())))


def agreement(ws: Path, data: Path) -> float:
    import polars as pl
    from sklearn.metrics import adjusted_rand_score

    a = pl.read_parquet(ws / "current" / "assignments.parquet").join(
        pl.read_parquet(data / "truth.parquet"), on="user_id")
    return float(adjusted_rand_score(a["archetype"], a["cohort_id"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, nargs="+", default=[20000, 200000, 1000000])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for every run")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, base = [], None
    for n in args.users:
        data = args.out / f"synth-{n}-{args.seed}"
        if not (data / "truth.parquet").is_file():
            subprocess.run([SEQCOHORT, "-q", "synth", "--users", str(n), "--seed", str(args.seed), "--out", str(data)],
                           check=True)
        ws = args.out / f"ws-{n}"
        shutil.rmtree(ws, ignore_errors=True)
        cmd = [SEQCOHORT, "run", "--events", str(data / "events.parquet"), "--workspace", str(ws)]
        for s in args.sets:
            cmd += ["--set", s]
        wall, peak, samples, out = timed_run(cmd, args.out / f"run-{n}.log")
        steps = step_peaks(out, wall, samples)
        base = base or wall
        split = ", ".join(f"{k} {s:.0f} s / {r:.1f} GiB" for k, (s, r) in steps.items())
        rows.append(f"| {n:,} | {wall:.0f} s | {wall / base:.2f}x | {peak:.2f} GiB | {agreement(ws, data):.3f} | {split} |")
        print(rows[-1], flush=True)
        shutil.rmtree(ws, ignore_errors=True)
    table = "\n".join(["| users | wall | vs the first | peak RSS | ARI vs planted | step: seconds / peak RSS |",
                       "|---:|---:|---:|---:|---:|---|", *rows])
    print(f"\n{machine()}\n\n{table}")
    if args.record:
        cmd = "python bench/scale_curve.py --users " + " ".join(map(str, args.users)) + "".join(
            f" --set {s}" for s in args.sets)
        record("`seqcohort run` by number of users", table, cmd)


if __name__ == "__main__":
    main()
