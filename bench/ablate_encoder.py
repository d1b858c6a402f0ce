"""Ablation of the encoder's post-training parts and the cohort stages, on the same trained encoders.

    nice -n 10 .venv/bin/python bench/ablate_encoder.py [--runs app:11,cdnow:0] [--variants baseline,no_recency]

Contrastive training shapes only the learned part of an embedding (`EventEncoder.learned`); the
state coordinates (recency, frequency, monetary, visits), the habit profile and the denoising
projection are added after it. So each of them can be switched off, or re-weighted, on the encoder
a run already trained, with no retraining: every variant here rebuilds the trained encoder with one
`EncoderConfig` change (refitting the profile's PCA or the denoising basis on the training users
where the change needs it), re-embeds every user, and scores the cohorts.

The trained encoders are bench/ablate_clustering.py's kept workspaces (bench/out/ablate/<family>-<seed>/,
trained there when missing), so the data seeds, sizes, cut-offs and scores are that script's:
generators (demo 0-2, app 11-13, markov 21-23): ARI against the planted archetypes, all users and 4+
events; real logs (CDNOW, Complete Journey, training seeds 0-2): recall of next-90-day buyers when
the top 20% of users are targeted by cohort goal rate.

Two kinds of variant:
- embedding (`EMBEDDING`): re-embed with the changed encoder, cluster as `pipeline.fit_clusters`
  does, everyone to the nearest centroid (as ablate_clustering scores its variants);
- cohort (`COHORT`): the published assignment — clusters, calibrated confidence and the short-history
  head (`CohortModel.fit`'s steps) on the stored embeddings, with one `cluster.*` setting changed;
  scored also on the 1-3-event users (ARI) and by the confidence's calibration (ECE: confidence vs
  "the user's cohort is the one most of their archetype is in").

`seed1`, the clusters fitted with another k-means seed, is the yardstick for "within noise".
Raw numbers: bench/out/ablate/encoder_results.json (a rerun only computes what is missing).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import ablate_clustering as ac  # noqa: E402

from embeddings.cohorts.calibrate import calibrate_confidence, history_lengths, user_counts  # noqa: E402
from embeddings.cohorts.model import fit_cohorts  # noqa: E402
from embeddings.config import Config  # noqa: E402
from embeddings.data.datasets import load_dataset  # noqa: E402
from embeddings.features.featurizer import Featurizer, SequenceData  # noqa: E402
from embeddings.model.bundle import Bundle, load_bundle  # noqa: E402
from embeddings.model.embed import UserEncoder, read_embeddings  # noqa: E402
from embeddings.model.encoder import EncoderConfig, EventEncoder  # noqa: E402
from training.denoise import fit_learned_basis  # noqa: E402
from training.profile_select import fit_profile  # noqa: E402
from training.train import state_stats  # noqa: E402

RUNS = {"demo": [0, 1, 2], "app": [11, 12, 13], "markov": [21, 22, 23], "cdnow": [0, 1, 2],
        "completejourney": [0, 1, 2]}


def load_trained(path: Path) -> Bundle:
    """The run's bundle; one written as format 1 (before `learned_dim`) is read by converting its
    config in memory: the same weights, `dim` = learned + fixed outputs. The baseline variant checks
    that the result reproduces the stored embeddings."""
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != "seqcohort.bundle/1":
        return load_bundle(path)
    d = json.loads((path / "config.json").read_text())
    assert d.pop("frequency_history", True), "format-1 bundles with per-view frequency are not read"
    total = d.pop("dim")
    probe = EncoderConfig.from_dict({**d, "learned_dim": 2})
    cfg = replace(probe, learned_dim=total - probe.n_fixed)
    enc = EventEncoder(cfg)
    enc.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    feat = Featurizer.from_dict(json.loads((path / "featurizer.json").read_text()))
    return Bundle(enc.eval(), feat, manifest)


def rebuilt(enc: EventEncoder, cfg: EncoderConfig, **buffers: torch.Tensor) -> EventEncoder:
    """`enc`'s weights in a module built from `cfg`; buffers the new config has no place for (or
    another shape: a refit follows) are dropped."""
    new = EventEncoder(cfg)
    shapes = {k: v.shape for k, v in new.state_dict().items()}
    state = {k: v.detach().clone() for k, v in enc.state_dict().items() if shapes.get(k) == v.shape}
    state.update(buffers)
    new.load_state_dict({**new.state_dict(), **state}, strict=True)
    return new.eval()


Ctx = tuple[EventEncoder, Featurizer, SequenceData, Config]
# name: (encoder, featurizer, training users, run config) -> the changed encoder
EMBEDDING: dict[str, Callable[[EventEncoder, Featurizer, SequenceData, Config], EventEncoder]] = {
    "baseline": lambda e, f, d, c: e,
    "seed1": lambda e, f, d, c: e,  # same embeddings, k-means seed 1 (see `cluster_config`)
    "no_recency": lambda e, f, d, c: rebuilt(e, replace(e.cfg, recency=0.0)),
    "recency_log": lambda e, f, d, c: rebuilt(e, replace(e.cfg, recency_shape="log", **_stats(d, f, "log", "recency"))),
    "no_frequency": lambda e, f, d, c: rebuilt(e, replace(e.cfg, frequency=0.0)),
    "no_monetary": lambda e, f, d, c: rebuilt(e, replace(e.cfg, monetary=0.0)),
    "monetary_0.2": lambda e, f, d, c: rebuilt(e, replace(e.cfg, monetary=0.2 if e.cfg.monetary else 0.0)),
    "no_visits": lambda e, f, d, c: rebuilt(e, replace(e.cfg, visits=0.0)),
    "no_state": lambda e, f, d, c: rebuilt(e, replace(e.cfg, recency=0.0, frequency=0.0, monetary=0.0, visits=0.0)),
    "no_profile": lambda e, f, d, c: rebuilt(e, replace(e.cfg, profile=0.0)),
    "profile_dim_8": lambda e, f, d, c: _profile(e, f, d, c, profile_dim=8),
    "profile_dim_16": lambda e, f, d, c: _profile(e, f, d, c, profile_dim=16),
    "profile_dim_24": lambda e, f, d, c: _profile(e, f, d, c, profile_dim=24),
    "category_1": lambda e, f, d, c: _category(e, f, d, c, 1.0),
    "no_denoise": lambda e, f, d, c: rebuilt(e, replace(e.cfg, learned_rank=0)),
    "denoise_0.5": lambda e, f, d, c: _denoise(e, f, d, c, 0.5),
}
# name: cluster config overrides for the published assignment (CohortModel.fit's steps)
COHORT: dict[str, dict[str, Any]] = {
    "published": {},
    "no_short_head": {"short_history_windows": 0},
    "no_calibration": {"calibration_crops": 0},
}
VARIANTS = [*EMBEDDING, *COHORT]


def _stats(data: SequenceData, featurizer: Featurizer, shape: str, name: str) -> dict[str, float]:
    s = state_stats(data, featurizer, shape)
    return {f"{name}_mean": s[f"{name}_mean"], f"{name}_std": s[f"{name}_std"]}


def _profile(enc: EventEncoder, f: Featurizer, data: SequenceData, cfg: Config, **change: Any) -> EventEncoder:
    if not enc.cfg.n_profile:
        return enc
    return fit_profile(rebuilt(enc, replace(enc.cfg, **change)), f, data, seed=cfg.trainer.seed)


def _category(enc: EventEncoder, f: Featurizer, data: SequenceData, cfg: Config, weight: float) -> EventEncoder:
    fields = dict(enc.cfg.profile_fields)
    if "category" not in fields or fields["category"] == weight:
        return enc
    return _profile(enc, f, data, cfg, profile_fields={**fields, "category": weight})


def _denoise(enc: EventEncoder, f: Featurizer, data: SequenceData, cfg: Config, agreement: float) -> EventEncoder:
    raw = rebuilt(enc, replace(enc.cfg, learned_rank=0))
    return fit_learned_basis(raw, f, data, min_agreement=agreement, seed=cfg.trainer.seed)[0]


def cluster_config(cfg: Config, variant: str) -> Config:
    over = {"seed": 1} if variant == "seed1" else COHORT.get(variant, {})
    return cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update=over)})


# ----------------------------------------------------------------------------- scoring


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |share correct - mean confidence| over equal-width bins, weighted."""
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(correct[idx == b].mean() - conf[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def score_cohort(root: Path, user_ids: np.ndarray, assigned: np.ndarray, conf: np.ndarray) -> dict[str, float]:
    """ARI (all, 1-3 events) and ECE of a published assignment against the planted archetypes."""
    truth = pl.read_parquet(root / "truth.parquet").with_columns(pl.col("user_id").cast(pl.String))
    a = pl.DataFrame({"user_id": user_ids.astype(str), "cohort_id": assigned, "conf": conf}).join(truth, on="user_id")
    major = a.group_by("cohort_id").agg(pl.col("archetype").mode().first().alias("major"))
    a = a.join(major, on="cohort_id")
    short = a.filter(pl.col("short_history"))
    correct = (a["archetype"] == a["major"]).to_numpy()
    is_short = a["short_history"].to_numpy()
    conf = a["conf"].to_numpy()
    return {"ari": float(adjusted_rand_score(a["archetype"], a["cohort_id"])),
            "ari_short": float(adjusted_rand_score(short["archetype"], short["cohort_id"])) if short.height else float("nan"),
            "ece": ece(conf, correct), "ece_short": ece(conf[is_short], correct[is_short]) if is_short.any() else float("nan"),
            "mean_conf": float(conf.mean())}


def probe_noise(family: str, seed: int = 0, boot: int = 200) -> float:
    """Sampling sd of the baseline probe AUC: the out-of-fold predictions' AUC over `boot` bootstrap
    resamples of the users (the yardstick for probe differences; a seed change of the clusters
    leaves the embeddings, so the probe, as they are)."""
    from probe_plain import plain_predictions
    from sklearn.metrics import roc_auc_score

    user_ids, X = read_embeddings(ac.OUT / f"{family}-{seed}" / "ws" / "current" / "embeddings.parquet")
    y = labels(family, user_ids)
    p = plain_predictions(X.astype(np.float64), y, scale=True)
    rng = np.random.default_rng(0)
    return float(np.std([roc_auc_score(y[i], p[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(boot))]))


@functools.cache
def _buyers(family: str) -> frozenset[str]:
    """Users who purchased within 90 days after the family's cut-off (the log is read once)."""
    cut = ac.REAL[family][0]
    full = load_dataset(family, ac.DATASETS).with_columns(pl.col("user_id").cast(pl.String))
    return frozenset(full.filter((pl.col("ts") > cut) & (pl.col("ts") <= cut + ac.HORIZON)
                                 & pl.col("event").cast(pl.String).str.starts_with("purchase"))["user_id"].to_list())


def labels(family: str, user_ids: np.ndarray) -> np.ndarray:
    """1 for the users who purchased within 90 days after the family's cut-off."""
    buyers = _buyers(family)
    return np.array([u in buyers for u in user_ids.astype(str)], dtype=np.int64)


def probe(family: str, user_ids: np.ndarray, X: np.ndarray) -> float:
    """5-fold out-of-fold ROC AUC of "purchased within 90 days after the cut-off" from the embeddings
    (standardised, logistic regression at C = 1: bench/probe_plain.py's plain probe)."""
    from probe_plain import plain_auc

    return plain_auc(X.astype(np.float64), labels(family, user_ids), scale=True)


# ----------------------------------------------------------------------------- driver


def run_one(family: str, seed: int, variants: list[str], done: set[str]) -> list[dict[str, Any]]:
    root, events, cfg = ac.prepare(family, seed)
    cur = root / "ws" / "current"
    bundle = load_trained(cur / "encoder")
    as_of = datetime.fromisoformat(json.loads((cur / "version.json").read_text())["as_of"])
    data = bundle.featurizer.transform(events, as_of=as_of)
    lengths = np.asarray(data.lengths)
    stored_ids, stored_X = read_embeddings(cur / "embeddings.parquet")
    trained = UserEncoder(bundle, device="cpu")  # the cohort variants' encoder, as the run published it
    counts = user_counts(events, as_of)
    stored_lengths = history_lengths(counts, stored_ids)
    out = []
    for v in variants:
        if v in done:
            continue
        t0 = time.perf_counter()
        vcfg = cluster_config(cfg, v)
        if v in EMBEDDING:
            enc = EMBEDDING[v](bundle.encoder, bundle.featurizer, data, cfg)
            ue = UserEncoder(Bundle(enc, bundle.featurizer, bundle.manifest), device="cpu")
            user_ids, X = ue.encode(data)
            if v == "baseline":  # the rebuilt pipeline must reproduce what the run published
                assert np.array_equal(user_ids.astype(str), stored_ids.astype(str))
                diff = float(np.abs(X - stored_X).max())
                if diff > 1e-4:
                    print(f"[{family}-{seed}] WARNING: baseline embeddings differ from the stored ones by {diff:.2g}")
            assigned, info = ac.fit_variant(vcfg, "baseline", X, lengths)
            if family in ac.GENERATORS:
                scores = ac.score_generator(root, user_ids, {v: assigned})[v]
            else:
                scores = {**ac.score_real(family, user_ids, {v: assigned})[v], "probe_auc": probe(family, user_ids, X)}
            info["dim"] = int(X.shape[1])
        else:
            km = fit_cohorts(vcfg, stored_X, stored_lengths)
            calibrate_confidence(vcfg, trained, events, as_of, stored_ids, stored_X, km, counts)
            assigned, conf = km.predict_confidence(stored_X)
            info = {"k": int(km.k_)}
            scores = (score_cohort(root, stored_ids, assigned, conf) if family in ac.GENERATORS
                      else ac.score_real(family, stored_ids, {v: assigned})[v])
        info["seconds"] = round(time.perf_counter() - t0, 1)
        row = {"family": family, "seed": seed, "variant": v, **info, **scores}
        print(f"[{family}-{seed}] {v}: " + ", ".join(f"{k}={x:.3f}" if isinstance(x, float) else f"{k}={x}"
                                                     for k, x in row.items() if k not in ("family", "seed", "variant")),
              flush=True)
        out.append(row)
    return out


def table(results: list[dict[str, Any]], variants: list[str]) -> str:
    """Markdown: per family, mean ± sd per variant and the paired change vs its baseline."""
    lines = []
    for fam in RUNS:
        rs = [r for r in results if r["family"] == fam]
        if not rs:
            continue
        gen = fam in ac.GENERATORS
        lines += ["", f"**{fam}** (seeds {sorted({r['seed'] for r in rs})})", ""]
        for kind, names in (("embedding", [v for v in variants if v in EMBEDDING]),
                            ("cohort", [v for v in variants if v in COHORT])):
            base_name = "baseline" if kind == "embedding" else "published"
            metrics = ((["ari", "ari_long"] if kind == "embedding" else ["ari", "ari_short", "ece", "ece_short"]) if gen
                       else ["recall", "probe_auc"] if kind == "embedding" else ["recall"])
            base = {r["seed"]: r for r in rs if r["variant"] == base_name}
            present = [v for v in names if any(r["variant"] == v for r in rs)]
            if not present:
                continue
            lines += ["| variant | n | " + " | ".join(metrics) + " | " + " | ".join(f"Δ {m}" for m in metrics)
                      + " | cohorts |", "|---|---|" + "---|" * (2 * len(metrics) + 1)]
            for v in present:
                vr = [r for r in rs if r["variant"] == v]
                ms = " | ".join(ac._msd([r[m] for r in vr]) for m in metrics)
                ds = " | ".join(ac._msd([r[m] - base[r["seed"]][m] for r in vr if r["seed"] in base], signed=True)
                                for m in metrics)
                lines.append(f"| {v} | {len(vr)} | {ms} | {ds} | {ac._msd([r['k'] for r in vr], 1)} |")
            lines.append("")
    return "\n".join(lines)


NAMES = {"demo": "demo generator", "app": "app generator", "markov": "markov generator", "cdnow": "CDNOW",
         "completejourney": "Complete Journey"}


PROBE_SD: dict[str, float] = {}  # filled by `entry` from probe_noise (training seed 0)


def entry(results: list[dict[str, Any]], variant: str) -> str:
    """The docs/decisions.md table of one variant: per family and metric, default vs variant, the
    paired change and the noise (the paired change of a k-means seed change)."""
    cohort = variant in COHORT
    for fam in ac.REAL:
        if fam not in PROBE_SD and not cohort:
            PROBE_SD[fam] = probe_noise(fam)
    base_name = "published" if cohort else "baseline"
    lines = [f"| data, metric | seeds | default | {variant} | Δ paired | noise (Δ of cluster.seed=1; probe: users' sampling sd) | cohorts (default / {variant}) |",
             "|---|---|---|---|---|---|---|"]
    for fam in RUNS:
        rs = [r for r in results if r["family"] == fam]
        base = {r["seed"]: r for r in rs if r["variant"] == base_name}
        noise = {r["seed"]: r for r in rs if r["variant"] == "seed1"}
        plain = {r["seed"]: r for r in rs if r["variant"] == "baseline"}  # what seed1 changed
        var = {r["seed"]: r for r in rs if r["variant"] == variant}
        seeds = sorted(set(base) & set(var))
        if not seeds:
            continue
        if fam in ac.GENERATORS:
            metrics = [("ari", "ARI all users"), ("ari_short", "ARI 1-3 events"), ("ece_short", "ECE 1-3 events")] \
                if cohort else [("ari_long", "ARI 4+ events")]
        else:
            metrics = [("recall", "recall@20%")] + ([] if cohort else [("probe_auc", "probe AUC")])
        for m, label in metrics:
            nz = (ac._msd([noise[s][m] - plain[s][m] for s in seeds if s in noise and s in plain], signed=True)
                  if m in ("ari", "ari_long", "recall") else f"sampling sd {PROBE_SD[fam]:.3f}" if m == "probe_auc" else "–")
            lines.append(table_row(f"{NAMES[fam]}, {label}", seeds, [base[s] for s in seeds], [var[s] for s in seeds],
                                   m, nz))
    return "\n".join(lines)


def table_row(label: str, seeds: list[int], base: list[dict[str, Any]], var: list[dict[str, Any]], metric: str,
              noise: str | None = None) -> str:
    """One decisions.md row: `metric` of the default and the variant (paired by seed), their change,
    the noise column when given, and the cohort counts."""
    span = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    b, v = [r[metric] for r in base], [r[metric] for r in var]
    cells = [label, span, ac._msd(b), ac._msd(v), ac._msd(list(np.subtract(v, b)), signed=True),
             *([noise] if noise is not None else []),
             f"{ac._msd([r['k'] for r in base], 1)} / {ac._msd([r['k'] for r in var], 1)}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=None, help="comma-separated family:seed (default: " +
                    ", ".join(f"{f} {s}" for f, s in RUNS.items()) + ")")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--table", action="store_true", help="print the table of the stored results only")
    ap.add_argument("--entry", metavar="VARIANT", help="print VARIANT's docs/decisions.md table from the stored results")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    res_path = ac.OUT / "encoder_results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else []
    if args.entry:
        print(entry(results, args.entry))
        return
    if not args.table:
        runs = ([(f, int(s)) for f, s in (x.split(":") for x in args.runs.split(","))] if args.runs
                else [(f, s) for f, seeds in RUNS.items() for s in seeds])
        t0 = time.perf_counter()
        for fam, seed in runs:
            done = {r["variant"] for r in results if (r["family"], r["seed"]) == (fam, seed)}
            results += run_one(fam, seed, variants, done)
            res_path.write_text(json.dumps(results, indent=1))
        print(f"\n{len(runs)} runs in {time.perf_counter() - t0:.0f}s; raw numbers: {res_path}")
    print(table(results, variants))


if __name__ == "__main__":
    main()
