"""`seqcohort forget`: remove users from every copy the workspace keeps, and keep them out.

Every kept version is rewritten in place, file by file and each file atomically: the FAISS index
and its ids, embeddings, assignments, changes, and every JSON file that lists users (exemplars in
cohorts.json, points of map.json; sizes recounted); then the event store, naming-cache entries quoting them, and a new version is
published from the cleaned current so serving swaps to it. Their salted hashes go on the
suppression list (later refreshes drop their events) and an audit record counts what was done,
without raw ids. Re-running a forget that was interrupted finishes it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl

from embeddings.cohorts.index import VectorIndex
from embeddings.cohorts.model import CohortModel
from embeddings.fsutil import atomic_path, atomic_write_json
from embeddings.living.changes import CHANGES, DRIFT, SCHEMA, cohort_drift
from embeddings.living.lock import workspace_lock
from embeddings.living.retention import prune_versions
from embeddings.living.store import STORE_DIR, Suppression
from embeddings.model.embed import Embeddings, read_embeddings, write_embeddings
from embeddings.workspace import Workspace

log = logging.getLogger("seqcohort")
AUDIT_DIR = "audit"
VERSION_FILES = ("encoder", "embeddings.parquet", "assignments.parquet", "cohorts.json", "index.faiss",
                 "index.ids.json", "map.json")


@dataclass
class ForgetResult:
    requested: int
    forgotten: int  # known to the workspace
    unknown: int
    version: str
    audit: Path


def _without(path: Path, ids: pl.Series) -> int:
    """Rewrite a parquet file without rows whose user_id is in `ids`; returns rows removed."""
    if not path.is_file():
        return 0
    df = pl.read_parquet(path)
    keep = df.filter(~pl.col("user_id").is_in(ids.implode()))
    if keep.height == df.height:
        return 0
    with atomic_path(path) as tmp:
        keep.write_parquet(tmp)
    return df.height - keep.height


def _clean_index(vdir: Path, gone: set[str]) -> bool:
    if not (vdir / "index.ids.json").is_file():
        return False
    ids = json.loads((vdir / "index.ids.json").read_text())["ids"]
    if not gone.intersection(ids):
        return False
    old = VectorIndex.load(vdir / "index")
    user_ids, X = read_embeddings(vdir / "embeddings.parquet")
    keep = [i for i, u in enumerate(user_ids) if str(u) not in gone]
    VectorIndex(kind=old.kind).fit(X[keep], user_ids[keep]).save(vdir / "index")
    return True


def _clean_embeddings(vdir: Path, gone: set[str]) -> bool:
    path = vdir / "embeddings.parquet"
    user_ids, X = read_embeddings(path)
    keep = [i for i, u in enumerate(user_ids) if str(u) not in gone]
    if len(keep) == len(user_ids):
        return False
    as_of = pl.read_parquet(path, columns=["as_of"]).get_column("as_of")
    write_embeddings(path, user_ids[keep], X[keep], as_of[0] if len(as_of) else None)
    return True


def _scrub(obj: Any, gone: set[str]) -> Any:
    """`obj` (parsed JSON) without the forgotten users: items {"user_id": u, ...} of lists are dropped, and a
    table {"user_id": [...], other columns of the same length} loses their rows."""
    if isinstance(obj, list):
        return [_scrub(v, gone) for v in obj if not (isinstance(v, dict) and str(v.get("user_id")) in gone)]
    if not isinstance(obj, dict):
        return obj
    ids = obj.get("user_id")
    if isinstance(ids, list):
        keep = [i for i, u in enumerate(ids) if str(u) not in gone]
        obj = {k: [v[i] for i in keep] if isinstance(v, list) and len(v) == len(ids) else v for k, v in obj.items()}
    return {k: _scrub(v, gone) for k, v in obj.items()}


def _clean_json(path: Path, needles: list[bytes], gone: set[str]) -> bool:
    """Rewrite a JSON file of a version without the forgotten users, when it quotes them."""
    if not _quotes(path, needles):
        return False
    atomic_write_json(path, _scrub(json.loads(path.read_text()), gone))
    return True


def _recount(vdir: Path) -> bool:
    """cohorts.json sizes and shares from the (cleaned) assignments."""
    path = vdir / "cohorts.json"
    d = json.loads(path.read_text())
    a = pl.read_parquet(vdir / "assignments.parquet", columns=["cohort_id"])
    sizes, total = dict(a.group_by("cohort_id").len().iter_rows()), max(a.height, 1)
    changed = False
    for c in d["cohorts"]:
        size = int(sizes.get(c["id"], 0))
        if size != c["size"]:
            changed = True
            c["size"] = c["profile"]["size"] = size
            c["share"] = c["profile"]["share"] = size / total
    if changed:
        atomic_write_json(path, d)
    return changed


def _quotes(path: Path, needles: list[bytes]) -> bool:
    data = path.read_bytes()
    return any(n in data for n in needles)


def forget(workspace: str | Path, user_ids: Iterable[str], keep_versions: int = 0) -> ForgetResult:
    """Remove `user_ids` from every kept version, the event store and the naming cache; republish current."""
    ws = Workspace(workspace)
    ws.current()  # a clear error for a workspace with no version
    requested = sorted({str(u).strip() for u in user_ids if str(u).strip()})
    with workspace_lock(ws.root, "seqcohort forget"):
        ws.cleanup_staging()
        return _forget(ws, requested, keep_versions)


def _forget(ws: Workspace, requested: list[str], keep_versions: int) -> ForgetResult:
    gone, ids = set(requested), pl.Series(requested, dtype=pl.String)
    needles = [u.encode() for u in requested]
    known: set[str] = set()
    cur = ws.current()
    cur_assign = pl.read_parquet(cur / "assignments.parquet", columns=["user_id", "cohort_id"])
    versions = ws.versions()
    for v in versions:
        a = pl.read_parquet(ws.versions_dir / v / "assignments.parquet", columns=["user_id"])
        known.update(a.filter(pl.col("user_id").is_in(ids.implode())).get_column("user_id").to_list())
    stores = sorted((ws.root / STORE_DIR).glob("*.parquet")) if (ws.root / STORE_DIR).is_dir() else []
    for s in stores:
        known.update(pl.scan_parquet(s).filter(pl.col("user_id").is_in(ids.implode())).select("user_id").unique()
                     .collect().get_column("user_id").to_list())
    rewritten = 0
    for v in versions:  # index first: until the embeddings are rewritten a forgotten user is never a neighbour
        vdir = ws.versions_dir / v
        rewritten += _clean_index(vdir, gone) + _clean_embeddings(vdir, gone)
        rewritten += bool(_without(vdir / "assignments.parquet", ids)) + bool(_without(vdir / CHANGES, ids))
        # cohorts.json exemplars, map.json points, any other JSON of the version that lists users
        rewritten += sum(_clean_json(p, needles, gone) for p in vdir.rglob("*.json") if p.name != "index.ids.json")
        rewritten += _recount(vdir)
    rewritten += sum(bool(_without(s, ids)) for s in stores)
    cache = [p for p in (ws.root / "naming_cache").glob("*.json")] if (ws.root / "naming_cache").is_dir() else []
    dropped_cache = [p for p in cache if _quotes(p, needles)]
    for p in dropped_cache:
        p.unlink(missing_ok=True)
    supp = Suppression(ws.root)
    supp.add(requested)  # unknown ids too: their events are kept out if they arrive later
    vid = _republish(ws, cur, cur_assign.filter(pl.col("user_id").is_in(ids.implode())), supp)
    pruned = prune_versions(ws, keep_versions)
    now = datetime.now(timezone.utc)
    audit = atomic_write_json(ws.root / AUDIT_DIR / f"forget-{now:%Y%m%dT%H%M%S%f}.json", {
        "action": "forget", "at": now.isoformat(timespec="seconds"), "requested": len(requested),
        "forgotten": len(known), "unknown": len(requested) - len(known), "versions_cleaned": len(versions),
        "files_rewritten": int(rewritten), "naming_cache_entries_removed": len(dropped_cache),
        "published": vid, "pruned_versions": len(pruned), "suppression_list_size": len(supp),
        "ids": "not recorded (salted hashes are in suppressed.json)"})
    log.info("forgot %d user(s) (%d unknown) in %d version(s); published %s", len(known),
             len(requested) - len(known), len(versions), vid)
    return ForgetResult(len(requested), len(known), len(requested) - len(known), vid, audit)


def _republish(ws: Workspace, cur: Path, removed: pl.DataFrame, supp: Suppression) -> str:
    """A new version from the cleaned current; its changes list the removed users by salted hash.

    With an event store its profiles (statistics and exemplars) are recomputed without the removed users;
    without one (never refreshed) the cleaned files are copied as they are.
    """
    meta = json.loads((cur / "version.json").read_text())
    meta = {k: v for k, v in meta.items() if k not in ("id", "parent", "created_at")}
    meta["steps"] = ["forget"]
    store = ws.root / meta["event_store"] if meta.get("event_store") else None
    with ws.new_version(meta) as out:
        if store is not None and store.is_file():
            model = CohortModel.load(cur)
            a, cs = model.assignments_, model.cohorts_
            assert a is not None and cs is not None
            model.updated(pl.read_parquet(store), Embeddings(model.user_ids_, model.embeddings_),
                          a["cohort_id"].to_numpy(), a["confidence"].to_numpy(),
                          as_of=datetime.fromisoformat(cs.as_of)).save(out)
        else:
            for name in VERSION_FILES:
                src = cur / name
                if src.is_dir():
                    shutil.copytree(src, out / name)
                elif src.is_file():
                    shutil.copy2(src, out / name)
        changes = pl.DataFrame({
            "user_id": ["sha256:" + supp.hash(u) for u in removed.get_column("user_id").to_list()],
            "previous_cohort_id": removed.get_column("cohort_id"), "cohort_id": None, "reason": "forgotten",
        }).cast(SCHEMA)  # type: ignore[arg-type]
        with atomic_path(out / CHANGES) as tmp:
            changes.write_parquet(tmp)
        after = pl.read_parquet(out / "assignments.parquet", columns=["user_id", "cohort_id"])
        before = pl.concat([after, removed.select("user_id", "cohort_id")])
        names = {c["id"]: c["name"] for c in json.loads((out / "cohorts.json").read_text())["cohorts"]}
        atomic_write_json(out / DRIFT, {"previous": cur.name, "as_of": meta.get("as_of"),
                                        "users": {"total": after.height, "forgotten": removed.height},
                                        "cohorts": cohort_drift(before, after, {}, {}, names),
                                        "retrain_recommended": False, "why": None})
    return ws.current_id()
