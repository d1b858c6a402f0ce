"""Quality benchmark: backtest the whole pipeline on real and synthetic logs; print and write a table.

    .venv/bin/python bench/quality.py                       # all cases, default config
    .venv/bin/python bench/quality.py --case cdnow_90d --set trainer.max_steps=300

Cases (cut-off, goal, horizon):
    cdnow_90d     CDNOW, 1997-09-30, purchase within 90 days
    cdnow_273d    CDNOW, 1997-09-30, purchase within 273 days (classic 39/39-week split; segments
                  ranked by their goal rate over the last 90 days, the log starts 39 weeks back)
    cj_90d        Complete Journey sample, 2017-07-01, any purchase within 90 days
    cj_14d        the same within 14 days (base rate 0.49: room between the RFM segments and an
                  oracle, which the 90-day goal, base rate 0.87, does not leave)
    cj_7d         the same within 7 days (base rate 0.34)
    synth_90d     synthetic (5,000 users), 2025-10-01, purchase within 90 days

Writes bench/out/quality.md (table) and bench/out/quality_<case>.json (full reports).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddings.config import load_config  # noqa: E402
from embeddings.evaluation.backtest import BacktestReport, run_backtest  # noqa: E402
from embeddings.evaluation.goals import parse_goal  # noqa: E402

DATA = REPO.parent / "shared" / "datasets"
OUT = REPO / "bench" / "out"

CASES = {
    "cdnow_90d": dict(data="cdnow", cutoff="1997-09-30", horizon="90d"),
    "cdnow_273d": dict(data="cdnow", cutoff="1997-09-30", horizon="273d", rank_window=90),
    "cj_90d": dict(data="cj", cutoff="2017-07-01", horizon="90d"),
    "cj_14d": dict(data="cj", cutoff="2017-07-01", horizon="14d"),
    "cj_7d": dict(data="cj", cutoff="2017-07-01", horizon="7d"),
    "synth_90d": dict(data="synth", cutoff="2025-10-01", horizon="90d"),
}


def load(name: str, synth_users: int):
    from embeddings.data import datasets
    from embeddings.synthetic import synth

    if name == "cdnow":
        return datasets.load_cdnow(DATA / "cdnow"), []
    if name == "cj":
        return datasets.load_completejourney(DATA / "completejourney_sample"), ["purchase_coupon", "purchase_discount"]
    return synth.generate(synth_users, seed=0).events, []


def run_case(case: str, sets: list[str], synth_users: int, intent_weight: float, boot: int,
             bce_weight: float = 0.0) -> tuple[BacktestReport, float]:
    from seqcohort.evaluation import PipelineProducer

    spec = CASES[case]
    cfg = load_config(overrides=["trainer.progress=false", *sets])
    events, aliases = load(spec["data"], synth_users)  # type: ignore[arg-type]
    goal = parse_goal("purchase", spec["horizon"], aliases)  # type: ignore[arg-type]
    rw = spec.get("rank_window")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        producer = PipelineProducer(cfg, goal, tmp, intent_weight=intent_weight, bce_weight=bce_weight)
        rep = run_backtest(events, datetime.fromisoformat(spec["cutoff"]), goal, producer,  # type: ignore[arg-type]
                           n_boot=boot, rank_window=timedelta(days=rw) if rw else None)  # type: ignore[arg-type]
    rep.info["config_overrides"] = sets
    return rep, time.perf_counter() - t0


def markdown(results: dict[str, tuple[BacktestReport, float]]) -> str:
    lines = ["# Backtest quality (bench/quality.py)", "",
             "Linear-probe AUC: 5-fold logistic regression on the users' state at the cut-off, predicting the goal "
             "after it. Targeting: top 20% of users by their segment's goal rate in the window before the cut-off; "
             "precision vs the manual RFM segments at the same budget (95% bootstrap CI over users).", "",
             "| case | users | base rate | AUC RFM | AUC emb (behaviour) | AUC emb+RFM | AUC emb (goal-aware) | "
             "AUC propensity | Brier (base) | prec RFM | prec AI cohorts (vs RFM) | prec goal-aware (vs RFM) | "
             "prec propensity (vs RFM) | ceiling: LR on outcomes (vs RFM) | seconds |",
             "|" + "---|" * 15]

    def prec(rep: BacktestReport, method: str) -> str:
        for r in rep.targeting:
            if r.method == method:
                if r.vs_rfm is None:
                    return f"{r.precision:.3f}"
                return f"{r.precision:.3f} ({r.vs_rfm:+.1%} [{r.vs_rfm_ci[0]:+.1%}, {r.vs_rfm_ci[1]:+.1%}])"  # type: ignore[index]
        return "-"

    for case, (rep, secs) in results.items():
        c = rep.calibration or {}

        def auc(k: str, p: dict = rep.probe) -> str:
            return f"{p[k]['auc']:.4f}" if k in p else "-"

        lines.append(
            f"| {case} | {rep.n_users:,} | {rep.base_rate:.3f} | {auc('rfm_features')} | {auc('embeddings:behaviour')} | "
            f"{auc('embeddings:behaviour+rfm')} | {auc('embeddings:goal_aware')} | {c.get('auc', float('nan')):.4f} | "
            f"{c.get('brier', float('nan')):.4f} ({c.get('brier_base', float('nan')):.4f}) | {prec(rep, 'rfm_segments')} | "
            f"{prec(rep, 'ai_behaviour_cohorts')} | {prec(rep, 'goal_aware_cohorts')} | "
            f"{prec(rep, 'propensity_score')} | {prec(rep, 'ceiling_rfm_lr_on_outcomes')} | {secs:.0f} |")
    lines += ["", "Config overrides: " + ", ".join(
        f"{k}: {' '.join(r.info.get('config_overrides') or ['defaults'])}" for k, (r, _) in results.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=list(CASES), help="Run only these cases (repeatable).")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="Config override, e.g. trainer.max_steps=300.")
    ap.add_argument("--synth-users", type=int, default=5000)
    ap.add_argument("--intent-weight", type=float, default=0.5)
    ap.add_argument("--bce-weight", type=float, default=0.0, help="Weight of the goal's BCE term in training.")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT / "quality.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {}
    for case in args.case or list(CASES):
        rep, secs = run_case(case, args.sets, args.synth_users, args.intent_weight, args.boot, args.bce_weight)
        results[case] = (rep, secs)
        print(f"\n=== {case} ({secs:.0f}s)\n{rep.to_table()}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        (args.out.parent / f"quality_{case}.json").write_text(json.dumps(rep.to_dict(), indent=2, default=str))
        args.out.write_text(markdown(results))  # after every case: a long run still leaves a table
    print(markdown(results))


if __name__ == "__main__":
    main()
