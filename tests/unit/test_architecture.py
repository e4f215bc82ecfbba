"""The layers hold: which packages may import which SDKs, and no import cycle anywhere.

Imports are read from the source (every ``import`` statement, also those inside functions and
under ``TYPE_CHECKING``), so a lazy import cannot hide a dependency or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kfops"

# The SDKs kfops talks to. Only kfops.adapters may import them; kserve is confined to the KServe
# adapter in serving, as the serving image's one server framework.
VENDOR_SDKS = {"mlflow", "feast", "great_expectations", "evidently", "kfp", "kubernetes", "boto3", "botocore", "docker"}
ADAPTERS = "kfops.adapters"
KSERVE_HOME = "kfops.serving.kserve"
# core/ is pure logic: none of the above, nor any server framework or training library.
CORE_FORBIDDEN = VENDOR_SDKS | {"kserve", "torch", "xgboost", "fastapi", "uvicorn", "httpx", "redis", "psycopg2",
                                "typer", "rich"}
# Layer order, lowest first: a module may import its own layer and those below, never above.
LAYERS = [
    ("kfops.errors", "kfops.config", "kfops.progress", "kfops.core"),
    ("kfops.adapters", "kfops.training", "kfops.datasets"),
    ("kfops.reports", "kfops.steps", "kfops.cluster", "kfops.serving"),
    ("kfops.runners",),
    ("kfops.cli",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, resolved to absolute names (relative imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # ``from kfops.x import y`` may import the submodule kfops.x.y
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def internal_imports(name: str) -> set[str]:
    return {target for target in imports_of(MODULES[name]) if target in MODULES and target != name}


def top(name: str) -> str:
    return name.split(".")[0]


def layer_of(name: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer: add its package to LAYERS")


def test_every_module_belongs_to_a_layer():
    for name in MODULES:
        if name == "kfops":
            continue
        layer_of(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_adapters_import_vendor_sdks(name):
    sdks = {top(t) for t in imports_of(MODULES[name])} & VENDOR_SDKS
    if name.startswith(ADAPTERS + ".") or name == ADAPTERS:
        return
    assert not sdks, f"{name} imports {sorted(sdks)}: go through kfops.adapters"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("kfops.core")))
def test_core_is_pure(name):
    imported = imports_of(MODULES[name])
    forbidden = {top(t) for t in imported} & CORE_FORBIDDEN
    assert not forbidden, f"{name} imports {sorted(forbidden)}"
    above = sorted(t for t in imported if t in MODULES and layer_of(t) > 0)
    assert not above, f"{name} (core) imports {above}"


def test_kserve_is_imported_only_by_the_kserve_adapter():
    importers = sorted(n for n in MODULES if "kserve" in {top(t) for t in imports_of(MODULES[n])})
    assert importers and all(n.startswith(KSERVE_HOME) for n in importers), importers


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "kfops"))
def test_no_module_imports_a_layer_above_its_own(name):
    mine = layer_of(name)
    above = sorted(t for t in internal_imports(name) if t != "kfops" and layer_of(t) > mine)
    assert not above, f"{name} (layer {mine}) imports {above} from a layer above"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` as a list of modules, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return [*stack[stack.index(nxt):], nxt]
            if colour[nxt] == WHITE and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (cycle := visit(node)):
            return cycle
    return None


def package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    # A package's __init__ is imported with each of its modules; edges to it say nothing.
    graph = {n: {t for t in internal_imports(n) if MODULES[t].name != "__init__.py"} for n in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
