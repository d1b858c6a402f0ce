"""Next-period purchase from `embeddings.parquet` with the probes anyone might write, against RFM.

    python bench/probe_plain.py --data cdnow --cutoff 1997-09-30
    python bench/probe_plain.py --data completejourney --cutoff 2017-07-01
    python bench/probe_plain.py --events /tmp/retail.csv --map "user_id=Customer ID" --map ts=InvoiceDate \\
        --map item=StockCode --map 'amount=Quantity*Price' --set data.event_default=purchase \\
        --set data.mode=lenient --cutoff 2011-09-09

Runs `seqcohort run` (default config plus --set) on the events up to the cut-off, then prints
5-fold out-of-fold ROC AUC of "any purchase in (cutoff, cutoff + horizon]" for the embeddings and
for three RFM sets (raw days / orders / spend, their log1p, and the seven `rfm_features` columns),
each with `LogisticRegression()` on the values as they are, with a `StandardScaler` at C = 1 and
C = 0.1, and with our backtest's probe (penalty and strength chosen by inner CV).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from embeddings.config import load_config  # noqa: E402
from embeddings.data.datasets import load_dataset  # noqa: E402
from embeddings.evaluation.backtest import RFM_COLUMNS, probe_auc  # noqa: E402
from embeddings.evaluation.rfm import rfm_features  # noqa: E402
from seqcohort.pipeline import load_events  # noqa: E402


def plain_predictions(X: np.ndarray, y: np.ndarray, *, scale: bool, C: float = 1.0) -> np.ndarray:
    """5-fold out-of-fold P(y = 1) of `LogisticRegression(C)`, on standardised X when `scale`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(C=C, max_iter=5000)
    if scale:
        model = make_pipeline(StandardScaler(), model)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]


def plain_auc(X: np.ndarray, y: np.ndarray, *, scale: bool, C: float = 1.0) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, plain_predictions(X, y, scale=scale, C=C)))


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", choices=["cdnow", "completejourney"], help="a dataset in ../shared/datasets")
    src.add_argument("--events", type=Path, help="an events file, read as `seqcohort run` reads it")
    ap.add_argument("--map", dest="maps", action="append", default=[])
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--cutoff", required=True, type=datetime.fromisoformat)
    ap.add_argument("--horizon-days", type=float, default=90.0)
    ap.add_argument("--goal-prefix", default="purchase", help="event types starting with this are purchases")
    ap.add_argument("--workspace", type=Path, default=None, help="keep the run here (default: a temp dir)")
    args = ap.parse_args()

    cfg = load_config(overrides=list(args.sets))
    events = (load_dataset(args.data, ROOT.parent / "shared" / "datasets") if args.data
              else load_events(args.events, cfg, args.maps))
    events = events.with_columns(pl.col("user_id").cast(pl.String))
    cut, horizon = args.cutoff, timedelta(days=args.horizon_days)
    pre = events.filter(pl.col("ts") <= cut)
    post = events.filter((pl.col("ts") > cut) & (pl.col("ts") <= cut + horizon))
    with tempfile.TemporaryDirectory() as tmp:
        ws = args.workspace or Path(tmp) / "ws"
        pre.write_parquet(Path(tmp) / "pre.parquet")
        # data.* settings only shape how the file is read; pre.parquet is already canonical events
        sets = [x for s in ["trainer.progress=false", *args.sets] if not s.startswith("data.") for x in ("--set", s)]
        subprocess.run([sys.executable, "-m", "seqcohort", "run", "--events", str(Path(tmp) / "pre.parquet"),
                        "-w", str(ws), *sets], check=True, stdout=subprocess.DEVNULL)
        emb = pl.read_parquet(ws / "current" / "embeddings.parquet")
    users = emb["user_id"].cast(pl.String).to_numpy()
    X = np.stack(emb["embedding"].to_numpy()).astype(np.float64)
    buyers = post.filter(pl.col("event").cast(pl.String).str.starts_with(args.goal_prefix))["user_id"].unique().to_numpy()
    y = np.isin(users, buyers).astype(int)
    f = pl.DataFrame({"user_id": users}).join(rfm_features(pre, cut, log=True), on="user_id", how="left",
                                              maintain_order="left")
    sets_ = {
        "embeddings": X,
        "RFM raw": f.select("recency_days", "frequency", "monetary").to_numpy().astype(np.float64),
        "RFM log": f.select("log_recency_days", "log_frequency", "log_monetary").to_numpy().astype(np.float64),
        "RFM 7 columns": f.select(RFM_COLUMNS).to_numpy().astype(np.float64),
    }
    print(f"{len(y):,} users, base rate {y.mean():.3f}, embedding dim {X.shape[1]}")
    print(f"| probe | {' | '.join(sets_)} |\n|---|{'---|' * len(sets_)}")
    rows = [("LogisticRegression() on the values", dict(scale=False)),
            ("StandardScaler + C = 1", dict(scale=True)), ("StandardScaler + C = 0.1", dict(scale=True, C=0.1))]
    for name, kw in rows:
        print(f"| {name} | " + " | ".join(f"{plain_auc(Z, y, **kw):.4f}" for Z in sets_.values()) + " |")
    print("| ours (embeddings.evaluation.backtest.probe_auc) | " + " | ".join(f"{probe_auc(Z, y)['auc']:.4f}" for Z in sets_.values()) + " |")


if __name__ == "__main__":
    main()
