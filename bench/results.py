"""Regenerate bench/RESULTS.md: the current numbers, with the commit and the machine in its header.

    make results                                  # = python bench/results.py
    python bench/results.py --out /tmp/RESULTS.md --workdir /tmp/results --keep

Runs the benchmarks that finish in a few minutes on 2 CPU cores, each as the command a user would
type (printed beside its numbers): the demo end to end (`seqcohort demo --no-serve`) with its
archetype recovery read off the published workspace, the naming faithfulness of the demo's
names, and embedding / training throughput (CUDA rows too when torch sees a GPU). A few minutes
on 2 idle cores; far longer on a busy machine, whose load the header records.

Slower benchmarks are carried from their last recorded run (`CARRIED` below), each with its own
command and the commit and machine it ran at. After rerunning one, update its row here and log
the dated run in bench/LOG.md. RESULTS.md holds no history: that is LOG.md's job.

Nothing is written unless every benchmark ran: a failure leaves the old RESULTS.md in place.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine  # noqa: E402

OUT = ROOT / "bench" / "RESULTS.md"
LOG = "LOG.md"  # relative to bench/


@dataclass(frozen=True)
class Carried:
    """A row measured by a benchmark too slow for `make results`, kept until someone reruns it."""

    what: str
    result: str
    command: str
    at: str  # commit (and machine where it is not 2 CPU cores)
    log: str  # heading of the LOG.md section with the run and its story


CPU2 = "2 CPU cores (AMD EPYC), no GPU"
PROBES = ("Linear probes as anyone might write them: noise directions dropped, square-root recency, visits "
          "(2026-11-24, eighth session)")

CARRIED: tuple[Carried, ...] = (
    Carried(
        "`seqcohort run` by number of users: 20,000 / 200,000 / 1,000,000 synthetic users (1.6 / 16.3 / 81.5 M events)",
        "177 s / 266 s (1.50x, back to back) / 432 s wall; peak RSS 2.2 / 3.6 / 8.2 GiB; ARI vs planted 0.965 / 0.967 / "
        "0.967 (the million in an earlier call of the same command)",
        "`python bench/scale_curve.py --users 20000 200000 1000000`",
        f"0e8e7af, {CPU2}",
        "seqcohort run by number of users, memory bounded (2026-12-08)",
    ),
    Carried(
        "Item titles (sentence-transformers) on a catalogue migration: app generator, 2,000 users, category "
        "removed, new users' item ids renamed",
        "1–3-event users in their archetype's cohort 0.557 ± 0.017 with titles vs 0.485 ± 0.027 without "
        "(+0.073 ± 0.042, seeds 1–3); ARI 0.781 ± 0.005 vs 0.742 ± 0.010; titles encoded 24/s on 2 cores at load 10; "
        "`/v1/assign` with titles p99 21.2 vs 11.5 ms at 8 clients, 766 vs 930 requests/s at 32 (2026-12-08, "
        "`python bench/serve_latency.py --titles`, bench/LOG.md)",
        "`python bench/item_text.py quality --generator app --users 2000 --seeds 1 2 3`; "
        "`OMP_NUM_THREADS=2 python bench/item_text.py cost`",
        f"e75395e, {CPU2}",
        "Item titles through sentence-transformers (2026-12-07)",
    ),
    Carried(
        "`seqcohort refresh` vs a full `run`, 20,000 synthetic users, a week of new events (87,040 events of 9,289 users)",
        "refresh 5.5 s vs full run 162.6 s (3.4%), back to back; 0.0% of users without new events and 1.4% "
        "of active ones changed cohort; 3.5 GiB peak",
        "`python bench/refresh_cost.py --users 20000 --days 7`",
        f"4dcede8, {CPU2}",
        "Refresh cost (20,000 users, 7 days new)",
    ),
    Carried(
        "`seqcohort run`, 20,000 synthetic users (1.64M events)",
        "2 min 07 s wall (train 89 s), 2.8 GB peak RSS; ARI vs planted archetypes 0.963 (4+ events 0.988); "
        "1–3-event users in their archetype's cohort 73% (chance 12%); both twin pairs apart",
        "`seqcohort synth --users 20000 --out DIR`, then "
        "`/usr/bin/time -v seqcohort run --events DIR/events.parquet --workspace DIR/ws`",
        f"7a5f52d, {CPU2}",
        PROBES,
    ),
    Carried(
        "Archetypes from a generator written separately (`bench/heldout_synth.py`: 12 archetypes, "
        "three RFM-twin pairs)",
        "ARI 0.839 / 0.836 / 0.826 / 0.833 / 0.835 / 0.830 on data seeds 11–16 (4+ events 0.927–0.940); "
        "12 cohorts (11 on seed 16); all three twin pairs apart on every seed; 1–3-event users 56–58% right "
        "(chance 10–11%); RFM + k-means 0.065–0.084",
        "`python bench/heldout_archetypes.py --users 3000 --seed S` (seed 12: `--users 4000`)",
        f"cbbdd37, {CPU2}",
        "Splitting on whitened coordinates; the held-out generator's new users keep their hours "
        "(2026-11-24, 17:20–18:10 UTC)",
    ),
    Carried(
        "Archetypes from a third generator (`bench/markov_synth.py`: per-archetype Markov chains, "
        "10 archetypes, an order pair and a weekday/weekend pair, its own column names)",
        "ARI 0.830 / 0.817 / 0.858 / 0.841 on data seeds 21–24 (4+ events 0.953–0.971); both twin pairs "
        "apart; 1–3-event users 57–59% right (chance 13%); RFM + k-means 0.080 (seed 21)",
        "`python bench/heldout_archetypes.py --generator markov --users 3000 --seed S` (seed 22: `--users 4000`)",
        f"7a5f52d (seed 24: 8ee8545), {CPU2}",
        PROBES,
    ),
    Carried(
        "Next-90-day purchase, linear probe AUC (penalty and strength chosen by inner CV for every "
        "feature set alike)",
        "CDNOW: behaviour embedding **0.7779**, goal-aware 0.7769, RFM features 0.7763, propensity 0.7758. "
        "Complete Journey: **0.8436** / 0.8452 vs 0.8433, propensity 0.8425",
        "`python bench/quality.py --case cdnow_90d --case cj_90d --set trainer.max_steps=300 --boot 500`",
        f"0cc68a2, {CPU2}",
        PROBES,
    ),
    Carried(
        "Targeting at a 20% budget vs the manual RFM segments, 90 days",
        "goal-aware cohorts: CDNOW +6.1% [+3.9%, +8.2%] (ceiling +6.1%), Complete Journey +0.5% "
        "[−0.7%, +1.6%] (ceiling +0.2%: 87% of households buy again). Behaviour cohorts, not built for a "
        "goal: −11.1% / −2.3%",
        "same command",
        f"0cc68a2, {CPU2}",
        PROBES,
    ),
    Carried(
        "Targeting where the data leaves room: Complete Journey, purchase within 14 / 7 days "
        "(base rate 0.49 / 0.34)",
        "goal-aware cohorts **+15.1%** [+8.9%, +22.1%] / **+26.2%** [+16.6%, +37.7%] over the manual RFM "
        "segments (a regression fitted on the outcomes themselves: +14.2% / +25.8%)",
        "`python bench/quality.py --case cj_14d --case cj_7d --case cdnow_90d --set trainer.max_steps=300 --boot 500`",
        f"22a5b49, before the encoder changes of 2b32047 and 0cc68a2; {CPU2}",
        "Goal-aware cohorts ranked by last period's goal rate: cutting tiers by \"reached the goal lately\" "
        "(`cluster.split_recent`)",
    ),
    Carried(
        "The probes anyone might write on `embeddings.parquet` (`LogisticRegression()` as is / after "
        "`StandardScaler`) vs the same on RFM (raw days, orders, spend / their log)",
        "CDNOW **0.7772 / 0.7777** vs 0.7726 / 0.7762; a line-level retail log 0.8103 / 0.8108 vs 0.8113 / "
        "0.8031; Complete Journey 0.8336 / 0.8397 vs 0.8426 / 0.8447",
        "`python bench/probe_plain.py --data cdnow --cutoff 1997-09-30` (and `--data completejourney "
        "--cutoff 2017-07-01`; the retail line is in the script's docstring)",
        f"0cc68a2, {CPU2}",
        PROBES,
    ),
    Carried(
        "A line-level retail log shaped like Online Retail II (714k lines, 20% without a customer id, "
        "quantity × price, cancellations)",
        "`seqcohort evaluate` in 3 min 35 s, 1.9 GB peak RSS; probe **0.8122** (behaviour) / 0.8120 "
        "(goal-aware) vs RFM 0.8029; goal-aware cohorts +4.0% [+0.9%, +7.3%] over the RFM segments "
        "(ceiling +4.4%); propensity ECE 0.017",
        "`python bench/retail_synth.py --customers 6000 --out DIR/retail2.csv`, then `/usr/bin/time -v "
        "seqcohort evaluate --events DIR/retail2.csv --map \"user_id=Customer ID\" --map ts=InvoiceDate "
        "--map item=StockCode --map 'amount=Quantity*Price' --set data.event_default=purchase "
        "--set data.mode=lenient --cutoff 2011-09-09 --goal purchase --horizon 90d`",
        f"df287f7, {CPU2}",
        PROBES,
    ),
    Carried(
        "`POST /v1/assign` at the URL `seqcohort serve` prints (direct ingress, models in the ingress replica), "
        "1–20-event live sessions, client on the same cores",
        "p50 / p99 16.5 / 36.5 ms at concurrency 8, 558 requests/s at 32, 0 errors (targets p99 ≤ 50 ms, "
        "≥ 300 requests/s: met); in-process one request at a time p50 2.7 ms. Same run: Serve's proxy (the old "
        "printed URL) 97 / 118 requests/s at 8 / 32; separate Encoder and Assigner deployments p99 65.2 ms at 8, "
        "392 requests/s at 32. `--chaos`: the Encoder replica killed (separate deployments) 0 requests failed, "
        "back under 200 ms in 4.5 s; the Ingress replica killed (models in it) requests failed until it was back "
        "on its port, 12.0 s",
        "`python bench/serve_latency.py --workspace DIR --requests 2000 --events 1-20 --layout both --chaos` "
        "on a demo workspace",
        f"761896b, {CPU2}, load average 1.9 → 4.1 (other sessions' jobs)",
        "Serving latency",
    ),
    Carried(
        "On a GPU: one NVIDIA H200, 16 CPU cores, torch 2.11.0+cu130",
        "embedding 40,322 users/s (batch 1,024), training 15,967 sequences/s; `seqcohort run` on the "
        "20,000 users 49 s (train 26 s); the test suite without the serving files: 319 passed",
        "`bash bench/gpu_session.sh` on the device machine (its `STEPS` name each part)",
        "9427467 (suite: 07a191e), one NVIDIA H200",
        "GPU: the whole pipeline and the test suite on the device machine",
    ),
)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def _cli(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("seqcohort")
    return [str(exe), *args] if exe.is_file() else [sys.executable, "-m", "seqcohort", *args]


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], what: str) -> tuple[str, float, float]:
    """Run one benchmark command from the repository root; (stdout, wall s, CPU s). Fails loudly."""
    print(f"[results] {what}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    t0, c0 = time.perf_counter(), _cpu_children()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
        raise SystemExit(f"[results] {what} failed (exit {p.returncode}); RESULTS.md left as it was.\n{tail}")
    print(f"[results] {what}: {dt:.0f} s wall, {cpu:.0f} s CPU", file=sys.stderr, flush=True)
    return p.stdout, dt, cpu


def _minutes(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def demo(workdir: Path) -> tuple[list[str], Path]:
    """`seqcohort demo --no-serve` in a fresh workspace; archetype recovery read off what it published."""
    import polars as pl

    from embeddings.workspace import Workspace
    from seqcohort.report import archetype_agreement, twin_summary

    ws = workdir / "demo"
    shutil.rmtree(ws, ignore_errors=True)
    _, secs, cpu = _run(_cli("demo", "--workspace", str(ws), "--no-serve"), "demo")
    cur = Workspace(ws).current()
    assignments = pl.read_parquet(cur / "assignments.parquet")
    truth = pl.read_parquet(ws / "data" / "truth.parquet")
    a = archetype_agreement(assignments, truth)
    n_archetypes = truth["archetype"].n_unique()
    rows = [
        "## Demo: synthetic log to named cohorts",
        "",
        "`seqcohort demo --workspace DIR --no-serve` (what `make demo` runs, without serving): 4,000 synthetic "
        f"users with {n_archetypes} planted archetypes (`configs/demo.yaml`), trained, clustered, named and "
        "published; agreement read off the published `assignments.parquet` against the planted truth "
        "(`seqcohort.report.archetype_agreement`).",
        "",
        "| what | result |",
        "|---|---|",
        f"| wall time, synthetic data to named cohorts | {_minutes(secs)} (CPU time {_minutes(cpu)}) |",
        f"| cohorts | {assignments['cohort_id'].n_unique()} |",
        f"| adjusted Rand index vs the planted archetypes | **{a['ari']:.3f}** (users with 4+ events {a['ari_long']:.3f}) |",
        f"| users with 1–3 events in their archetype's main cohort | {a['short_accuracy']:.0%} (chance {a['short_chance']:.0%}) |",
        f"| RFM twins (same recency, frequency and spend; other order or hour) | {twin_summary(a)} |",
        "",
    ]
    return rows, ws


def naming(demo_ws: Path) -> list[str]:
    """Naming faithfulness of the names the demo published (no re-training, no re-naming)."""
    cmd = [sys.executable, "bench/naming_faithfulness.py", "--reuse", "--keep-names", "--workspace", str(demo_ws)]
    out, _, _ = _run(cmd, "naming faithfulness")
    m = re.search(r"^\| (\S+) \| (\d+) \| \*\*(\d+)%\*\* \((\d+)/(\d+)\) \| (\d+)% \| (\d+)% \| (\d+)% \|$", out, re.M)
    if m is None:
        raise SystemExit(f"[results] naming faithfulness: no summary row in its output:\n{out[-2000:]}")
    namer, n, acc, hits, _, top2, weighted, purity = m.groups()
    return [
        "## Naming faithfulness",
        "",
        "`python bench/naming_faithfulness.py --reuse --keep-names --workspace DIR` on the demo's workspace: "
        "each cohort's \"name. description\" and each planted archetype's one-line description embedded "
        "with all-MiniLM-L6-v2; a hit is a cohort whose closest archetype description is the archetype most "
        "of its members belong to. Target: 70%.",
        "",
        "| namer | cohorts | faithfulness (top-1) | top-2 | top-1 weighted by users | mean purity |",
        "|---|---|---|---|---|---|",
        f"| {namer} | {n} | **{acc}%** ({hits}/{n}) | {top2}% | {weighted}% | {purity}% |",
        "",
    ]


def throughput() -> list[str]:
    """bench/embed_throughput.py's own table, as printed."""
    out, _, _ = _run([sys.executable, "bench/embed_throughput.py"], "throughput")
    table = [line for line in out.splitlines() if line.startswith("|")]
    if len(table) < 3:
        raise SystemExit(f"[results] throughput: no table in its output:\n{out[-2000:]}")
    model = next((line for line in out.splitlines() if line.startswith("default model:")), "")
    runs = next((line for line in out.splitlines() if "best of" in line), "")  # repeats and the load it ran under
    return [
        "## Embedding and training throughput",
        "",
        "`python bench/embed_throughput.py`: 4,000 users of 128 events each, the default model"
        + (f" ({model.removeprefix('default model: ')})" if model else "")
        + "; training steps are the real contrastive loss with the shuffled-order copies."
        + (f" {runs[0].upper()}{runs[1:]}." if runs else ""),
        "",
        *table,
        "",
    ]


def carried() -> list[str]:
    rows = [
        "## Carried from the last recorded run",
        "",
        "Too slow for `make results` on 2 cores. Each row names its command and the commit and machine it "
        "ran at; the run itself, with its date and how the number got there, is in the linked "
        f"[{LOG}]({LOG}) section. After rerunning one, update its row in `bench/results.py` (`CARRIED`).",
        "",
        "| what | result | command | measured at | details |",
        "|---|---|---|---|---|",
    ]
    for c in CARRIED:
        rows.append(f"| {c.what} | {c.result} | {c.command} | {c.at} | [{LOG}]({LOG}#{_anchor(c.log)}) |")
    return rows + [""]


def header(load_start: float, load_end: float) -> list[str]:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.splitlines()
    state = f" with uncommitted changes to {len(dirty)} tracked files" if dirty else ""
    nice = os.nice(0)
    niced = f", at nice {nice}" if nice else ""
    return [
        "# Benchmark results",
        "",
        f"Commit `{rev or 'unknown'}`{state}; {machine()}.",
        "",
        f"1-minute load average {load_start:.1f} when this run started and {load_end:.1f} when it ended{niced}: on a "
        "machine shared with other work, times run longer and rates lower than on an idle one.",
        "",
        "Generated by `make results` (`python bench/results.py`); do not edit by hand. The first sections "
        "were measured by that run, the last table is carried from slower runs, each with its own commit. "
        "Every number has the command that produced it beside it. Dated runs, and how each number moved, "
        f"are in [{LOG}]({LOG}); why a default is what it is, in [docs/decisions.md](../docs/decisions.md).",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="file to write (default: bench/RESULTS.md)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the demo workspace goes (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seqcohort-results-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    try:
        demo_rows, ws = demo(workdir)
        body = demo_rows + naming(ws) + throughput()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(header(load_start, os.getloadavg()[0]) + body + carried())
    args.out.write_text(text)
    print(f"[results] wrote {args.out} in {_minutes(time.perf_counter() - t0)}", file=sys.stderr)


if __name__ == "__main__":
    main()
