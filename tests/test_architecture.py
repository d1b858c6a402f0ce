"""The house rules: no import cycles (lazy imports inside functions included) and the layer contracts.

    seqcohort  ->  training, serving  ->  embeddings
    embeddings imports no lightning, ray, training, serving or seqcohort
    training imports no serving or seqcohort; serving imports no training or seqcohort

The graph is read from the source (every `import` statement, at any depth), so a lazy import
inside a function counts like one at the top of the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embeddings", "training", "serving", "seqcohort")
FORBIDDEN = {
    "embeddings": ("lightning", "pytorch_lightning", "ray", "training", "serving", "seqcohort"),
    "training": ("serving", "seqcohort", "ray.serve"),
    "serving": ("training", "seqcohort", "lightning", "pytorch_lightning"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every module `path` imports: the most specific known module, or the raw name for third parties."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(p, m, known) for m, p in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read() -> None:
    g = _graph()
    assert "embeddings.cohorts.cluster" in g["embeddings.cohorts.model"]
    assert "seqcohort.api" in g["seqcohort"]  # a lazy import inside __getattr__ is an edge too
    assert "faiss" in g["embeddings.cohorts.index"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_lazy_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_contracts(layer: str) -> None:
    bad = [
        f"{mod} imports {imp}"
        for mod, imps in _graph().items()
        if mod == layer or mod.startswith(layer + ".")
        for imp in sorted(imps)
        if any(imp == f or imp.startswith(f + ".") for f in FORBIDDEN[layer])
    ]
    assert bad == []
