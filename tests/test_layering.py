"""The package's import order (STYLE.md convention 1, issue 18 section 2), read with ``ast`` from
every module, imports inside functions included:

    errors/config -> audio, data -> models -> weights -> loading -> ensemble, evaluation, index
                  -> train -> app

A module may import its own layer and the layers before it, never a later one; and no import
cycle exists between modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "earshot"

LAYERS: list[set[str]] = [
    {"earshot.errors", "earshot.config", "earshot.registry", "earshot.utils", "earshot.threads"},
    {"earshot.audio", "earshot.data", "earshot.metrics", "earshot.relevance", "earshot.losses",
     "earshot.health"},
    {"earshot.models"},
    {"earshot.weights"},
    {"earshot.loading"},
    {"earshot.ensemble", "earshot.evaluation", "earshot.index", "earshot.zeroshot", "earshot.submission",
     "earshot.moments"},
    {"earshot.train"},
    {"earshot.app"},
]
# The package facade (earshot/__init__.py) re-exports `load_model` and `Index` lazily for users;
# lower modules import only its `__version__`. It is the top of the house, not a layer.
FACADE = "earshot"
# Upward imports that remain, each inside a function, each for one stated reason:
ALLOWED_UPWARD = {
    # Model.find_moments (the numpy API): the sliding-window baseline over the model it wraps;
    # earshot.moments.find opens no model, so no cycle.
    ("earshot.loading.retriever", "earshot.moments.find"),
    # create_model(cfg, load_weights=True) fills a tower from its published file (`weights:`).
    ("earshot.models.biencoder", "earshot.loading.pretrained"),
    # A tower's tokenizer named by registry name ("laion_clap_tokenizer") inside a stored config.
    ("earshot.models.text.clap", "earshot.loading.pretrained"),
    ("earshot.models.text.msclap", "earshot.loading.pretrained"),
    ("earshot.models.text.towers", "earshot.weights"),
}


def _modname(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_modname(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """earshot modules imported anywhere in ``path`` (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in MODULES)
    return {n for n in names if n == "earshot" or n.startswith("earshot.")}


def _layer(module: str) -> int | None:
    if module == FACADE:
        return 0  # what lower modules take from it: __version__
    group = ".".join(module.split(".")[:2])
    return next((i for i, members in enumerate(LAYERS) if group in members), None)


def _violations(modules: dict[str, Path]) -> list[str]:
    out = []
    for mod, path in sorted(modules.items()):
        if mod == FACADE:
            continue
        if _layer(mod) is None:
            out.append(f"{mod} belongs to no layer")
            continue
        for name in sorted(_imports(path)):
            target = _layer(name)
            if target is None:
                out.append(f"{mod} imports {name}, which belongs to no layer")
            elif target > _layer(mod) and (mod, name) not in ALLOWED_UPWARD:
                out.append(f"{mod} (layer {_layer(mod)}) imports {name} (layer {target})")
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_imports_only_its_layer_and_below():
    assert not _violations(MODULES), "\n".join(_violations(MODULES))


def test_no_import_cycle():
    graph = {m: {n for n in _imports(p) if n in MODULES and n not in (m, FACADE)}
             for m, p in MODULES.items() if m != FACADE}
    assert not _cycles(graph), _cycles(graph)


def test_core_never_imports_trainer_or_app():
    offenders = [f"{m} imports {n}" for m, p in MODULES.items()
                 if _layer(m) is not None and _layer(m) < _layer("earshot.train")
                 for n in _imports(p) if n.startswith(("earshot.train", "earshot.app"))]
    assert not offenders, offenders


def test_checker_sees_an_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from earshot.train.loop import fit\nimport earshot.app.cli\n"
                   "def f():\n    from earshot.loading import resolve\n")
    assert {"earshot.train.loop", "earshot.app.cli", "earshot.loading"} <= _imports(bad)
    assert "earshot.loading" not in _imports(bad, top_level_only=True)
    fake = {"earshot.models.fake": bad}
    found = _violations(fake)
    assert any("imports earshot.loading (layer 4)" in v for v in found), found  # from inside a function
    assert any("imports earshot.app.cli (layer 7)" in v for v in found), found
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
