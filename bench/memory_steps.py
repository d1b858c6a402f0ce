"""Where `seqcohort run` holds its memory: peak RSS within each call of the pipeline, in one process.

    .venv/bin/python bench/memory_steps.py EVENTS [--set trainer.max_steps=1 ...] [--out DIR]

Runs `seqcohort.pipeline.run` on EVENTS in a fresh workspace with the calls that matter wrapped:
each prints its seconds, RSS before and after, and the peak RSS inside it (sampled every 5 ms).
Training's memory is bounded by its sample of users, so `--set trainer.max_steps=1` keeps the
rest of the picture while skipping most of the training time. `bench/scale_curve.py` gives
the figures of a whole `seqcohort run` process.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALLS = [
    ("seqcohort.pipeline", None, ["load_events", "train_bundle", "encode_in_chunks"]),
    ("embeddings.data.schema", None, ["_validate", "_sorted_by_user"]),
    ("embeddings.cohorts.model", None, ["user_counts", "fit_cohorts", "calibrate_confidence", "compute_profiles"]),
    ("embeddings.cohorts.model", "CohortModel", ["fit", "save"]),
    ("embeddings.cohorts.index", "VectorIndex", ["fit"]),
]


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


class Meter:
    """Peak RSS since the last reset, sampled by a thread."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.depth = 0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_gib())
            time.sleep(0.005)

    def wrap(self, owner: Any, name: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            before, outer = rss_gib(), self.peak
            self.peak, t0 = before, time.perf_counter()
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                inner = self.peak
                print(f"{'  ' * self.depth}{name}: {time.perf_counter() - t0:.1f} s, RSS {before:.2f} -> "
                      f"{rss_gib():.2f} GiB, peak {inner:.2f} GiB", flush=True)
                self.peak = max(outer, inner)

        setattr(owner, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("events", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "memory_steps")
    args = ap.parse_args()
    meter = Meter()
    for module, cls, names in CALLS:
        mod = importlib.import_module(module)
        owner = getattr(mod, cls) if cls else mod
        for name in names:
            meter.wrap(owner, name)
    from embeddings.config import load_config
    from seqcohort import pipeline

    shutil.rmtree(args.out, ignore_errors=True)
    print(f"start: RSS {rss_gib():.2f} GiB", flush=True)
    t0 = time.perf_counter()
    pipeline.run(args.events, args.out, load_config(None, args.sets))
    print(f"run: {time.perf_counter() - t0:.1f} s, peak RSS {meter.peak:.2f} GiB")


if __name__ == "__main__":
    main()
