"""The package's import structure: each layer imports only the layers below it, and no module imports itself
through others (function-local imports included: hiding an import in a function does not remove the dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fe_train"
LAYERS = (("errors", "__init__", "entry_point"), ("config", "launch"), ("data",), ("model",), ("tracking", "checkpoint"),
          ("engine",), ("stages", "generate", "units", "release"), ("eval",), ("fixtures",), ("demo",),
          ("cli", "__main__", "reproduce"))
"""Bottom to top: a module may import its own layer and those below."""
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every fe_train module and the fe_train modules it imports (a name imported from a package that is a module
    of it counts as that module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("fe_train")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fe_train"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def test_every_import_goes_down_the_layers():
    upward = [f"{a} imports {b}" for a, targets in imports().items() for b in targets if layer(b) > layer(a)]
    assert upward == []


def test_no_import_cycle():
    graph = imports()
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if target == "fe_train":
                continue  # the package's __init__ (its version) imports nothing
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
