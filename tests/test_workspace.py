from __future__ import annotations

import pytest

from embeddings.errors import WorkspaceError
from embeddings.workspace import REQUIRED, Workspace


def _fill(d):
    for f in REQUIRED:
        if "." in f:
            (d / f).write_text(f)
        else:
            (d / f).mkdir()


def test_publish_swaps_current_atomically(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="no published version"):
        ws.current()
    with ws.new_version({"note": "a"}) as d:
        _fill(d)
    first = ws.current()
    with ws.new_version() as d:
        _fill(d)
    second = ws.current()
    assert first != second and len(ws.versions()) == 2
    assert ws.current_link.is_symlink()
    assert (second / "version.json").is_file()


def test_crash_mid_run_leaves_current_untouched(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.new_version() as d:
        _fill(d)
    before = ws.current()
    with pytest.raises(KeyboardInterrupt):
        with ws.new_version() as d:
            (d / "embeddings.parquet").write_text("half")
            raise KeyboardInterrupt
    assert ws.current() == before
    assert ws.versions() == [before.name]
    assert not list(ws.versions_dir.glob(".staging-*"))


def test_incomplete_version_is_refused(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="incomplete"):
        with ws.new_version() as d:
            (d / "cohorts.json").write_text("{}")
    assert not ws.has_current()
