"""Archetype recovery of one training configuration (the ablation table in bench/RESULTS.md).

    python bench/ablation_archetypes.py 2000 trainer.max_steps=300 trainer.temperature=0.3

Trains on synthetic users (seed 7), embeds them, clusters them as `seqcohort run` does (fitted
on users with 4+ events, k chosen from the data, everyone assigned) and also with k = 11 over all
users, and prints the ARI against the planted archetypes, the share of short-history users in
their archetype's main cohort, how well each RFM-twin pair (archetypes that differ only in
event order or hour of day) is told apart, and the archetype x cohort crosstab.

Twin separation, per pair, on users with 4+ events of the two archetypes: the ARI of the
cohorts restricted to them (0 when both share one cohort) and the 5-fold accuracy of a linear
probe on the embeddings (0.5 = the encoder cannot tell them apart). `--seed-data N` changes
the synthetic data set; `--heldout` uses bench/heldout_synth.py (a generator the product was not
developed against: 12 archetypes, three twin pairs) instead of `embeddings.synthetic.synth`; `--dump
out.npz` keeps the embeddings, archetypes and cohorts.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embeddings.cohorts.cluster import SphericalKMeans  # noqa: E402
from embeddings.cohorts.model import fit_clusters  # noqa: E402
from embeddings.config import load_config  # noqa: E402
from embeddings.model.embed import UserEncoder  # noqa: E402
from embeddings.synthetic import synth  # noqa: E402
from seqcohort.report import archetype_agreement  # noqa: E402
from training.train import train  # noqa: E402


def twin_separation(
    X: np.ndarray, y: np.ndarray, labels: np.ndarray, long: np.ndarray, pair: tuple[str, str]
) -> tuple[float, float]:
    """(cohort ARI, linear-probe accuracy) between the two archetypes of `pair`, 4+ event users."""
    m = long & np.isin(y, pair)
    yy = (y[m] == pair[0]).astype(int)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    acc = cross_val_score(probe, X[m], yy, cv=5, scoring="accuracy").mean()
    return float(adjusted_rand_score(yy, labels[m])), float(acc)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    args = sys.argv[1:]
    data_seed = 7
    if "--seed-data" in args:
        i = args.index("--seed-data")
        data_seed = int(args[i + 1])
        del args[i : i + 2]
    heldout = "--heldout" in args
    if heldout:
        args.remove("--heldout")
    dump = None
    if "--dump" in args:  # save embeddings, archetypes and cohorts (.npz) to re-analyse
        i = args.index("--dump")
        dump = args[i + 1]
        del args[i : i + 2]
    n, sets = int(args[0]), args[1:]
    if heldout:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from heldout_synth import TWINS, generate

        events, truth_all = generate(n, data_seed)
        pairs = [(a, b) for a, b in TWINS]
    else:
        data = synth.generate(n, seed=data_seed)
        events, truth_all, pairs = data.events, data.truth, list(synth.RFM_TWINS)
    cfg = load_config(overrides=["trainer.progress=false", "trainer.val_fraction=0.0", *sets])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, events, Path(tmp) / "bundle")
    seconds = time.perf_counter() - t0
    enc = UserEncoder(result.bundle)
    seqs = enc.featurize(events)
    X = enc.encode(seqs).vectors
    truth = pl.DataFrame({"user_id": seqs.user_ids.astype(str)}).join(
        truth_all, on="user_id", how="left", maintain_order="left")
    y, long = truth["archetype"].to_numpy(), ~truth["short_history"].to_numpy()
    run = fit_clusters(cfg, X, seqs.lengths)  # as `seqcohort run` clusters
    labels = run.predict(X)
    n_arch = truth["archetype"].n_unique()
    fixed = SphericalKMeans(k=n_arch, n_init=2).fit(X)
    ari = adjusted_rand_score
    agree = archetype_agreement(pl.DataFrame({"user_id": truth["user_id"], "cohort_id": labels}), truth_all, pairs)
    twins = [(pair, *twin_separation(X, y, labels, long, pair)) for pair in pairs]
    twin_txt = " ".join(f"{a[:5]}/{b[:5]} ARI {t_ari:.2f} probe {acc:.2f}" for (a, b), t_ari, acc in twins)
    print(f"{' '.join(sets)} | data seed {data_seed} | train {seconds:.0f}s | k={run.k_} ARI {agree['ari']:.3f} "
          f"long {agree['ari_long']:.3f} short-acc {agree['short_accuracy']:.2f} "
          f"(chance {agree['short_chance']:.2f}) | twins: {twin_txt} | all users k={n_arch}: ARI "
          f"{ari(y, fixed.labels_):.3f}")
    if dump:
        np.savez(dump, X=X, y=y, long=long, labels=labels, lengths=seqs.lengths)
    ct = (pl.DataFrame({"archetype": y, "cohort": labels}).group_by("archetype", "cohort").len()
          .pivot(on="cohort", index="archetype", values="len").fill_null(0).sort("archetype"))
    with pl.Config(tbl_cols=20, tbl_rows=20):
        print(ct.select(["archetype", *sorted((c for c in ct.columns if c != "archetype"), key=int)]))


if __name__ == "__main__":
    main()
