"""Item titles (sentence-transformers) on a catalogue migration: quality with and without, and their cost.

    python bench/item_text.py quality --generator app --users 2000 --seeds 1 2 3 [--set trainer.max_steps=300]
    python bench/item_text.py quality --generator cj --seeds 0 --set trainer.max_steps=300
    python bench/item_text.py cost --titles 1000

quality: generates a log with planted archetypes and item titles (`app`: bench/heldout_synth.py,
titles per category "brand adjective noun"; `synth`: embeddings/synthetic/synth.py, "brand product
variant"), removes the category column, and gives the 1-3-event (new) users' items new ids (a
catalogue migration: same products, new ids, same titles). Runs the whole `seqcohort run` pipeline
twice per seed, `features.item_text=auto` and `off`, and prints per run and as mean ± sd over seeds:
short-history users placed in their archetype's main cohort (cold start) and ARI over all users and
over users with 4+ events (archetype recovery). bench/markov_synth.py has no titles and is not used.
`cj`: the Complete Journey sample (product descriptions as titles), category removed; no planted
truth, so cold start is measured as self-consistency: the last 1-3 events of fitted users, items
renamed, assigned as new users, and the share that lands in their own whole history's cohort.

Each quality run also times `run` and what `/v1/assign` does per request, in process
(UserEncoder.featurize_columns + encode + assign of one 12-event session): p50 / p99 with and
without titles, and the one-off cost of a session carrying an unseen title.

cost: distinct titles encoded per second in a fresh process (OMP_NUM_THREADS sets the cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CJ = ROOT.parent / "shared" / "datasets" / "completejourney_sample"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import heldout_synth  # noqa: E402

from embeddings.config import load_config  # noqa: E402
from embeddings.synthetic import synth  # noqa: E402
from seqcohort import pipeline  # noqa: E402
from seqcohort.report import archetype_agreement  # noqa: E402


def generate(generator: str, users: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, list[tuple[str, str]]]:
    if generator == "app":
        ev, truth = heldout_synth.generate(users, seed)
        return ev, truth, [tuple(p) for p in heldout_synth.TWINS]  # type: ignore[misc]
    d = synth.generate(users, seed, short_share=0.12)  # as many new users as the app generator
    return d.events, d.truth, list(synth.RFM_TWINS)


def migrate(events: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """No category column; new users' items renamed (same titles): what a catalogue migration leaves."""
    short = truth.filter(pl.col("short_history"))["user_id"]
    renamed = pl.col("item").map_elements(lambda s: f"n{zlib.crc32(s.encode()):08x}", return_dtype=pl.String)
    return events.with_columns(
        pl.lit(None, dtype=pl.String).alias("category"),
        pl.when(pl.col("user_id").is_in(short.implode())).then(renamed).otherwise(pl.col("item")).alias("item"),
    )


def run_once(events: pl.DataFrame, truth: pl.DataFrame, twins: list, sets: list[str], root: Path) -> dict:
    cfg = load_config(overrides=["trainer.progress=false", *sets])
    path = root / "events.parquet"
    events.write_parquet(path)
    t0 = time.perf_counter()
    res = pipeline.run(path, root / "ws", cfg, events=pipeline.load_events(path, cfg, []))
    seconds = time.perf_counter() - t0
    ours = pl.read_parquet(res.version_dir / "assignments.parquet").select("user_id", "cohort_id")
    a = archetype_agreement(ours, truth, twins)
    return {"short": a["short_accuracy"], "chance": a["short_chance"], "ari": a["ari"], "ari_long": a["ari_long"],
            "cohorts": ours["cohort_id"].n_unique(), "seconds": seconds, **latency(res.version_dir, events)}


def latency(version_dir: Path, events: pl.DataFrame, requests: int = 300) -> dict:
    """What `/v1/assign` does per request, in process: featurise one 12-event session (the polars-free
    path), encode, assign. p50 / p99 in ms, and the one-off cost of a session holding an unseen title."""
    from embeddings.cohorts.model import CohortModel

    model = CohortModel.load(version_dir)
    enc, assigner = model.encoder, model.assigner
    sess = events.filter(pl.col("user_id") == events["user_id"][0]).tail(12)
    cols = {c: sess[c].to_list() for c in ("user_id", "event", "item", "category", "amount", "text")}
    cols["ts"] = sess["ts"].cast(pl.Int64).to_list()
    times = []
    for i in range(requests + 20):
        t = time.perf_counter()
        data = enc.featurize_columns(cols)
        assigner.assign(enc.encode(data).vectors)
        if i >= 20:  # warm-up
            times.append(time.perf_counter() - t)
    cols["text"] = ["A never seen title: Kestrel waterproof trail running shoes", *cols["text"][1:]]
    t = time.perf_counter()
    enc.featurize_columns(cols)
    first = time.perf_counter() - t
    t = time.perf_counter()
    enc.featurize_columns(cols)
    again = time.perf_counter() - t
    return {"p50_ms": 1e3 * float(np.percentile(times, 50)), "p99_ms": 1e3 * float(np.percentile(times, 99)),
            "unseen_ms": 1e3 * first, "unseen_again_ms": 1e3 * again}


def ms(values: list[float]) -> str:
    m = statistics.fmean(values)
    return f"{m:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{m:.3f}"


def quality(args: argparse.Namespace) -> None:
    rows: dict[str, list[dict]] = {"titles (auto)": [], "no titles (off)": []}
    for seed in args.seeds:
        ev, truth, twins = generate(args.generator, args.users, seed)
        ev = ev if args.as_is else migrate(ev, truth)
        for name, flag in (("titles (auto)", "auto"), ("no titles (off)", "off")):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_once(ev, truth, twins, [f"features.item_text={flag}", *args.sets], Path(tmp))
            rows[name].append(r)
            print(f"seed {seed} {name}: short {r['short']:.3f} (chance {r['chance']:.3f}), ARI {r['ari']:.3f}, "
                  f"ARI 4+ {r['ari_long']:.3f}, {r['cohorts']} cohorts, run {r['seconds']:.0f}s; one 12-event "
                  f"session p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms, with an unseen title "
                  f"{r['unseen_ms']:.1f} ms then {r['unseen_again_ms']:.2f} ms", flush=True)
    what = "the log as generated (category kept)" if args.as_is else "category removed, new users' items renamed"
    print(f"\ngenerator {args.generator}, {args.users:,} users, seeds {args.seeds}, {what}; overrides {args.sets or 'none'}")
    print("| features.item_text | short-history in main cohort | ARI | ARI 4+ events | run s | session p99 ms |\n"
          "|---|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {ms([r['short'] for r in rs])} | {ms([r['ari'] for r in rs])} | "
              f"{ms([r['ari_long'] for r in rs])} | {statistics.fmean(r['seconds'] for r in rs):.0f} | "
              f"{statistics.fmean(r['p99_ms'] for r in rs):.2f} |")
    d = [a["short"] - b["short"] for a, b in zip(rows["titles (auto)"], rows["no titles (off)"], strict=True)]
    da = [a["ari"] - b["ari"] for a, b in zip(rows["titles (auto)"], rows["no titles (off)"], strict=True)]
    print(f"| difference (auto - off) | {ms(d)} | {ms(da)} | | |")


def cj_once(events: pl.DataFrame, sets: list[str], root: Path, n_windows: int, seed: int) -> dict:
    """One run on Complete Journey (category removed); then last 1-3-event windows of fitted users, their
    items renamed, assigned as new users: the share placed in the cohort of their own whole history."""
    from embeddings.cohorts.model import CohortModel

    cfg = load_config(overrides=["trainer.progress=false", f"trainer.seed={seed}", *sets])
    path = root / "events.parquet"
    events.write_parquet(path)
    t0 = time.perf_counter()
    res = pipeline.run(path, root / "ws", cfg, events=events)
    seconds = time.perf_counter() - t0
    a = pl.read_parquet(res.version_dir / "assignments.parquet").select("user_id", "cohort_id")
    long = events.group_by("user_id").len().filter(pl.col("len") >= 4)["user_id"].sort()
    rng = np.random.default_rng(seed)
    users = long.gather(rng.choice(len(long), min(n_windows, len(long)), replace=False))
    k = dict(zip(users.to_list(), rng.integers(1, 4, len(users)).tolist(), strict=True))
    win = (events.filter(pl.col("user_id").is_in(users.implode())).sort("user_id", "ts")
           .group_by("user_id", maintain_order=True).map_groups(lambda g: g.tail(k[g["user_id"][0]])))
    renamed = pl.col("item").map_elements(lambda v: f"n{zlib.crc32(v.encode()):08x}", return_dtype=pl.String)
    win = win.with_columns(renamed.alias("item"))
    got = CohortModel.load(res.version_dir).assign(win, as_of=events["ts"].max()).select("user_id", "cohort_id")
    hit = got.join(a, on="user_id", suffix="_whole")
    return {"short": float((hit["cohort_id"] == hit["cohort_id_whole"]).mean()), "cohorts": a["cohort_id"].n_unique(),
            "chance": float(((a.group_by("cohort_id").len()["len"] / a.height) ** 2).sum()), "seconds": seconds,
            "labels": a.sort("user_id")["cohort_id"].to_numpy()}


def cj_quality(args: argparse.Namespace) -> None:
    from sklearn.metrics import adjusted_rand_score

    from embeddings.data.datasets import load_completejourney

    events = load_completejourney(CJ).with_columns(pl.lit(None, dtype=pl.String).alias("category"))
    rows: dict[str, list[dict]] = {"titles (auto)": [], "no titles (off)": []}
    for seed in args.seeds:
        for name, flag in (("titles (auto)", "auto"), ("no titles (off)", "off")):
            with tempfile.TemporaryDirectory() as tmp:
                r = cj_once(events, [f"features.item_text={flag}", *args.sets], Path(tmp), args.windows, seed)
            rows[name].append(r)
            print(f"training seed {seed} {name}: 1-3-event windows in their own user's cohort {r['short']:.3f} "
                  f"(chance {r['chance']:.3f}), {r['cohorts']} cohorts, run {r['seconds']:.0f}s", flush=True)
        ari = adjusted_rand_score(rows["titles (auto)"][-1]["labels"], rows["no titles (off)"][-1]["labels"])
        print(f"  ARI between the two runs' cohorts: {ari:.3f}", flush=True)
    print(f"\nComplete Journey sample, category removed, training seeds {args.seeds}, {args.windows} windows of "
          f"users with 4+ events (last 1-3 events, items renamed); overrides {args.sets or 'none'}")
    print("| features.item_text | window in its user's cohort | chance | cohorts | run s |\n|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {ms([r['short'] for r in rs])} | {ms([r['chance'] for r in rs])} | "
              f"{ms([float(r['cohorts']) for r in rs])} | {statistics.fmean(r['seconds'] for r in rs):.0f} |")


def cost(args: argparse.Namespace) -> None:
    import subprocess

    from embeddings.data.datasets import load_completejourney

    titles = load_completejourney(CJ)["text"].drop_nulls().unique(maintain_order=True).head(args.titles).to_list()
    code = ("import sys,time,json; sys.path.insert(0,'.'); from embeddings.features.item_text import encode_titles;"
            "ts=json.loads(sys.stdin.read()); encode_titles(['warm up']); t=time.perf_counter(); encode_titles(ts);"
            "print(len(ts)/(time.perf_counter()-t))")
    import json

    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(titles), capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()[-1]
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(f"| titles encoded per second (all-MiniLM-L6-v2, CPU, OMP_NUM_THREADS={threads}, {len(titles)} distinct "
          f"Complete Journey product descriptions, mean {np.mean([len(t) for t in titles]):.0f} characters) "
          f"| {float(out):.0f} |")

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--generator", choices=["app", "synth", "cj"], default="app",
                   help="cj: Complete Journey (no truth: windows placed in their own user's cohort)")
    q.add_argument("--windows", type=int, default=600, help="cj: 1-3-event windows assigned")
    q.add_argument("--as-is", action="store_true", help="keep the category column and the item ids (no migration)")
    q.add_argument("--users", type=int, default=2000)
    q.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    q.add_argument("--set", dest="sets", action="append", default=[])
    c = sub.add_parser("cost")
    c.add_argument("--titles", type=int, default=1000)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    if args.cmd == "cost":
        cost(args)
    elif args.generator == "cj":
        cj_quality(args)
    else:
        quality(args)


if __name__ == "__main__":
    main()
