"""Latency and throughput of POST /v1/assign (20-event live sessions) over HTTP vs the same work in-process.

    .venv/bin/python bench/serve_latency.py --workspace /tmp/sv_ws            # table -> bench/out/serve_latency.md
    .venv/bin/python bench/serve_latency.py --workspace /tmp/sv_ws --chaos    # + kill an Encoder replica under load

The workspace must hold a published version (e.g. `seqcohort demo --workspace /tmp/sv_ws --no-serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
N_EVENTS = 20


def sessions(n: int, seed: int = 0) -> list[list[dict]]:
    """n live sessions of 20 events in the last hour (event types/items like the demo data, some unseen)."""
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=61)
    evs, cats = ["view", "cart", "purchase", "search", "wishlist", "brand_new_event"], ["grocery", "books", "toys", "garden"]
    out = []
    for _ in range(n):
        secs = np.sort(rng.integers(0, 3600, N_EVENTS))
        out.append([{"ts": (now + timedelta(seconds=int(s))).isoformat() + "Z", "event": str(rng.choice(evs)),
                     "item": f"sku-{int(rng.integers(500))}", "category": str(rng.choice(cats)),
                     "amount": float(np.round(rng.lognormal(3, 1), 2)) if rng.random() < 0.2 else None}
                    for s in secs])
    return out


def pct(lat: list[float]) -> tuple[float, float, float]:
    a = np.asarray(lat) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(np.percentile(a, 99))


async def http_load(url: str, bodies: list[dict], concurrency: int, n: int, key: str | None = None):
    """`concurrency` keep-alive connections sending POST /v1/assign back to back, `n` requests in all.

    aiohttp, not httpx: the client shares the server's cores and httpx spent ~6x the CPU per request
    (1.7 vs 0.3 ms, bench/RESULTS.md).
    Bodies are JSON-encoded once up front; every response is read in full and must be a 200 that
    carries a cohort, or it counts as an error.
    """
    import aiohttp

    payloads = [json.dumps(b).encode() for b in bodies]
    headers = {"content-type": "application/json", **({"X-API-Key": key} if key else {})}
    lat: list[float] = []
    samples: list[tuple[float, float]] = []  # (start, latency) for the chaos timeline
    errors = 0
    next_i = 0
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(url, connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as c:
        async def worker() -> None:
            nonlocal next_i, errors
            while next_i < n:
                i = next_i
                next_i += 1
                t = time.perf_counter()
                try:
                    async with c.post("/v1/assign", data=payloads[i % len(payloads)], headers=headers) as r:
                        body = await r.read()
                        ok = r.status == 200 and b'"cohort_id"' in body
                except Exception:
                    ok = False
                lat.append(time.perf_counter() - t)
                samples.append((t, lat[-1]))
                errors += not ok

        async def warm() -> None:  # open the connections
            async with c.get("/healthz") as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return lat, n / wall, errors, samples


def in_process(workspace: str, raw: list[list[dict]], concurrency: int, n: int):
    """The same featurise + encode + assign without HTTP/Ray: batches of `concurrency` sessions."""
    import torch

    from embeddings.workspace import Workspace
    from serving.models import AssignRequest, session_columns
    from serving.state import AssignerState, EncoderState

    torch.set_num_threads(1)
    cur = Workspace(workspace).current()
    enc, asg = EncoderState.load(cur.name, cur), AssignerState.load(cur.name, cur)
    now_us = int(time.time()) * 1_000_000
    ss = []
    for ev in raw:
        s = session_columns(AssignRequest(events=ev).events)  # same validation as the ingress
        s["as_of"] = now_us
        ss.append(s)
    lat = []
    t0 = time.perf_counter()
    for b in range(0, n, concurrency):
        t = time.perf_counter()
        batch = [ss[(b + j) % len(ss)] for j in range(min(concurrency, n - b))]
        asg.assign(enc.embed_sessions(batch))
        lat.extend([time.perf_counter() - t] * len(batch))
    return lat, n / (time.perf_counter() - t0), 0


def direct_ingress_url() -> str | None:
    """The ingress replica's own HTTP port (Serve's direct ingress, on in throughput-optimised mode)."""
    import httpx

    for port in range(30000, 30010):  # RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT upwards
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).json() == {"status": "ok"}:
                return f"http://127.0.0.1:{port}"
        except Exception:
            continue
    return None


async def chaos(url: str, bodies: list[dict], seconds: float = 12.0, kill_at: float = 3.0) -> str:
    """Kill the Encoder replica under concurrency-8 load; report failures and recovery time."""
    import ray

    async def killer() -> float:
        await asyncio.sleep(kill_at)
        names = [a for a in ray.util.list_named_actors(all_namespaces=True) if "Encoder" in a["name"]]
        ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)
        return time.perf_counter()

    n = int(seconds * 40)
    load = asyncio.create_task(http_load(url, bodies, 8, n))
    t_kill = await killer()
    try:
        _, _, errors, lat_t = await asyncio.wait_for(load, timeout=seconds + 120)
    except asyncio.TimeoutError:
        return f"chaos: the load did not finish within {seconds + 120:.0f}s after killing the Encoder replica"
    after = [(t, d) for t, d in lat_t if t + d >= t_kill]
    slow = [t + d for t, d in after if d > 0.2]
    recovery = (max(slow) - t_kill) if slow else 0.0
    worst = max(d for _, d in after) * 1000 if after else 0.0
    return (f"chaos: killed the Encoder replica under concurrency-8 load; {len(lat_t)} requests, "
            f"{errors} failed; slowest request after the kill {worst:.0f} ms; "
            f"latency back under 200 ms {recovery:.1f}s after the kill")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="/tmp/sv_ws")
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--no-throughput-optimized", action="store_true",
                    help="do not set RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (to compare)")
    ap.add_argument("--chaos", action="store_true", help="also kill an Encoder replica under load")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "serve_latency.md"))
    a = ap.parse_args()
    if not a.no_throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    import ray

    from seqcohort.launch import start_app, stop_app
    from serving.ports import free_port

    raw = sessions(256)
    bodies = [{"events": ev} for ev in raw]
    rows = []
    for c in a.concurrency:
        lat, rps, err = in_process(a.workspace, raw, c, a.requests)
        rows.append(("in-process", c, *pct(lat), rps, err))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    url = start_app(a.workspace, "127.0.0.1", free_port())
    try:
        asyncio.run(http_load(url, bodies, 8, 300))  # warm-up
        targets = [("HTTP via Serve proxy", url)]
        direct = None if a.no_throughput_optimized else direct_ingress_url()
        if direct:
            targets.append(("HTTP direct ingress", direct))
        for label, u in targets:
            asyncio.run(http_load(u, bodies, 8, 200))  # warm-up
            for c in a.concurrency:
                lat, rps, err, _ = asyncio.run(http_load(u, bodies, c, a.requests))
                rows.append((label, c, *pct(lat), rps, err))
        chaos_line = asyncio.run(chaos(url, bodies)) if a.chaos else ""
    finally:
        stop_app()
    mode = "off" if a.no_throughput_optimized else "on"
    lines = [f"POST /v1/assign, {N_EVENTS}-event sessions, {a.requests} requests per level, "
             f"{os.cpu_count()} CPU cores, RAY_SERVE_THROUGHPUT_OPTIMIZED {mode}, "
             f"client in the same machine ({datetime.now():%Y-%m-%d})", "",
             "| path | concurrency | p50 ms | p95 ms | p99 ms | requests/s | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {p} | {c} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {rps:.0f} | {e} |" for p, c, p50, p95, p99, rps, e in rows]
    if chaos_line:
        lines += ["", chaos_line]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
