"""Terminal tables for cohort sets and run summaries."""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from embeddings.cohorts.cohort_set import CohortSet


def _rel(x: float) -> str:
    return "–" if x != x else f"{x:.1f}×"


def cohort_table(cs: CohortSet, title: str | None = None, deltas: dict[int, int] | None = None) -> Table:
    t = Table(title=title or f"cohorts (model {cs.model_version}, as of {cs.as_of[:10]})", show_lines=False)
    for col, kw in [("id", {"justify": "right"}), ("name", {"style": "bold"}), ("users", {"justify": "right"}),
                    ("share", {"justify": "right"}), ("recency", {"justify": "right"}),
                    ("freq", {"justify": "right"}), ("spend", {"justify": "right"}), ("top categories", {})]:
        t.add_column(col, **kw)
    if deltas is not None:  # size change since the previous version (drift.json)
        t.add_column("change", justify="right")
    for c in cs.cohorts:
        p = c.profile
        cats = ", ".join(s.value for s in p.top_categories[:2]) or "–"
        t.add_row(str(c.id), c.name + (" 📌" if c.pinned else ""), f"{c.size:,}", f"{p.share:.1%}",
                  f"{p.recency_days:.0f}d", _rel(p.relative.get("frequency", float("nan"))),
                  _rel(p.relative.get("monetary", float("nan"))), cats,
                  *([f"{deltas.get(c.id, 0):+,}"] if deltas is not None else []))
    return t


def print_cohorts(console: Console, cs: CohortSet, deltas: dict[int, int] | None = None) -> None:
    """The table (recency in days; frequency and spend relative to the population), then descriptions."""
    console.print(cohort_table(cs, deltas=deltas))
    for c in cs.cohorts:
        action = f" [dim]→ {c.suggested_action}[/]" if c.suggested_action else ""
        console.print(f"[bold]{c.id:>3}. {c.name}[/]: {c.description}{action}", highlight=False)
    for m in cs.meta.get("merge_candidates") or []:  # embeddings/naming/distinct.py
        console.print(f"[yellow]merge candidates[/] {' + '.join(m['names'])}: their profiles differ by less than "
                      "1.25x in everything they show; consider fewer (seqcohort cluster --set cluster.k=N)", highlight=False)


def print_run_summary(console: Console, res: Any) -> None:
    t = " · ".join(f"{k} {v:.1f}s" for k, v in res.timings.items())
    m = res.train_metrics
    acc = f", validation view accuracy {m['val/view_acc']:.2f}" if "val/view_acc" in m else ""
    console.print(f"[green]published[/] {res.version_dir} — {res.n_users:,} users, {res.n_events:,} events, "
                  f"{len(res.cohorts.cohorts)} cohorts{acc}\n  {t}")


def archetype_agreement(assignments: pl.DataFrame, truth: pl.DataFrame,
                        twins: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """How well cohorts recover planted archetypes (synthetic data with a truth table).

    ari: adjusted Rand index over all users; ari_long: users with 4+ events; short_accuracy: share
    of short-history users placed in the cohort holding most long-history users of their
    archetype; short_chance: the same if short users were placed by cohort size at random;
    twins: per pair of RFM twins (default `synth.RFM_TWINS`, those present) the ARI of the cohorts
    restricted to the pair's 4+ event users (0: one shared cohort, 1: perfectly apart) and
    whether their main cohorts differ.
    """
    from sklearn.metrics import adjusted_rand_score

    from embeddings.synthetic.synth import RFM_TWINS

    a = assignments.join(truth, on="user_id")
    long = a.filter(~pl.col("short_history"))
    short = a.filter(pl.col("short_history"))
    main_df = (long.group_by("archetype", "cohort_id").len().sort(["len", "cohort_id"], descending=[True, False])
               .group_by("archetype", maintain_order=True).first().select("archetype", main="cohort_id"))
    s = short.join(main_df, on="archetype", how="left")
    shares = a.group_by("cohort_id").len()["len"].to_numpy() / a.height
    main = dict(zip(main_df["archetype"].to_list(), main_df["main"].to_list(), strict=True))
    pairs = [(x, y) for x, y in (RFM_TWINS if twins is None else twins) if x in main and y in main]
    twin_rows = []
    for x, y in pairs:
        t = long.filter(pl.col("archetype").is_in([x, y]))
        twin_rows.append({"pair": f"{x}/{y}", "ari": float(adjusted_rand_score(t["archetype"], t["cohort_id"])),
                          "separated": main[x] != main[y]})
    return {
        "ari": float(adjusted_rand_score(a["archetype"], a["cohort_id"])),
        "ari_long": float(adjusted_rand_score(long["archetype"], long["cohort_id"])),
        "short_accuracy": float((s["cohort_id"] == s["main"]).mean()) if s.height else float("nan"),
        "short_chance": float((shares**2).sum()),
        "twins": twin_rows,
    }


def twin_summary(agree: dict[str, Any]) -> str:
    """'researchers/impulse_buyers apart (ARI 0.92); ...' from `archetype_agreement`."""
    return "; ".join(f"{t['pair']} {'apart' if t['separated'] else 'MERGED'} (ARI {t['ari']:.2f})"
                     for t in agree["twins"]) or "none planted"
