"""The README's Python example runs exactly as written (the block under "## Python API")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_block(text: str) -> str:
    """The one ```python block of the README's "## Python API" section (up to the next "## ")."""
    m = re.search(r"^## Python API[ \t]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, 'README.md has no "## Python API" section'
    blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", m.group(1), re.S | re.M)
    assert len(blocks) == 1, f'"## Python API" must hold exactly one ```python block, found {len(blocks)}'
    return blocks[0]


def test_python_api_block_is_found():
    code = python_api_block(README.read_text())
    assert "import seqcohort as sc" in code
    compile(code, "README.md (## Python API)", "exec")  # at least it parses


@pytest.mark.slow
def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    code = python_api_block(README.read_text())
    monkeypatch.chdir(tmp_path)  # the example writes my_workspace/ where it runs
    exec(compile(code, "README.md (## Python API)", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "my_workspace").is_dir()
