"""Ablation of training choices: retrain every run with one setting changed and score it as the default.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/ablate_training.py --variants order_0 [--runs demo:0]

The choices here shape the learned part itself (the contrastive loss, the views, the summary
token), so unlike bench/ablate_encoder.py each variant needs its own training: every run of
bench/ablate_encoder.py's set (demo 0-2, app 11-13, markov 21-23 data seeds; CDNOW and Complete
Journey training seeds 0-2) is trained again with the variant's `--set` overrides through
`seqcohort.pipeline.run` into bench/out/ablate_train/<variant>/<family>-<seed>/ (kept: a rerun only
trains what is missing), re-clustered as `pipeline.fit_clusters` does and scored against the
`default` variant (no overrides) trained the same way by the same code — so a default changed
since bench/ablate_clustering.py's workspaces were trained cannot leak into a comparison: ARI
against the planted archetypes (4+ events), and on the real logs recall@20% and the plain probe's AUC.

About 45 minutes of training per variant on 2 idle CPU cores; minutes on a GPU machine.
Raw numbers: bench/out/ablate_train/results.json; `--entry VARIANT` prints a docs/decisions.md table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import ablate_clustering as ac  # noqa: E402
import ablate_encoder as ae  # noqa: E402

from embeddings.cohorts.calibrate import history_lengths, user_counts  # noqa: E402
from embeddings.model.embed import read_embeddings  # noqa: E402

DEFAULT = ac.OUT  # ablate_clustering's own output folder, restored after each training
OUT = ROOT / "bench" / "out" / "ablate_train"
# name: config overrides for training (docs/decisions.md names the entry each one measures)
VARIANTS: dict[str, list[str]] = {
    "default": [],  # what every other variant is compared with (run it too)
    "order_0": ["trainer.order_weight=0"],  # shuffled-order negatives off
    "short_views_0": ["trainer.short_view_prob=0"],  # no 1-3-event training views
    "context_on": ["model.context=true"],  # the summary token reads the row's aggregates
    "temperature_0.3": ["trainer.temperature=0.3"],
    "temperature_1.0": ["trainer.temperature=1.0"],
}


def score(family: str, seed: int, root: Path, events: Any, cfg: Any) -> dict[str, Any]:
    """Cohorts (and probe) of the run trained in `root`, scored as bench/ablate_encoder.py scores its baseline."""
    cur = root / "ws" / "current"
    user_ids, X = read_embeddings(cur / "embeddings.parquet")
    as_of = datetime.fromisoformat(json.loads((cur / "version.json").read_text())["as_of"])
    labels, info = ac.fit_variant(cfg, "baseline", X, history_lengths(user_counts(events, as_of), user_ids))
    if family in ac.GENERATORS:
        return {**info, **ac.score_generator(root, user_ids, {"v": labels})["v"]}
    return {**info, **ac.score_real(family, user_ids, {"v": labels})["v"], "probe_auc": ae.probe(family, user_ids, X)}


def run_one(variant: str, family: str, seed: int) -> dict[str, Any]:
    ac.OUT, ac.SETS[:] = OUT / variant, VARIANTS[variant]
    try:
        root, events, cfg = ac.prepare(family, seed)  # trains with the variant's settings when missing
    finally:
        ac.OUT, ac.SETS[:] = DEFAULT, []
    return {"family": family, "seed": seed, "variant": variant, **score(family, seed, root, events, cfg)}


def entry(results: list[dict[str, Any]], variant: str) -> str:
    base = {(r["family"], r["seed"]): r for r in results if r["variant"] == "default"}
    lines = [f"| data, metric | seeds | default | {variant} | Δ paired | cohorts (default / {variant}) |",
             "|---|---|---|---|---|---|"]
    for fam in ae.RUNS:
        rs = {r["seed"]: r for r in results if r["family"] == fam and r["variant"] == variant}
        seeds = sorted(s for s in rs if (fam, s) in base)
        if not seeds:
            continue
        metrics = [("ari_long", "ARI 4+ events")] if fam in ac.GENERATORS else [("recall", "recall@20%"), ("probe_auc", "probe AUC")]
        for m, label in metrics:
            lines.append(ae.table_row(f"{ae.NAMES[fam]}, {label}", seeds, [base[(fam, s)] for s in seeds],
                                      [rs[s] for s in seeds], m))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--runs", default=None, help="comma-separated family:seed (default: bench/ablate_encoder.py's)")
    ap.add_argument("--entry", metavar="VARIANT", help="print VARIANT's docs/decisions.md table from the stored results")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    res_path = OUT / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else []
    if args.entry:
        print(entry(results, args.entry))
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    runs = ([(f, int(s)) for f, s in (x.split(":") for x in args.runs.split(","))] if args.runs
            else [(f, s) for f, seeds in ae.RUNS.items() for s in seeds])
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for v in variants:
        for fam, seed in runs:
            if any((r["variant"], r["family"], r["seed"]) == (v, fam, seed) for r in results):
                continue
            row = run_one(v, fam, seed)
            print(f"[{v}] {fam}-{seed}: " + ", ".join(f"{k}={x:.3f}" for k, x in row.items() if isinstance(x, float)),
                  flush=True)
            results.append(row)
            res_path.write_text(json.dumps(results, indent=1))
        print(entry(results, v))
    print(f"{time.perf_counter() - t0:.0f}s; raw numbers: {res_path}")


if __name__ == "__main__":
    main()
