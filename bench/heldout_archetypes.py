"""Archetype recovery on data from a generator the product was not developed against.

    python bench/heldout_archetypes.py --users 3000 --seed 11 [--generator markov] [--set trainer.max_steps=300 ...] [--keep DIR]

Generates an e-commerce log with `bench/heldout_synth.py` (12 archetypes, three RFM-twin pairs:
two differ only in event order inside sessions, one only in hour of day) or, with `--generator
markov`, a shop log from `bench/markov_synth.py` (10 archetypes drawn from per-archetype Markov
chains; an order pair and a weekday/weekend pair; its own column names, read with --map), runs the whole
`seqcohort run` pipeline on it (default config unless `--set`), and prints the agreement of the
published cohorts with the planted archetypes next to RFM + k-means (k = the true number of
archetypes) on the same users: ARI over all users and over users with 4+ events, the share of
short-history users (1-3 events) placed in their archetype's main cohort, and per twin pair
whether the pair's main cohorts differ and the ARI restricted to the pair.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import heldout_synth  # noqa: E402
import markov_synth  # noqa: E402

from embeddings.cohorts.cluster import SphericalKMeans  # noqa: E402
from embeddings.config import load_config  # noqa: E402
from embeddings.evaluation.rfm import rfm_features  # noqa: E402
from seqcohort import pipeline  # noqa: E402
from seqcohort.report import archetype_agreement  # noqa: E402

GENERATORS = {  # name: (module, --map arguments, the purchase event)
    "app": (heldout_synth, [], "purchase"),
    "markov": (markov_synth, markov_synth.MAPS, "checkout"),
}


def rfm_kmeans(events: pl.DataFrame, truth: pl.DataFrame, seed: int, purchase: str = "purchase") -> pl.DataFrame:
    """user_id, cohort_id from k-means on standardised log R, F, M with k = the number of archetypes."""
    as_of = events["ts"].max()
    # sorted: k-means' seeding depends on row order, and polars' group_by / join order does not hold
    f = rfm_features(events, as_of, monetary_event=purchase, log=True).join(truth, on="user_id").sort("user_id")
    R = f.select("log_recency_days", "log_frequency", "log_monetary").to_numpy()
    R = (R - R.mean(0)) / np.where(R.std(0) > 0, R.std(0), 1.0)
    k = truth["archetype"].n_unique()
    # a constant column makes the spherical k-means plain k-means on the standardised features
    labels = SphericalKMeans(k=k, method="kmeans", seed=seed).fit(np.hstack([R, np.ones((len(R), 1))])).labels_
    return pl.DataFrame({"user_id": f["user_id"], "cohort_id": labels.astype(np.int64)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--generator", choices=sorted(GENERATORS), default="app",
                    help="app: bench/heldout_synth.py (scripted sessions); markov: bench/markov_synth.py "
                         "(per-archetype Markov chains, its own column names read with --map)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the data and workspace in this directory (default: a temporary one)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    module, maps, purchase = GENERATORS[args.generator]
    events, truth = module.generate(args.users, args.seed)
    twins = [tuple(p) for p in module.TWINS]
    cfg = load_config(overrides=["trainer.progress=false", *args.sets])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        path = root / "events.parquet"
        events.write_parquet(path)
        truth.write_parquet(root / "truth.parquet")
        log_events = pipeline.load_events(path, cfg, maps)  # canonical columns, as the pipeline reads them
        res = pipeline.run(path, root / "ws", cfg, maps=maps, events=log_events)
        ours = pl.read_parquet(res.version_dir / "assignments.parquet").select("user_id", "cohort_id", "confidence")
    seconds = time.perf_counter() - t0
    rows = {"seqcohort": archetype_agreement(ours, truth, twins),
            "RFM + k-means": archetype_agreement(
                rfm_kmeans(log_events, truth, args.seed, purchase), truth, twins)}
    print(f"held-out generator {args.generator}: {args.users:,} users (seed {args.seed}), {events.height:,} events, "
          f"{truth['archetype'].n_unique()} archetypes; pipeline {seconds:.0f}s, "
          f"{ours['cohort_id'].n_unique()} cohorts; overrides {args.sets or 'none'}")
    head = ["method", "ARI", "ARI 4+ events", "short-history in main cohort (chance)",
            *[f"{a}/{b}" for a, b in twins]]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, agree in rows.items():
        pairs = [f"{'apart' if t['separated'] else 'MERGED'} ({t['ari']:.2f})" for t in agree["twins"]]
        print(f"| {name} | {agree['ari']:.3f} | {agree['ari_long']:.3f} | {agree['short_accuracy']:.0%} "
              f"({agree['short_chance']:.0%}) | " + " | ".join(pairs) + " |")
    a = ours.join(truth, on="user_id")
    print("\narchetype x cohort (users with 4+ events):")
    with pl.Config(tbl_rows=40, tbl_cols=40, tbl_hide_dataframe_shape=True):
        print(a.filter(~pl.col("short_history")).pivot("cohort_id", index="archetype", values="user_id",
                                                         aggregate_function="len", sort_columns=True)
              .fill_null(0).sort("archetype"))
    print(f"(ARI restricted to each pair's 4+ event users; overall {adjusted_rand_score(a['archetype'], a['cohort_id']):.3f})")
    print("\nconfidence by history length (right = in the cohort holding most 4+ event users of the archetype):")
    print(confidence_table(a, log_events))


def confidence_table(a: pl.DataFrame, events: pl.DataFrame) -> str:
    """Markdown rows: users, share right, median and mean confidence per history-length bucket."""
    main = (a.filter(~pl.col("short_history")).group_by("archetype", "cohort_id").len()
            .sort("len", "cohort_id", descending=[True, False]).unique("archetype", keep="first")
            .select("archetype", main="cohort_id"))
    n = events.group_by("user_id").len("n_events").with_columns(pl.col("user_id").cast(pl.String))
    d = a.with_columns(pl.col("user_id").cast(pl.String)).join(n, on="user_id").join(main, on="archetype")
    edges = [(1, 3), (4, 10), (11, 40), (41, 10**9)]
    rows = ["| events | users | right | median confidence | mean confidence |", "|---|---|---|---|---|"]
    for lo, hi in edges:
        g = d.filter(pl.col("n_events").is_between(lo, hi))
        if g.height:
            label = f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"
            rows.append(f"| {label} | {g.height} | {(g['cohort_id'] == g['main']).mean():.0%} | "
                        f"{g['confidence'].median():.2f} | {g['confidence'].mean():.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
