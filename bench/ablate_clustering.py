"""Ablation of SphericalKMeans' special-case stages: each one off alone, on the same embeddings.

    nice -n 10 .venv/bin/python bench/ablate_clustering.py [--runs app:11,cdnow:0] [--variants baseline,no_split]

Trains and embeds each data set ONCE through `seqcohort.pipeline.run` (default config) into a kept
workspace under bench/out/ablate/<family>-<seed>/ (skipped when it exists), then re-clusters the
same embeddings under every variant as `pipeline.fit_clusters` does (fitted on the users
`fit_rows` picks, everyone assigned to the nearest centroid) and scores them:

- generators (data seeds 0-2 / 11-16 / 21-23, training seed 0): ARI against the planted archetypes, all users
  and 4+ events. demo = embeddings.synthetic.synth (4,000 users, as `seqcohort demo`), app =
  bench/heldout_synth.py, markov = bench/markov_synth.py (3,000 users, as bench/heldout_archetypes.py);
- real logs (the training seed varies): trained on events up to the cut-off (as bench/probe_plain.py);
  cohorts ranked by their goal rate in the 90 days before it, top 20% of users targeted
  (`embeddings.evaluation.backtest.run_backtest`): recall of the users who purchased in the 90 days
  after it, and the number of cohorts.

`--check VARIANT` re-fits every kept run with the code as it is now (no switch turned) and compares
with VARIANT's stored labels: after removing a stage, the default fit must equal what was measured.

`seed1` is the baseline with cluster.seed=1: what a change of nothing but the random seed moves,
the yardstick for "within noise". Variants whose switch no longer exists in the code (a removed
stage) are skipped. Per-variant labels are kept in each run's labels.npz, so a rerun only fits
what is missing. Raw numbers: bench/out/ablate/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import heldout_synth  # noqa: E402
import markov_synth  # noqa: E402

import embeddings.cohorts.cluster as cluster  # noqa: E402
from embeddings.cohorts.calibrate import history_lengths, user_counts  # noqa: E402
from embeddings.cohorts.cluster import SphericalKMeans, fit_rows  # noqa: E402
from embeddings.config import ClusterConfig, Config, load_config  # noqa: E402
from embeddings.data.datasets import load_dataset  # noqa: E402
from embeddings.evaluation.backtest import Snapshot, run_backtest  # noqa: E402
from embeddings.evaluation.goals import Goal  # noqa: E402
from embeddings.model.embed import read_embeddings  # noqa: E402
from embeddings.synthetic import synth  # noqa: E402
from seqcohort import pipeline  # noqa: E402

OUT = ROOT / "bench" / "out" / "ablate"  # --out
DATASETS = ROOT.parent / "shared" / "datasets"  # --datasets
SETS: list[str] = []  # --set: config overrides for training (e.g. a quick smoke test into another --out)
HORIZON = timedelta(days=90)
BUDGET = 0.2


def _demo(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    d = synth.generate(n, seed=seed)
    return d.events, d.truth


# family: (generate(n, seed) -> (events, truth), users, --map pairs, seeds)
GENERATORS: dict[str, tuple[Callable[[int, int], tuple[pl.DataFrame, pl.DataFrame]], int, list[str], list[int]]] = {
    "demo": (_demo, 4000, [], [0, 1, 2]),
    "app": (heldout_synth.generate, 3000, [], [11, 12, 13, 14, 15, 16]),  # 14: the seed the whitened retry was built on
    "markov": (markov_synth.generate, 3000, markov_synth.MAPS, [21, 22, 23]),
}
REAL: dict[str, tuple[datetime, list[int]]] = {  # log: (cut-off, training seeds)
    "cdnow": (datetime(1997, 9, 30), [0, 1, 2]),
    "completejourney": (datetime(2017, 7, 1), [0, 1, 2]),
}
FAMILIES = [*GENERATORS, *REAL]


def _no_whiten(orig: Callable[..., Any]) -> Callable[..., Any]:
    def two_modes(self: SphericalKMeans, Xc: np.ndarray, min_size: int, whiten: bool = False) -> Any:
        return None if whiten else orig(self, Xc, min_size, whiten)
    return two_modes


# name: (ClusterConfig overrides, module constant overrides, SphericalKMeans method wrappers)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Callable[[Any], Any]]]] = {
    "baseline": ({}, {}, {}),
    "seed1": ({"seed": 1}, {}, {}),
    "no_split": ({"split_bimodal": False}, {}, {}),
    "no_whiten": ({}, {"WHITEN_DIMS": None}, {"_two_modes": _no_whiten}),
    "no_split_retries": ({}, {"SPLIT_RETRIES": 0}, {}),
    "no_merge": ({"merge_unimodal": False}, {}, {}),
    "no_structure_gate": ({}, {}, {"_has_structure": lambda orig: lambda self: True}),
    "k_tolerance_0": ({"k_tolerance": 0.0}, {}, {}),
    "n_init_3": ({"n_init": 3}, {}, {}),  # the baseline runs the config's 10
    # every stage that was within noise alone, off together (docs/decisions.md)
    "simplified": ({"merge_unimodal": False, "k_tolerance": 0.0}, {"SPLIT_RETRIES": 0}, {}),
}


def applicable(variant: str) -> bool:
    """Whether every switch the variant turns still exists (a removed stage has nothing to ablate)."""
    cfg_kw, consts, methods = VARIANTS[variant]
    return (all(k in ClusterConfig.model_fields for k in cfg_kw) and all(hasattr(cluster, c) for c in consts)
            and all(hasattr(SphericalKMeans, m) for m in methods))


@contextmanager
def patched(variant: str) -> Iterator[None]:
    _, consts, methods = VARIANTS[variant]
    saved_c = {c: getattr(cluster, c) for c in consts}
    saved_m = {m: getattr(SphericalKMeans, m) for m in methods}
    try:
        for c, v in consts.items():
            if v is not None:  # None: present, but only its method wrapper acts
                setattr(cluster, c, v)
        for m, wrap in methods.items():
            setattr(SphericalKMeans, m, wrap(saved_m[m]))
        yield
    finally:
        for c, v in saved_c.items():
            setattr(cluster, c, v)
        for m, f in saved_m.items():
            setattr(SphericalKMeans, m, f)


class StageCounter(logging.Handler):
    """Counts what the fit logged: splits (plain / whitened), merges."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts = {"splits": 0, "whitened_splits": 0, "merges": 0}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("split a cohort"):
            self.counts["splits"] += 1
            self.counts["whitened_splits"] += "whitened" in msg
        elif msg.startswith("merged cohorts"):
            self.counts["merges"] += 1


# ----------------------------------------------------------------------------- data + training


def prepare(family: str, seed: int) -> tuple[Path, pl.DataFrame, Config]:
    """Train + embed once into OUT/<family>-<seed>/ws (kept); (run dir, canonical events seen, cfg)."""
    root = OUT / f"{family}-{seed}"
    root.mkdir(parents=True, exist_ok=True)
    sets = ["trainer.progress=false", *SETS] + ([f"trainer.seed={seed}"] if family in REAL else [])
    cfg = load_config(overrides=sets)
    if family in GENERATORS:
        gen, users, maps, _ = GENERATORS[family]
        path = root / "events.parquet"
        if not (root / "truth.parquet").exists():
            events, truth = gen(users, seed)
            events.write_parquet(path)
            truth.write_parquet(root / "truth.parquet")
        events = pipeline.load_events(path, cfg, maps)
    else:
        maps = []
        cut = REAL[family][0]
        full = load_dataset(family, DATASETS).with_columns(pl.col("user_id").cast(pl.String))
        events = full.filter(pl.col("ts") <= cut)
        path = root / "pre.parquet"
        if not path.exists():
            events.write_parquet(path)
    if not (root / "ws" / "current" / "embeddings.parquet").exists():
        t0 = time.perf_counter()
        print(f"[{family}-{seed}] training + embedding ...", flush=True)
        pipeline.run(path, root / "ws", cfg, maps=maps, events=events)
        (root / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return root, events, cfg


def fit_variant(cfg: Config, variant: str, X: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels of every user under `variant` (fitted as pipeline.fit_clusters fits) and what happened."""
    ccfg = cfg.cluster.model_copy(update=VARIANTS[variant][0])
    rows = fit_rows(ccfg, lengths)
    counter = StageCounter()
    log = logging.getLogger(cluster.__name__)
    log.addHandler(counter)
    t0 = time.perf_counter()
    try:
        with patched(variant):
            km = SphericalKMeans.from_config(ccfg).fit(X if rows is None else X[rows])
    finally:
        log.removeHandler(counter)
    return km.predict(X), {"k": int(km.k_), "fit_seconds": round(time.perf_counter() - t0, 2),
                           "best_silhouette": round(max(km.scores_.values(), default=float("nan")), 4),
                           **counter.counts}


# ----------------------------------------------------------------------------- scoring


def score_generator(root: Path, user_ids: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    truth = pl.read_parquet(root / "truth.parquet").with_columns(pl.col("user_id").cast(pl.String))
    out = {}
    for v, lab in labels.items():
        a = pl.DataFrame({"user_id": user_ids.astype(str), "cohort_id": lab}).join(truth, on="user_id")
        long = a.filter(~pl.col("short_history"))
        out[v] = {"ari": float(adjusted_rand_score(a["archetype"], a["cohort_id"])),
                  "ari_long": float(adjusted_rand_score(long["archetype"], long["cohort_id"]))}
    return out


def score_real(family: str, user_ids: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    full = load_dataset(family, DATASETS).with_columns(pl.col("user_id").cast(pl.String))
    purchases = [e for e in full["event"].unique().to_list() if e.startswith("purchase")]
    goal = Goal("purchase", HORIZON, aliases=tuple(sorted(e for e in purchases if e != "purchase")))
    snap = Snapshot(user_ids.astype(str), segmentations=dict(labels))
    rep = run_backtest(full, REAL[family][0], goal, snap, budget=BUDGET, n_boot=100)
    rows = {r.method: r for r in rep.targeting}
    return {v: {"recall": rows[v].recall, "precision": rows[v].precision,
                "rfm_recall": rows["rfm_segments"].recall} for v in labels}


# ----------------------------------------------------------------------------- driver


def run_one(family: str, seed: int, variants: list[str]) -> list[dict[str, Any]]:
    root, events, cfg = prepare(family, seed)
    cur = root / "ws" / "current"
    user_ids, X = read_embeddings(cur / "embeddings.parquet")
    as_of = datetime.fromisoformat(json.loads((cur / "version.json").read_text())["as_of"])
    lengths = history_lengths(user_counts(events, as_of), user_ids)
    store = root / "labels.npz"
    labels = dict(np.load(store)) if store.exists() else {}
    info_path = root / "variants.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    for v in variants:
        if v in labels:
            continue
        labels[v], info[v] = fit_variant(cfg, v, X, lengths)
        print(f"[{family}-{seed}] {v}: k={info[v]['k']} in {info[v]['fit_seconds']:.0f}s "
              f"(splits {info[v]['splits']}, whitened {info[v]['whitened_splits']}, merges {info[v]['merges']})",
              flush=True)
        np.savez(store, **labels)
        info_path.write_text(json.dumps(info, indent=1))
    if "baseline" in labels:  # the re-fit is the pipeline's own fit: same cohorts as published
        pub = pl.read_parquet(cur / "assignments.parquet").with_columns(pl.col("user_id").cast(pl.String))
        pos = dict(zip(pub["user_id"].to_list(), pub["cohort_id"].to_list(), strict=True))
        mask = lengths >= cfg.cluster.min_events_to_fit
        same = adjusted_rand_score([pos[u] for u in user_ids.astype(str)[mask]], labels["baseline"][mask])
        if same < 0.999:
            print(f"[{family}-{seed}] WARNING: baseline re-fit differs from the published cohorts (ARI {same:.3f})")
    wanted = {v: labels[v] for v in variants if v in labels}
    scores = (score_generator(root, user_ids, wanted) if family in GENERATORS
              else score_real(family, user_ids, wanted))
    return [{"family": family, "seed": seed, "variant": v, **info[v], **scores[v]} for v in wanted]


def check(family: str, seed: int, variant: str) -> float:
    """ARI between the current code's default fit and `variant`'s stored labels (1.0: identical)."""
    root, events, cfg = prepare(family, seed)
    cur = root / "ws" / "current"
    user_ids, X = read_embeddings(cur / "embeddings.parquet")
    as_of = datetime.fromisoformat(json.loads((cur / "version.json").read_text())["as_of"])
    stored = np.load(root / "labels.npz")[variant]
    now, _ = fit_variant(cfg, "baseline", X, history_lengths(user_counts(events, as_of), user_ids))
    return float(adjusted_rand_score(stored, now))


def table(results: list[dict[str, Any]], variants: list[str]) -> str:
    """Markdown: per family, mean ± sd of the metrics per variant and the paired change vs baseline."""
    lines = []
    for fam in FAMILIES:
        rs = [r for r in results if r["family"] == fam]
        if not rs:
            continue
        metrics = ["ari", "ari_long"] if fam in GENERATORS else ["recall"]
        main = metrics[-1]
        base = {r["seed"]: r[main] for r in rs if r["variant"] == "baseline"}
        lines += ["", f"**{fam}** (seeds {sorted({r['seed'] for r in rs})})", "",
                  "| variant | n | " + " | ".join(metrics) + f" | Δ {main} vs baseline | cohorts | fired |",
                  "|---|---|" + "---|" * (len(metrics) + 3)]
        for v in variants:
            vr = [r for r in rs if r["variant"] == v]
            if not vr:
                continue
            ms = " | ".join(_msd([r[m] for r in vr]) for m in metrics)
            d = [r[main] - base[r["seed"]] for r in vr if r["seed"] in base]
            fired = (f"splits {_sum(vr, 'splits')} (whitened {_sum(vr, 'whitened_splits')}), "
                     f"merges {_sum(vr, 'merges')}")
            lines.append(f"| {v} | {len(vr)} | {ms} | {_msd(d, signed=True)} | {_msd([r['k'] for r in vr], 1)} | {fired} |")
    return "\n".join(lines)


def _sum(rs: list[dict[str, Any]], key: str) -> int:
    return int(sum(r[key] for r in rs))


def _msd(x: list[float], digits: int = 3, signed: bool = False) -> str:
    if not x:
        return "–"
    a = np.asarray(x, dtype=np.float64)
    sd = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():{'+' if signed else ''}.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    global OUT, DATASETS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=None, help="comma-separated family:seed (default: every family's seeds)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=OUT, help="kept workspaces, labels and results.json")
    ap.add_argument("--datasets", type=Path, default=DATASETS, help="folder holding cdnow/ and completejourney_sample/")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="training config override key=value")
    ap.add_argument("--check", metavar="VARIANT", default=None,
                    help="re-fit each run with the current code and compare with VARIANT's stored labels")
    args = ap.parse_args()
    OUT, DATASETS = args.out.resolve(), args.datasets
    SETS[:] = args.sets
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger(cluster.__name__).setLevel(logging.INFO)
    logging.getLogger(cluster.__name__).propagate = False
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    skipped = [v for v in variants if not applicable(v)]
    if skipped:
        print(f"skipped (their switch is no longer in the code): {', '.join(skipped)}")
    variants = [v for v in variants if v not in skipped]
    if args.runs:
        runs = [(f, int(s)) for f, s in (x.split(":") for x in args.runs.split(","))]
    else:
        runs = [(f, s) for f in FAMILIES for s in (GENERATORS[f][3] if f in GENERATORS else REAL[f][1])]
    if args.check:
        aris = {f"{f}-{s}": check(f, s, args.check) for f, s in runs}
        print(f"current default fit vs stored {args.check!r} labels (ARI, 1 = identical): "
              + ", ".join(f"{k} {v:.4f}" for k, v in aris.items()))
        raise SystemExit(0 if min(aris.values()) > 0.9999 else 1)
    OUT.mkdir(parents=True, exist_ok=True)
    res_path = OUT / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else []
    t0 = time.perf_counter()
    for fam, seed in runs:
        new = run_one(fam, seed, variants)
        done = {(r["family"], r["seed"], r["variant"]) for r in new}
        results = [r for r in results if (r["family"], r["seed"], r["variant"]) not in done] + new
        res_path.write_text(json.dumps(results, indent=1))
    print(table(results, variants))
    print(f"\n{len(runs)} runs in {time.perf_counter() - t0:.0f}s; raw numbers: {res_path}")


if __name__ == "__main__":
    main()
