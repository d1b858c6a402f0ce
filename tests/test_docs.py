"""The user docs stay true to the code: the generated config reference, the commands, options and
HTTP routes they show, and their links."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_DOCS = [README, *DOCS, ROOT / "bench" / "RESULTS.md"]


def _gen_config_doc():
    spec = importlib.util.spec_from_file_location("gen_config_doc", ROOT / "docs" / "gen_config_doc.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configuration_doc_is_generated_from_the_config_code():
    gen = _gen_config_doc()
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == gen.render(), "docs/configuration.md is stale: run `python docs/gen_config_doc.py`"


def test_configuration_doc_lists_every_key():
    from embeddings.config import Config

    text = (ROOT / "docs" / "configuration.md").read_text()
    for section, field in Config.model_fields.items():
        for key in field.annotation.model_fields:  # type: ignore[union-attr]
            assert f"| `{section}.{key}` |" in text


def test_readme_is_a_short_guide_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    quick = re.search(r"^## Quick start\n(.*?)^## ", text, re.S | re.M)
    assert quick, "README.md has no Quick start section"
    commands = re.findall(r"^```bash\n(.*?)^```", quick.group(1), re.S | re.M)
    lines = [line.split("#")[0].strip() for block in commands for line in block.splitlines()]
    assert [line for line in lines if line] == ["make demo", "make test"]


# ----------------------------------------------------------------------------- commands and options

def _shell_lines(text: str) -> list[str]:
    """Command lines from fenced code blocks (continuations joined) and inline `seqcohort ...` spans."""
    out = []
    for block in re.findall(r"^```(?:bash|sh|console)?[ \t]*\n(.*?)^```", text, re.S | re.M):
        out += block.replace("\\\n", " ").splitlines()
    out += re.findall(r"`(seqcohort [^`]+)`", text)
    return [line.strip() for line in out if line.strip().startswith("seqcohort ")]


def _check_command_line(line: str) -> list[str]:
    """Problems with one `seqcohort ...` line: an unknown command, or an option the command lacks."""
    from seqcohort.cli.root import cli

    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as e:
        return [f"{line!r}: cannot be split like a shell would ({e})"]
    cmd: click.Command = cli
    params = list(cli.params)
    problems = []
    i = 1
    while i < len(tokens):
        tok = tokens[i].strip("[]")
        if tok in ("&&", "|", ";", ">", "..."):
            break
        if tok.startswith("-") and tok not in ("-",):
            name = tok.split("=", 1)[0]
            known = {o for p in params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
            if name not in known:
                problems.append(f"{line!r}: `{' '.join(tokens[:2])}` has no option {name}")
            param = next((p for p in params if name in p.opts), None)
            takes_value = isinstance(param, click.Option) and not param.is_flag and not param.count
            i += 2 if takes_value and "=" not in tok else 1
            continue
        if isinstance(cmd, click.Group):
            if tok not in cmd.commands:
                problems.append(f"{line!r}: no command {tok!r} under `{cmd.name}`")
                break
            cmd = cmd.commands[tok]
            params += cmd.params
        i += 1
    return problems


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cli_line_in_the_docs_exists(doc: Path):
    if not doc.is_file():
        pytest.skip(f"{doc.relative_to(ROOT)} not generated yet")
    problems = [p for line in _shell_lines(doc.read_text()) for p in _check_command_line(line)]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_mistakes():
    assert _check_command_line("seqcohort run --events x.parquet --workspace ws") == []
    assert _check_command_line("seqcohort cohorts --workspace ws rename 3 'VIP fans'") == []
    assert _check_command_line("seqcohort rewind --workspace ws")  # no such command
    assert _check_command_line("seqcohort run --event x.parquet")


# ----------------------------------------------------------------------------- HTTP routes

def _routes() -> set[tuple[str, str]]:
    src = "\n".join(p.read_text() for p in sorted((ROOT / "serving").rglob("*.py")))  # app.py and its routers
    return {(m.upper(), p) for m, p in re.findall(r'@(?:app|router)\.(get|post|put|delete|patch)\(\s*"([^"]+)"', src)}


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_http_route_in_the_docs_exists(doc: Path):
    routes = _routes()
    assert ("POST", "/v1/assign") in routes
    mentioned = set(re.findall(r"\b(GET|POST|PUT|DELETE|PATCH) (/[\w/{}.\-]*)", doc.read_text()))
    missing = sorted(mentioned - routes)
    assert not missing, f"{doc.name} documents routes serving/app.py does not have: {missing}"


# ----------------------------------------------------------------------------- links

def _anchors(md: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", md.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", text, re.M):
        a = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    if not doc.is_file():
        pytest.skip(f"{doc.relative_to(ROOT)} not generated yet")
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not problems, f"{doc.name}: " + "; ".join(problems)


def test_code_links_to_decisions_resolve():
    """Every `docs/decisions.md#anchor` a code comment links to is a heading there."""
    anchors = _anchors(ROOT / "docs" / "decisions.md")
    missing = sorted(
        f"{path.relative_to(ROOT)}: #{anchor}"
        for pkg in ("embeddings", "training", "serving", "seqcohort")
        for path in (ROOT / pkg).rglob("*.py")
        for anchor in re.findall(r"docs/decisions\.md#([\w\-]+)", path.read_text())
        if anchor not in anchors
    )
    assert not missing, "links to decisions with no heading: " + "; ".join(missing)
