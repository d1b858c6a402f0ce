"""`seqcohort report`: the studio page as one self-contained HTML file, for people without the server.

The same page (serving/studio/static) with its CSS, the vendored Vega builds and the version's
overview (cohorts, tiers, map, profiles, sizing) inlined; it needs no network and no server. The
actions that need the server (download, rename, pin, explain, lookalikes) are left out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from embeddings.cohorts.overview import version_overview
from embeddings.errors import WorkspaceError
from embeddings.fsutil import atomic_write_text
from embeddings.workspace import Workspace
from serving.studio.routes import STATIC


def _inline_script(js: str) -> str:
    return "<script>" + js.replace("</script", "<\\/script") + "</script>"


def render_report(version_dir: str | Path) -> str:
    """The report's HTML for one version directory."""
    data = version_overview(version_dir)
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str).replace("</", "<\\/")
    html = html.replace("<!--STUDIO-DATA-->", f"<script>window.SEQCOHORT_DATA = {payload};</script>")
    html = html.replace('<link rel="stylesheet" href="studio.css">',
                        "<style>" + (STATIC / "studio.css").read_text(encoding="utf-8") + "</style>")

    def script(m: re.Match[str]) -> str:
        src = STATIC / m.group(1)
        js = src.read_text(encoding="utf-8")
        return _inline_script(re.sub(r"//# sourceMappingURL=\S+\s*$", "", js))

    html = re.sub(r'<script src="([^"]+)"(?: defer)?></script>', script, html)
    return html.replace("<title>seqcohort studio</title>", f"<title>seqcohort cohorts · {data['version']}</title>")


def write_report(workspace: str | Path, out: str | Path, version: str | None = None) -> Path:
    """Write the report of `version` (default: current) of `workspace` to `out`, atomically."""
    ws = Workspace(workspace)
    if version is not None and version not in ws.versions():
        raise WorkspaceError(f"Workspace {ws.root} has no version {version!r}; versions: {ws.versions()}.")
    vdir = ws.current() if version is None else ws.versions_dir / version
    path = atomic_write_text(out, render_report(vdir))
    path.chmod(0o644)  # a file to share, not a private temporary
    return path
