"""Terminal tables for cohort sets and run summaries."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from embeddings.cohorts import CohortSet


def _rel(x: float) -> str:
    return "–" if x != x else f"{x:.1f}×"


def cohort_table(cs: CohortSet, title: str | None = None) -> Table:
    t = Table(title=title or f"cohorts (model {cs.model_version}, as of {cs.as_of[:10]})", show_lines=False)
    for col, kw in [("id", {"justify": "right"}), ("name", {"style": "bold"}), ("users", {"justify": "right"}),
                    ("share", {"justify": "right"}), ("recency", {"justify": "right"}),
                    ("freq", {"justify": "right"}), ("spend", {"justify": "right"}), ("top categories", {}),
                    ("description", {"max_width": 60})]:
        t.add_column(col, **kw)
    for c in cs.cohorts:
        p = c.profile
        cats = ", ".join(s.value for s in p.top_categories[:2]) or "–"
        t.add_row(str(c.id), c.name + (" 📌" if c.pinned else ""), f"{c.size:,}", f"{p.share:.1%}",
                  f"{p.recency_days:.0f}d", _rel(p.relative.get("frequency", float("nan"))),
                  _rel(p.relative.get("monetary", float("nan"))), cats, c.description)
    return t


def print_cohorts(console: Console, cs: CohortSet) -> None:
    console.print(cohort_table(cs))


def print_run_summary(console: Console, res: Any) -> None:
    t = " · ".join(f"{k} {v:.1f}s" for k, v in res.timings.items())
    m = res.train_metrics
    acc = f", validation view accuracy {m['val/view_acc']:.2f}" if "val/view_acc" in m else ""
    console.print(f"[green]published[/] {res.version_dir} — {res.n_users:,} users, {res.n_events:,} events, "
                  f"{len(res.cohorts.cohorts)} cohorts{acc}\n  {t}")
