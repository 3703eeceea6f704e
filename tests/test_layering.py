"""The package layering README's Architecture section promises, checked on the source itself.

model/ and runtime/ are shared by train/, eval/ and search/ and import none of them; eval/ never
imports train/ (the trainer may call the evaluator, not the other way round); search/ loads its
model through model/ (model/trained_model.py) and its thumbnails through shards/, and imports
neither eval/ nor train/, and neither imports it; and no first-party module imports itself back
through others, at module level or inside a function.
"""

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("pipeline", "shards", "model", "runtime", "train", "eval", "search", "tools")
MAY_NOT_IMPORT = {"model": {"train", "eval", "search"}, "runtime": {"train", "eval", "model", "search"}, "eval": {"train", "search"},
                  "shards": {"train", "eval", "model", "search"}, "pipeline": {"train", "eval", "search"}, "search": {"train", "eval"},
                  "train": {"search"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def executed_nodes(tree: ast.AST, annotations_too: bool = False):
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (annotations only, never run) unless
    ``annotations_too``: a cycle through annotations is still two modules that need each other."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not annotations_too and isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def first_party_imports(annotations_too: bool = False) -> dict[str, set[str]]:
    """module -> the first-party modules it imports (anywhere in its body)."""
    modules = {module_name(p): p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in executed_nodes(ast.parse(path.read_text()), annotations_too):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def test_shared_packages_do_not_import_their_users():
    graph = first_party_imports()
    assert any(name.startswith("model.") for name in graph) and any(name.startswith("runtime.") for name in graph)
    offences = [(module, target) for module, targets in graph.items() for target in targets
                if target.split(".")[0] in MAY_NOT_IMPORT.get(module.split(".")[0], set())]  # fmt: skip
    assert not offences


def test_no_import_cycles():
    graph = first_party_imports(annotations_too=True)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path + [module, target]
            if target not in state:
                cycle = visit(target, path + [module])
                if cycle:
                    return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)
