"""Latency and throughput of POST /v1/assign (live sessions) at the URL `seqcohort serve` prints, next to
Serve's proxy and the same work in-process (batched, and one request at a time on one thread).

    .venv/bin/python bench/serve_latency.py --workspace /tmp/sv_ws            # table -> bench/out/serve_latency.md
    .venv/bin/python bench/serve_latency.py --workspace /tmp/sv_ws --events 1-20
    .venv/bin/python bench/serve_latency.py --workspace /tmp/sv_ws --chaos    # + kill the model replica under load

Every HTTP row also says where the CPU went: milliseconds of CPU per request in each process of the
Ray instance (ingress, encoder, assigner, proxy, the rest of Ray) and in the client.

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
N_EVENTS = (20, 20)  # events per session, uniform in [low, high]


def catalog_titles(seed: int = 0) -> list[str]:
    """The demo catalogue's item titles, and 50 it has never seen (what a new product launch adds)."""
    from embeddings.synthetic.synth import generate

    known = generate(50, seed=seed).catalog["title"].to_list()
    return known + [f"{t} (2027 edition)" for t in known[:50]]


def sessions(n: int, seed: int = 0, n_events: tuple[int, int] = N_EVENTS,
             titles: list[str] | None = None) -> list[list[dict]]:
    """n live sessions of n_events events in the last hour (event types/items like the demo data, some unseen);
    with `titles`, each event carries one of them as its `text`."""
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=61)
    evs, cats = ["view", "cart", "purchase", "search", "wishlist", "brand_new_event"], ["grocery", "books", "toys", "garden"]
    out = []
    for _ in range(n):
        secs = np.sort(rng.integers(0, 3600, int(rng.integers(n_events[0], n_events[1] + 1))))
        out.append([{"ts": (now + timedelta(seconds=int(s))).isoformat() + "Z", "event": str(rng.choice(evs)),
                     "item": f"sku-{int(rng.integers(500))}", "category": str(rng.choice(cats)),
                     "amount": float(np.round(rng.lognormal(3, 1), 2)) if rng.random() < 0.2 else None,
                     **({"text": str(rng.choice(titles))} if titles else {})}
                    for s in secs])
    return out


def pct(lat: list[float]) -> tuple[float, float, float]:
    a = np.asarray(lat) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(np.percentile(a, 99))


async def http_load(url: str, bodies: list[dict], concurrency: int, n: int, key: str | None = None,
                    until: float | None = None):
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
    samples: list[tuple[float, float, bool]] = []  # (start, latency, ok) for the chaos timeline
    errors = 0
    next_i = 0
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(url, connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as c:
        async def worker() -> None:
            nonlocal next_i, errors
            while next_i < n and (until is None or time.perf_counter() < until):
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
                samples.append((t, lat[-1], ok))
                errors += not ok
                if not ok:
                    await asyncio.sleep(0.01)  # a refused connection fails at once: no busy loop

        async def warm() -> None:  # open the connections
            async with c.get("/healthz") as r:
                await r.read()

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return lat, len(lat) / wall, errors, samples


def in_process(workspace: str, raw: list[list[dict]], concurrency: int, n: int):
    """The same validation + featurise + encode + assign without HTTP/Ray, on one thread: batches of
    `concurrency` sessions (concurrency 1: one request at a time, the single-thread baseline)."""
    import torch

    from embeddings.workspace import Workspace
    from serving.models import AssignRequest, session_columns
    from serving.state import AssignerState, EncoderState

    torch.set_num_threads(1)
    cur = Workspace(workspace).current()
    enc, asg = EncoderState.load(cur.name, cur), AssignerState.load(cur.name, cur)
    now_us = int(time.time()) * 1_000_000
    lat = []
    t0 = time.perf_counter()
    for b in range(0, n, concurrency):
        t = time.perf_counter()
        batch = []
        for j in range(min(concurrency, n - b)):
            s = session_columns(AssignRequest(events=raw[(b + j) % len(raw)]).events)  # the ingress's validation
            s["as_of"] = now_us
            batch.append(s)
        asg.assign(enc.embed_sessions(batch))
        lat.extend([time.perf_counter() - t] * len(batch))
    return lat, n / (time.perf_counter() - t0), 0


# --------------------------------------------------------------------------- CPU per process
_GROUPS = (("Ingress", "ServeReplica:seqcohort:Ingress"), ("Encoder", "ServeReplica:seqcohort:Encoder"),
           ("Assigner", "ServeReplica:seqcohort:Assigner"), ("proxy", "ProxyActor"))
_TICK = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process ("client") and of every process it started
    (the local Ray instance), grouped by Serve role; "Ray" is the rest (raylet, GCS, controller, ...)."""
    kids, out = _children(), {g: 0.0 for g in ("client", *(g for g, _ in _GROUPS), "Ray")}
    stack = [os.getpid()]
    while stack:
        pid = stack.pop()
        stack.extend(kids.get(pid, []))
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        sec = (int(f[11]) + int(f[12])) / _TICK
        group = "client" if pid == os.getpid() else next((g for g, key in _GROUPS if key in cmd), "Ray")
        out[group] += sec
    return out


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after[k] - before.get(k, 0.0)) * 1000 / n for k in after}


async def chaos(url: str, bodies: list[dict], deployment: str = "Encoder", seconds: float = 15.0,
                kill_at: float = 3.0) -> str:
    """Kill the replica of `deployment` under concurrency-8 load for `seconds`; report failures and recovery."""
    import ray

    async def killer() -> float:
        await asyncio.sleep(kill_at)
        names = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
        ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)
        return time.perf_counter()

    load = asyncio.create_task(http_load(url, bodies, 8, 10**9, until=time.perf_counter() + seconds))
    t_kill = await killer()
    try:
        _, _, errors, lat_t = await asyncio.wait_for(load, timeout=seconds + 120)
    except asyncio.TimeoutError:
        return f"chaos: the load did not finish within {seconds + 120:.0f}s after killing the {deployment} replica"
    after = [(t, d, ok) for t, d, ok in lat_t if t + d >= t_kill]
    slow = [t + d for t, d, ok in after if d > 0.2 or not ok]
    recovery = (max(slow) - t_kill) if slow else 0.0
    worst = max(d for _, d, _ in after) * 1000 if after else 0.0
    failed = [t + d - t_kill for t, d, ok in after if not ok]
    window = f" (failures from {min(failed):.1f} to {max(failed):.1f} s after the kill)" if failed else ""
    return (f"chaos: killed the {deployment} replica under concurrency-8 load; {len(lat_t)} requests in "
            f"{seconds:.0f} s, {errors} failed{window}; slowest request after the kill {worst:.0f} ms; "
            f"answers back under 200 ms {recovery:.1f}s after the kill")


def load_row(label: str, url: str, bodies: list[dict], c: int, n: int) -> tuple[tuple, dict[str, float]]:
    before = cpu_by_process()
    lat, rps, err, _ = asyncio.run(http_load(url, bodies, c, n))
    return (label, c, *pct(lat), rps, err), cpu_ms_per_request(before, cpu_by_process(), n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default="/tmp/sv_ws")
    ap.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--events", default="20", help="events per session: N or LOW-HIGH (uniform), e.g. 1-20")
    ap.add_argument("--no-proxy", action="store_true", help="skip the rows through Serve's proxy")
    ap.add_argument("--layout", choices=["one", "separate", "both"], default="one",
                    help="models in the ingress replica (what `seqcohort serve` runs), separate Encoder and "
                         "Assigner deployments (args.models_in_ingress false), or both one after the other")
    ap.add_argument("--no-throughput-optimized", action="store_true",
                    help="export RAY_SERVE_THROUGHPUT_OPTIMIZED=0 (no direct ingress: the printed URL is the proxy)")
    ap.add_argument("--chaos", action="store_true",
                    help="also kill the replica holding the model (the Encoder, or the Ingress with the models in it) under load")
    ap.add_argument("--titles", action="store_true",
                    help="events carry item titles: the demo catalogue's, 1 in 7 of them new (issue 28's serving cost)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "serve_latency.md"))
    a = ap.parse_args()
    lo, _, hi = a.events.partition("-")
    n_events = (int(lo), int(hi or lo))
    if a.no_throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "0"

    from seqcohort.launch import start_app, stop_app
    from serving.ports import free_port

    load0 = os.getloadavg()
    raw = sessions(256, n_events=n_events, titles=catalog_titles() if a.titles else None)
    bodies = [{"events": ev} for ev in raw]
    rows: list[tuple] = []
    cpu: list[tuple[str, int, dict[str, float]]] = []
    lat, rps, err = in_process(a.workspace, raw, 1, a.requests)
    rows.append(("in-process, one request at a time, 1 thread", 1, *pct(lat), rps, err))
    for c in [c for c in a.concurrency if c > 1]:
        lat, rps, err = in_process(a.workspace, raw, c, a.requests)
        rows.append((f"in-process, batches of {c}, 1 thread", c, *pct(lat), rps, err))
    chaos_lines = []
    for layout in (["one", "separate"] if a.layout == "both" else [a.layout]):
        one = layout == "one"
        ends = start_app(a.workspace, "127.0.0.1", free_port(), num_cpus=2, overrides={"models_in_ingress": one})
        try:
            how = "direct ingress" if ends.direct else "Serve proxy"
            where = ", models in the ingress" if one else ", separate deployments"
            targets = [(f"printed URL ({how}{where})", ends.url)]
            if ends.proxy_url != ends.url and not a.no_proxy:
                targets.append((f"Serve proxy{where}", ends.proxy_url))
            for label, u in targets:
                asyncio.run(http_load(u, bodies, 8, 300))  # warm-up
                for c in a.concurrency:
                    row, ms = load_row(label, u, bodies, c, a.requests)
                    rows.append(row)
                    cpu.append((label, c, ms))
            if a.chaos:  # the replica holding the model: the Encoder, or the ingress itself
                chaos_lines.append(asyncio.run(chaos(ends.url, bodies, "Ingress" if one else "Encoder")))
        finally:
            stop_app()
    load1 = os.getloadavg()
    mode = "off" if a.no_throughput_optimized else "on"
    ev = f"{n_events[0]}" if n_events[0] == n_events[1] else f"{n_events[0]}-{n_events[1]}"
    lines = [f"POST /v1/assign, {ev}-event sessions{' with item titles' if a.titles else ''}, {a.requests} requests per level, "
             f"{os.cpu_count()} CPU cores, RAY_SERVE_THROUGHPUT_OPTIMIZED {mode}, client on the same machine, "
             f"load average {load0[0]:.1f} before / {load1[0]:.1f} after ({datetime.now():%Y-%m-%d %H:%M})", "",
             "| path | concurrency | p50 ms | p95 ms | p99 ms | requests/s | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {p} | {c} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {rps:.0f} | {e} |" for p, c, p50, p95, p99, rps, e in rows]
    if cpu:
        keys = list(cpu[0][2])
        lines += ["", "CPU per request (ms) by process, same runs:", "",
                  "| path | concurrency | " + " | ".join(keys) + " | total |", "|---|---:|" + "---:|" * (len(keys) + 1)]
        lines += [f"| {p} | {c} | " + " | ".join(f"{ms[k]:.2f}" for k in keys) + f" | {sum(ms.values()):.2f} |"
                  for p, c, ms in cpu]
    for line in chaos_lines:
        lines += ["", line]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
