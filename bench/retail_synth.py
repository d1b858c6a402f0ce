"""A line-level retail log shaped like the UCI Online Retail data, for scale and robustness checks.

    python bench/retail_synth.py --customers 6000 --out /tmp/retail.csv

Columns as in Online Retail II: Invoice ("C..." = a cancellation, negative quantities), StockCode,
Quantity, InvoiceDate (text), Price (unit price), "Customer ID" (20% of lines null, as in the real
log, so strict reading fails and lenient reading quarantines them). Customers buy in invoices of
many lines at one timestamp; invoice rates are log-normal (a few wholesalers with thousands of
lines), 40% of customers churn at a random time. Whether a customer buys in a period depends only
on their rate and churn, so RFM features are close to sufficient here: this checks that the
pipeline reads, scales to and stays calibrated on such a log, not that sequences add anything.
Then e.g.:

    seqcohort evaluate --events /tmp/retail.csv --map "user_id=Customer ID" --map ts=InvoiceDate \\
        --map item=StockCode --map 'amount=Quantity*Price' --set data.event_default=purchase \\
        --set data.mode=lenient --cutoff 2011-09-09 --goal purchase --horizon 90d
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

START, END = datetime(2009, 12, 1), datetime(2011, 12, 9)
N_ITEMS = 3000


def generate(customers: int, seed: int = 0, null_share: float = 0.2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    span = (END - START).total_seconds()
    rate = rng.lognormal(np.log(4), 1.1, customers)  # invoices per year
    first = rng.uniform(0, 0.9, customers) * span
    churn = np.where(rng.random(customers) < 0.4, first + rng.exponential(0.3 * span, customers), span)
    lines_per_invoice = rng.lognormal(np.log(12), 0.9, customers)
    codes = np.array([f"{rng.integers(10000, 99999)}{c}".strip() for c in rng.choice(list("ABCD "), N_ITEMS)])
    inv, item, qty, ts, cust = [], [], [], [], []
    for c in range(customers):
        t = first[c]
        while True:
            t += rng.exponential(365 * 86400 / rate[c])
            if t > min(churn[c], span):
                break
            k = max(1, int(rng.poisson(lines_per_invoice[c])))
            cancel = rng.random() < 0.02
            number = ("C" if cancel else "") + str(500000 + len(inv))
            inv += [number] * k
            item += codes[rng.integers(0, N_ITEMS, k)].tolist()
            qty += (rng.integers(1, 25, k) * (-1 if cancel else 1)).tolist()
            ts += [START + timedelta(seconds=float(t))] * k
            cust += [float(12000 + c)] * k
    df = pl.DataFrame({"Invoice": inv, "StockCode": item, "Quantity": qty, "InvoiceDate": ts,
                       "Price": np.round(rng.lognormal(1, 0.8, len(inv)), 2), "Customer ID": cust})
    missing = pl.lit(rng.random(df.height) < null_share)
    return df.with_columns(
        pl.when(missing).then(None).otherwise(pl.col("Customer ID")).alias("Customer ID"),
        pl.col("InvoiceDate").dt.strftime("%Y-%m-%d %H:%M:%S"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    df = generate(args.customers, args.seed)
    df.write_csv(args.out)
    per = df.drop_nulls("Customer ID").group_by("Customer ID").len()["len"]
    print(f"wrote {df.height:,} lines of {per.len():,} customers to {args.out}; lines per customer: "
          f"median {per.median():.0f}, max {per.max():,}, {float((per > 128).mean()):.0%} above 128")


if __name__ == "__main__":
    main()
