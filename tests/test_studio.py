"""The cohort studio end to end: a real `seqcohort serve` on 127.0.0.1 with API keys, driven over HTTP and
by headless Chromium (Debian's `chromium` through Playwright): the page, keys, CSV download, rename,
explain, lookalikes and the self-contained report. Screenshots go to test-artifacts/ (or
$SEQCOHORT_TEST_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from serving.ports import free_port

REPO = Path(__file__).resolve().parents[1]
READ, ADMIN = "studio-read-key", "studio-admin-key"
H = {"X-API-Key": READ}
ARTIFACTS = Path(os.environ.get("SEQCOHORT_TEST_ARTIFACTS", REPO / "test-artifacts"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained_workspace, tmp_path_factory):
    """(url, workspace) of `seqcohort serve` in its own process (its own small Ray instance)."""
    ws = tmp_path_factory.mktemp("studio") / "ws"
    shutil.copytree(trained_workspace, ws, symlinks=True)
    port = free_port()
    log = open(ws.parent / "serve.log", "w")
    env = {**os.environ, "SEQCOHORT_API_KEY": READ, "SEQCOHORT_ADMIN_KEY": ADMIN}
    proc = subprocess.Popen([sys.executable, "-m", "seqcohort", "serve", "--workspace", str(ws), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"seqcohort serve exited ({proc.returncode}):\n{(ws.parent / 'serve.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"seqcohort serve not ready in 300 s:\n{(ws.parent / 'serve.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, ws
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean Serve + Ray shutdown
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers=H, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium. `make test` installs it; without it CI fails here and a laptop skips."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install -e '.[test]')")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _missing("chromium (apt-get install chromium; `make test` does it when root)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need {what}")
    pytest.skip(f"needs {what}")


def open_page(browser, url: str, width: int = 1440, height: int = 900, key: str | None = READ):
    ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    if key:  # what the key dialog stores: kept in the tab's sessionStorage, never on the server
        ctx.add_init_script(f"sessionStorage.setItem('seqcohort.key', {json.dumps(key)})")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/ui/")
    return page, errors


def ready(page) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    page.wait_for_selector("#map svg path, #map svg circle", state="attached", timeout=60_000)


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p = ARTIFACTS / f"studio-{name}.png"
    page.screenshot(path=str(p), full_page=True)
    return p


def cohort_names(client) -> list[str]:
    return [c["name"] for c in client.get("/v1/cohorts").json()["cohorts"]]


# ------------------------------------------------------------------------------ the page
@pytest.mark.parametrize("width,height,label", [(1440, 900, "desktop-1440"), (390, 844, "phone-390")])
def test_page_shows_every_cohort_the_map_and_a_profile(server, client, browser, width, height, label):
    page, errors = open_page(browser, server[0], width, height)
    ready(page)
    page.wait_for_selector("#chart-lift svg", state="attached")
    listed = page.inner_text("#cohort-list")
    for name in cohort_names(client):
        assert name in listed, name
    marks = page.eval_on_selector_all("#map svg path[d]", "els => els.length")
    assert marks >= 100, marks  # the map's user sample, one mark each
    assert page.inner_text("#detail-name") == cohort_names(client)[0].strip()
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1, "page scrolls sideways"
    assert shot(page, label).stat().st_size > 10_000
    assert not errors, errors
    page.context.close()


def test_missing_or_wrong_key_is_refused(server, client, browser):
    page, _ = open_page(browser, server[0], key=None)
    page.wait_for_selector("#key-dialog[open]")
    assert "Missing API key" in page.inner_text("#key-message")
    page.click("#key-dialog button[value=cancel]")
    page.wait_for_selector("#error:not([hidden])")
    assert "refused" in page.inner_text("#error")
    assert page.inner_text("#cohort-list").strip() == ""  # nothing shown without a key
    page.reload()
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", "not-the-key")
    page.click("#key-submit")
    page.wait_for_function("document.querySelector('#key-message').textContent.includes('Invalid API key')")
    page.fill("#key-input", READ)
    page.click("#key-submit")
    ready(page)
    assert cohort_names(client)[0] in page.inner_text("#cohort-list")
    page.context.close()


def test_csv_download_is_the_cohort(server, client, browser):
    page, _ = open_page(browser, server[0])
    ready(page)
    cid = client.get("/v1/cohorts").json()["cohorts"][0]["id"]
    with page.expect_download() as dl:
        page.click("#download-csv")
    rows = list(csv.DictReader(open(dl.value.path(), newline="")))
    assert dl.value.suggested_filename.startswith(f"cohort-{cid}-") and dl.value.suggested_filename.endswith(".csv")
    members = client.get(f"/v1/cohorts/{cid}/members", params={"limit": 1000}).json()
    assert [r["user_id"] for r in rows] == [m["user_id"] for m in members["members"]] and len(rows) == members["total"]
    assert {r["cohort_id"] for r in rows} == {str(cid)}
    page.context.close()


def test_rename_needs_the_admin_key_and_persists(server, client, browser):
    url, ws = server
    first = client.get("/v1/cohorts").json()["cohorts"][0]
    cid, action = first["id"], first["suggested_action"]
    r = client.post(f"/v1/cohorts/{cid}/rename", json={"name": "read key tries"})
    assert r.status_code == 403  # the read key never administers
    page, _ = open_page(browser, url)
    ready(page)
    page.click("#rename")
    page.fill("#rename-name", "VIP grocery regulars")
    page.click("#rename-submit")
    page.wait_for_selector("#key-dialog[open]")
    assert page.inner_text("#key-title") == "Admin key needed"
    page.fill("#key-input", READ)
    page.click("#key-submit")
    page.wait_for_function("document.querySelector('#key-message').textContent.includes('Invalid admin key')")
    page.fill("#key-input", ADMIN)
    page.click("#key-submit")
    page.wait_for_function("document.querySelector('#detail-name').textContent.startsWith('VIP grocery regulars')",
                           timeout=120_000)
    saved = json.loads((ws / "overrides.json").read_text())["cohorts"][str(cid)]
    assert saved["name"] == "VIP grocery regulars"
    assert cohort_names(client)[0] == "VIP grocery regulars"
    cur = json.loads((ws / "current" / "version.json").read_text())
    assert cur["steps"] == ["overrides"] and (ws / "current" / "map.json").is_file()
    page.context.close()
    fresh, _ = open_page(browser, url)  # a new visit: the name is the workspace's, not the tab's
    ready(fresh)
    assert "VIP grocery regulars" in fresh.inner_text("#cohort-list")
    fresh.click("#pin")
    fresh.wait_for_selector("#key-dialog[open]")
    fresh.fill("#key-input", ADMIN)
    fresh.click("#key-submit")
    fresh.wait_for_selector("#detail-name .badge", timeout=120_000)
    assert client.get("/v1/cohorts").json()["cohorts"][0]["pinned"] is True
    assert client.get(f"/v1/cohorts/{cid}").json()["suggested_action"] == action  # a pin keeps the whole name
    shot(fresh, "renamed-and-pinned")
    fresh.context.close()


def test_explain_and_lookalikes_on_the_page(server, client, browser, tmp_path):
    page, errors = open_page(browser, server[0])
    ready(page)
    cid = client.get("/v1/cohorts").json()["cohorts"][1]["id"]
    members = [m["user_id"] for m in client.get(f"/v1/cohorts/{cid}/members", params={"limit": 10}).json()["members"]]
    n_events = len(client.post("/v1/explain", json={"user_id": members[0]}).json()["events"])
    page.fill("#explain-user", members[0])
    page.click("#explain-form button[type=submit]")
    page.wait_for_selector("#explain-out li[data-contribution]")
    assert page.eval_on_selector_all("#explain-out li[data-contribution]", "els => els.length") == n_events
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("segment,user_id\n" + "".join(f"vip,{m}\n" for m in members[:5]) + "vip,nobody\n")
    page.set_input_files("#lookalike-file", str(seeds))
    page.fill("#lookalike-size", "20")
    with page.expect_download() as dl:
        page.click("#lookalike-form button[type=submit]")
    rows = list(csv.DictReader(open(dl.value.path(), newline="")))
    assert len(rows) == 20 and not {r["user_id"] for r in rows} & set(members[:5])
    page.wait_for_function("document.querySelector('#lookalike-out').textContent.includes('1 unknown')")
    shot(page, "explain-and-lookalikes")
    assert not errors, errors
    page.context.close()


# ------------------------------------------------------------------------------ HTTP
def _sessions(synth_files, n_users: int, min_events: int = 4):
    ev = pl.read_parquet(synth_files["events"]).sort(["user_id", "ts"], maintain_order=True)
    counts = ev.group_by("user_id").len().filter(pl.col("len") >= min_events).sort("user_id")
    ids = counts["user_id"].to_list()[:: max(1, len(counts) // n_users)][:n_users]
    out = {}
    for uid, g in ev.filter(pl.col("user_id").is_in(ids)).group_by("user_id", maintain_order=True):
        out[uid[0]] = [{"ts": t.isoformat() + "Z", "event": e, "item": i, "category": c,
                        "amount": None if a is None or a != a else a}
                       for t, e, i, c, a in g.select("ts", "event", "item", "category", "amount").tail(60).iter_rows()]
    return out


def _cos(x, c) -> float:
    x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
    return float(x @ c / (np.linalg.norm(x) * np.linalg.norm(c)))


def test_explain_is_faithful_on_many_users(server, client, synth_files):
    """Removing the top-ranked event lowers the cosine to the cohort centroid more than removing the
    bottom-ranked one, measured with separate /v1/embed calls (not the explain code)."""
    ws = server[1]
    cohorts = json.loads((ws / "current" / "cohorts.json").read_text())
    centroid = {c["id"]: c["centroid"] for c in cohorts["cohorts"]}
    as_of = cohorts["as_of"] + "Z"
    passed, agree, users = 0, 0, _sessions(synth_files, 60)
    for events in users.values():
        r = client.post("/v1/explain", json={"events": events, "as_of": as_of})
        assert r.status_code == 200, r.text
        d = r.json()
        assert [e["index"] for e in d["events"]] == list(range(len(events)))  # sent order
        contrib = np.array([e["contribution"] for e in d["events"]])
        top, bottom = int(contrib.argmax()), int(contrib.argmin())
        variants = [{"events": [e for j, e in enumerate(events) if j != k], "as_of": as_of} for k in (top, bottom)]
        emb = client.post("/v1/embed/batch", json={"users": variants}).json()["results"]
        c = centroid[d["cohort_id"]]
        drop_top, drop_bottom = (d["similarity"] - _cos(e["embedding"], c) for e in emb)
        passed += drop_top > drop_bottom
        agree += abs(drop_top - contrib[top]) < 1e-3 and abs(drop_bottom - contrib[bottom]) < 1e-3
    assert passed >= 0.9 * len(users), (passed, len(users))
    assert agree >= 0.9 * len(users), (agree, len(users))


def test_explain_a_known_user_reads_their_history(client):
    cid = client.get("/v1/cohorts").json()["cohorts"][0]["id"]
    uid = client.get(f"/v1/cohorts/{cid}/members", params={"limit": 1}).json()["members"][0]["user_id"]
    d = client.post("/v1/explain", json={"user_id": uid}).json()
    assert d["source"] == "stored" and len(d["history"]) == len(d["events"]) > 0
    assert d["cohort_id"] == client.post("/v1/assign", json={"user_id": uid}).json()["cohort_id"]
    assert client.post("/v1/explain", json={"user_id": "nobody-here"}).status_code == 404
    assert client.post("/v1/explain", json={}).status_code == 422


def test_lookalikes_of_a_planted_archetype(server, client, synth_files, tmp_path):
    truth = pl.read_parquet(synth_files["truth"]).filter(~pl.col("short_history"))
    arch = dict(zip(truth["user_id"].to_list(), truth["archetype"].to_list(), strict=True))
    rng = np.random.default_rng(0)
    for a in truth["archetype"].value_counts(sort=True)["archetype"].to_list()[:3]:
        us = sorted(u for u, x in arch.items() if x == a)
        seeds = [str(u) for u in rng.choice(us, size=30, replace=False)]
        size = (len(us) - 30) // 2
        r = client.post("/v1/lookalike", json={"seed_user_ids": [*seeds, "ghost"], "size": size}).json()
        assert len(r["user_ids"]) == size and not set(seeds) & set(r["user_ids"]) and r["unknown_seed_ids"] == ["ghost"]
        assert r["scores"] == sorted(r["scores"], reverse=True)
        purity = np.mean([arch.get(u) == a for u in r["user_ids"]])
        assert purity >= 0.8, (a, purity)
    none = client.post("/v1/lookalike", json={"seed_user_ids": ["ghost", "phantom"], "size": 5})
    assert none.status_code == 422 and "none of the 2 seed user ids" in none.json()["detail"][0]["msg"]
    # the CLI gives the same audience
    from seqcohort.cli import cli

    (tmp_path / "seeds.txt").write_text("\n".join(seeds) + "\n")
    out = tmp_path / "look.csv"
    res = CliRunner().invoke(cli, ["lookalike", "--workspace", str(server[1]), "--seeds", str(tmp_path / "seeds.txt"),
                                   "--size", str(size), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert pl.read_csv(out)["user_id"].cast(pl.String).to_list() == r["user_ids"]
    (tmp_path / "ghosts.csv").write_text("user_id,segment\nghost,a\n")
    res = CliRunner().invoke(cli, ["lookalike", "--workspace", str(server[1]), "--seeds", str(tmp_path / "ghosts.csv"),
                                   "--size", "5", "--out", str(tmp_path / "none.csv")])
    assert res.exit_code == 2 and "none of the 1 seed user ids" in res.output and not (tmp_path / "none.csv").exists()


def test_studio_overview_and_openapi(client):
    d = client.get("/v1/studio").json()
    assert [c["name"] for c in d["cohorts"]] == cohort_names(client)
    assert d["map"]["n_users"] == d["n_users"] and len(d["map"]["points"]["x"]) == min(d["n_users"], 3000)
    assert all("centroid" not in c for c in d["cohorts"])
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/studio", "/v1/explain", "/v1/lookalike", "/v1/cohorts/{cohort_id}/rename", "/v1/cohorts/{cohort_id}/pin"):
        assert p in paths, p
    assert httpx.get(f"{client.base_url}/v1/studio").status_code == 401


# ------------------------------------------------------------------------------ report
def test_report_is_one_self_contained_file(trained_workspace, browser, tmp_path):
    from seqcohort.cli import cli

    out = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", "--workspace", str(trained_workspace), "--out", str(out)])
    assert res.exit_code == 0, res.output
    bad = CliRunner().invoke(cli, ["report", "--workspace", str(trained_workspace), "--out", str(out), "--version", "v9"])
    assert bad.exit_code == 2 and "no version 'v9'" in bad.output
    html = out.read_text()
    assert 'src="' not in html and 'href="http' not in html and "stylesheet" not in html
    names = [c["name"] for c in json.loads((trained_workspace / "current" / "cohorts.json").read_text())["cohorts"]]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#map svg path", state="attached")
    listed = page.inner_text("#cohort-list")
    assert all(n in listed for n in names)
    assert not page.is_visible("#download-csv") and not page.is_visible("#explain-form")
    assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []  # works offline
    shot(page, "report")
    page.close()


def test_report_of_a_goal_aware_version_groups_tiers_sizes_and_changes(trained_workspace, browser, tmp_path):
    """The tier grouping and the sizing slider, on a copy of the tiny version given the fields a goal-aware
    run writes (tiers in cohorts.json meta, goal rates, a propensity column): training a goal-aware
    encoder here would double this module's time; a real one is checked by hand (docs/studio.md)."""
    from embeddings.cohorts.overview import version_overview
    from seqcohort.studio_report import render_report

    vdir = tmp_path / "versions" / "v1"
    shutil.copytree((trained_workspace / "current").resolve(), vdir)
    cs = json.loads((vdir / "cohorts.json").read_text())
    n = len(cs["cohorts"])
    cs["meta"]["tiers"] = {"tier_labels": ["High intent", "Low intent"], "cohort_tier": [int(i >= n // 2) for i in range(n)]}
    for c in cs["cohorts"]:
        c["profile"]["extra"]["goal"] = {"goal": "purchase within 30 days", "expected_rate": 0.5 if c["id"] < n // 2 else 0.1}
    (vdir / "cohorts.json").write_text(json.dumps(cs))
    parent = json.loads(json.dumps(cs))  # a previous version: the same cohorts, 5 users smaller each
    for c in parent["cohorts"]:
        c["size"] -= 5
    (tmp_path / "versions" / "v0").mkdir()
    (tmp_path / "versions" / "v0" / "cohorts.json").write_text(json.dumps(parent))
    (vdir / "version.json").write_text(json.dumps({**json.loads((vdir / "version.json").read_text()), "parent": "v0"}))
    a = pl.read_parquet(vdir / "assignments.parquet")
    p = np.random.default_rng(0).beta(2, 5, a.height)
    a.with_columns(propensity=pl.Series(p, dtype=pl.Float32)).write_parquet(vdir / "assignments.parquet")
    curve = version_overview(vdir)["sizing"]
    out = tmp_path / "goal.html"
    out.write_text(render_report(vdir))
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    tiers = page.eval_on_selector_all("details.tier > summary", "els => els.map(e => e.textContent)")
    assert [t.split(" · ")[0].strip() for t in tiers] == ["High intent", "Low intent"]
    assert page.eval_on_selector_all("details.tier", "els => els.map(e => e.querySelectorAll('.cohort').length)") == \
        [n // 2, n - n // 2]
    assert page.eval_on_selector_all(".cohort .up", "els => els.map(e => e.textContent)") == ["▲ +5 since last version"] * n
    page.eval_on_selector("#sizing-slider", "s => { s.value = 49; s.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#sizing-size") == f"{curve[49]['size']:,}"
    assert page.inner_text("#sizing-expected") == f"{math.floor(curve[49]['expected'] + 0.5):,}"  # JS Math.round
    assert curve[49]["size"] == pytest.approx(a.height / 2, abs=2)
    page.wait_for_selector("#sizing-chart svg", state="attached")
    shot(page, "report-goal-aware-phone")
    page.close()
