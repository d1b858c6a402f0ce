"""Ablation of the goal-aware cohort stages, on the same trained goal-aware encoders.

    nice -n 10 .venv/bin/python bench/ablate_goal.py [--runs cdnow_90d:0,synth_90d:1] [--boot 200]

Trains one goal-aware encoder per run (as `seqcohort run --goal` and bench/quality.py do: default
config, `training.propensity.train_goal_aware` on the events up to the case's cut-off) into
bench/out/ablate_goal/<case>-<seed>/ (kept), then builds the cohorts several ways from the same
embeddings and backtests them together (`run_backtest`: the top 20% of users targeted by their
cohort's goal rate before the cut-off; precision and recall of the goal in the horizon after it):

- published: `CohortModel.fit` as `run` publishes (intent tiers x behaviour clusters,
  `cluster.split_recent` auto), ties in past goal rates broken by the cohorts' expected goal rate;
- no_tie_order: the same cohorts, ties broken at random (as for any segmentation without an order);
- split_never / split_always: `cluster.split_recent` never / always;
- joint_kmeans: no tiers, the behaviour clustering run on the whole goal-aware embedding;
- seed1: published with k-means seed 1, the yardstick for "within noise".

Runs: cdnow_90d and cj_14d with training seeds 0-2; synth_90d (our generator, 5,000 users) and
retail_90d (bench/retail_synth.py, 6,000 customers, cut-off 2011-09-09, purchase within 90 days)
with data seeds 0-2 (training seed 0). Raw numbers: bench/out/ablate_goal/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import quality  # noqa: E402
from ablate_clustering import _msd  # noqa: E402

from embeddings.cohorts.calibrate import history_lengths, user_counts  # noqa: E402
from embeddings.cohorts.model import CohortModel, fit_clusters  # noqa: E402
from embeddings.config import Config, load_config  # noqa: E402
from embeddings.evaluation.backtest import Snapshot, run_backtest  # noqa: E402
from embeddings.evaluation.goals import Goal, events_before, parse_goal  # noqa: E402
from embeddings.model.embed import UserEncoder  # noqa: E402
from embeddings.model.propensity import PropensityHead  # noqa: E402
from embeddings.naming import make_namer  # noqa: E402
from embeddings.synthetic import synth  # noqa: E402
from seqcohort.evaluation import expected_rate_order  # noqa: E402

OUT = ROOT / "bench" / "out" / "ablate_goal"
RUNS = {"cdnow_90d": [0, 1, 2], "cj_14d": [0, 1, 2], "synth_90d": [0, 1, 2], "retail_90d": [0, 1, 2]}
# bench/retail_synth.py's line-level log (6,000 customers; data seed varies), read as its docstring's
# `seqcohort evaluate` line reads it: the log where the top tier nearly all bought lately
RETAIL_MAPS = ["user_id=Customer ID", "ts=InvoiceDate", "item=StockCode", "amount=Quantity*Price"]
RETAIL_SETS = ["data.event_default=purchase", "data.mode=lenient"]
VARIANTS = ["published", "seed1", "no_tie_order", "split_never", "split_always", "joint_kmeans"]
BUDGET = 0.2


def case_data(case: str, seed: int) -> tuple[pl.DataFrame, Goal, datetime, Config]:
    """(all events, goal, cut-off, config) of a run: real logs vary the training seed, synth the data seed."""
    if case == "retail_90d":
        import retail_synth

        from seqcohort.pipeline import load_events

        cfg = load_config(overrides=["trainer.progress=false", "trainer.seed=0", *RETAIL_SETS])
        path = OUT / f"retail-{seed}.csv"
        if not path.exists():
            OUT.mkdir(parents=True, exist_ok=True)
            retail_synth.generate(6000, seed=seed).write_csv(path)
        return load_events(path, cfg, RETAIL_MAPS), parse_goal("purchase", "90d"), datetime(2011, 9, 9), cfg
    spec = quality.CASES[case]
    if spec["data"] == "synth":
        events, aliases, train_seed = synth.generate(5000, seed=seed).events, [], 0
    else:
        events, aliases = quality.load(spec["data"], 5000)
        train_seed = seed
    cfg = load_config(overrides=["trainer.progress=false", f"trainer.seed={train_seed}"])
    goal = parse_goal("purchase", spec["horizon"], aliases)
    return events, goal, datetime.fromisoformat(spec["cutoff"]), cfg


def variant_labels(model: CohortModel, cfg: Config, events: pl.DataFrame, enc: UserEncoder,
                   cutoff: datetime, variant: str) -> np.ndarray:
    """Cohort of every user (rows follow `model.user_ids_`) under `variant`."""
    if variant in ("published", "no_tie_order"):
        return model.labels_
    if variant == "joint_kmeans":
        lengths = history_lengths(user_counts(events, cutoff), model.user_ids_)
        return fit_clusters(cfg, model.embeddings_, lengths).predict(model.embeddings_)
    update = {"seed1": {"seed": 1}, "split_never": {"split_recent": "never"},
              "split_always": {"split_recent": "always"}}[variant]
    vcfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update=update)})
    refit = CohortModel(vcfg, namer=make_namer("stats")).fit(
        events, enc, as_of=cutoff, embeddings=(model.user_ids_, model.embeddings_))
    return refit.labels_


def run_one(case: str, seed: int, boot: int) -> list[dict[str, Any]]:
    from training.propensity import train_goal_aware

    events, goal, cutoff, cfg = case_data(case, seed)
    pre = events_before(events, cutoff)
    root = OUT / f"{case}-{seed}"
    bundle_dir = root / "goal_aware"
    if not (bundle_dir / "manifest.json").exists():
        t0 = time.perf_counter()
        print(f"[{case}-{seed}] training goal-aware ...", flush=True)
        train_goal_aware(cfg, pre, goal, bundle_dir, as_of=cutoff)
        (root / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    enc = UserEncoder.load(bundle_dir, device="cpu")
    model = CohortModel(cfg, namer=make_namer("stats")).fit(pre, enc, as_of=cutoff)
    propensity = PropensityHead.load(bundle_dir).predict(model.embeddings_)
    labels = {v: variant_labels(model, cfg, pre, enc, cutoff, v) for v in VARIANTS}
    ties = {v: expected_rate_order(lab, propensity) for v, lab in labels.items() if v != "no_tie_order"}
    snap = Snapshot(model.user_ids_, segmentations=labels, propensity=propensity, tie_orders=ties)
    rep = run_backtest(events, cutoff, goal, snap, budget=BUDGET, n_boot=boot,
                       rank_window=timedelta(days=quality.CASES[case]["rank_window"])
                       if "rank_window" in quality.CASES.get(case, {}) else None)
    rows = {r.method: r for r in rep.targeting}
    rfm = rows["rfm_segments"]
    out = []
    for v, lab in labels.items():
        r = rows[v]
        out.append({"case": case, "seed": seed, "variant": v, "k": int(len(np.unique(lab))),
                    "precision": r.precision, "recall": r.recall, "rfm_precision": rfm.precision,
                    "vs_rfm": r.vs_rfm, "propensity_precision": rows["propensity_score"].precision})
        print(f"[{case}-{seed}] {v}: k={out[-1]['k']} precision={r.precision:.3f} (RFM {rfm.precision:.3f})",
              flush=True)
    return out


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for case in RUNS:
        rs = [r for r in results if r["case"] == case]
        if not rs:
            continue
        base = {r["seed"]: r for r in rs if r["variant"] == "published"}
        lines += ["", f"**{case}** (seeds {sorted(base)})", "",
                  "| variant | n | precision | Δ precision vs published | vs RFM | cohorts |", "|---|---|---|---|---|---|"]
        for v in VARIANTS:
            vr = [r for r in rs if r["variant"] == v]
            if vr:
                d = [r["precision"] - base[r["seed"]]["precision"] for r in vr if r["seed"] in base]
                lines.append(f"| {v} | {len(vr)} | {_msd([r['precision'] for r in vr])} | {_msd(d, signed=True)} | "
                             f"{_msd([r['vs_rfm'] or 0.0 for r in vr])} | {_msd([r['k'] for r in vr], 1)} |")
    return "\n".join(lines)


NAMES = {"cdnow_90d": "CDNOW, 90 days", "cj_14d": "Complete Journey, 14 days",
         "synth_90d": "demo generator, 90 days", "retail_90d": "retail generator, 90 days"}


def entry(results: list[dict[str, Any]], variant: str) -> str:
    """The docs/decisions.md table of one variant: precision@20% per case, published vs variant."""
    lines = [f"| data (goal: purchase within) | seeds | published | {variant} | Δ paired | noise (Δ of cluster.seed=1) | "
             f"vs RFM segments (published / {variant}) | cohorts (published / {variant}) |", "|---|---|---|---|---|---|---|---|"]
    for case in RUNS:
        rs = [r for r in results if r["case"] == case]
        by = {v: {r["seed"]: r for r in rs if r["variant"] == v} for v in ("published", "seed1", variant)}
        seeds = sorted(set(by["published"]) & set(by[variant]))
        if not seeds:
            continue
        b, v, n = by["published"], by[variant], by["seed1"]
        lines.append(
            f"| {NAMES[case]} | {seeds[0]}-{seeds[-1]} | {_msd([b[s]['precision'] for s in seeds])} | "
            f"{_msd([v[s]['precision'] for s in seeds])} | {_msd([v[s]['precision'] - b[s]['precision'] for s in seeds], signed=True)} | "
            f"{_msd([n[s]['precision'] - b[s]['precision'] for s in seeds if s in n], signed=True)} | "
            f"{_msd([100 * (b[s]['vs_rfm'] or 0) for s in seeds], 1)}% / {_msd([100 * (v[s]['vs_rfm'] or 0) for s in seeds], 1)}% | "
            f"{_msd([b[s]['k'] for s in seeds], 1)} / {_msd([v[s]['k'] for s in seeds], 1)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=None, help="comma-separated case:seed (default: every case's seeds 0-2)")
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--table", action="store_true", help="print the table of the stored results only")
    ap.add_argument("--entry", metavar="VARIANT", help="print VARIANT's docs/decisions.md table from the stored results")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    res_path = OUT / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else []
    if args.entry:
        print(entry(results, args.entry))
        return
    if not args.table:
        runs = ([(c, int(s)) for c, s in (x.split(":") for x in args.runs.split(","))] if args.runs
                else [(c, s) for c, seeds in RUNS.items() for s in seeds])
        for case, seed in runs:
            new = run_one(case, seed, args.boot)
            results = [r for r in results if (r["case"], r["seed"]) != (case, seed)] + new
            res_path.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
