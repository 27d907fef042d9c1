"""The package's shape: no import circle, and every import goes down the layers.

Read from the source (``ast``), every import counted: at the top, inside a
function, and under ``TYPE_CHECKING``. docs/architecture.md draws the same
layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "filewarden"

# Lowest first. A module may import its own layer and those below, never one above.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundations",
        {
            "filewarden",
            "filewarden.errors",
            "filewarden.dirs",
            "filewarden.log_events",
            "filewarden.logs",
            "filewarden.config",
            "filewarden.protocol",
            "filewarden.mounts",
            "filewarden.jobs",
            "filewarden.roots",
            "filewarden.notify",
            "filewarden.client",
            "filewarden.watch.hints",
            "filewarden.watch.limits",
            "filewarden.fingerprint",
            "filewarden.report",
        },
    ),
    ("catalog", {"filewarden.catalog", "filewarden.writer"}),
    (
        "deciding",
        {
            "filewarden.listing",
            "filewarden.reconcile",
            "filewarden.hasher",
            "filewarden.identity",
            "filewarden.sweep",
            "filewarden.walk",
            "filewarden.live",
            "filewarden.availability",
            "filewarden.purge",
        },
    ),
    ("running", {"filewarden.scheduler", "filewarden.watch", "filewarden.health"}),
    (
        "serving",
        {
            "filewarden.api",
            "filewarden.server",
            "filewarden.metrics",
            "filewarden.web",
            "filewarden.ship",
            "filewarden.fleet",
        },
    ),
    (
        "process",
        {"filewarden.daemon", "filewarden.cli", "filewarden.__main__", "filewarden.testing"},
    ),
]

# Watching only hints: what an event means is decided by the planner and the reconciler.
WATCH_MUST_NOT_IMPORT = (
    "filewarden.catalog",
    "filewarden.reconcile",
    "filewarden.identity",
    "filewarden.writer",
    "filewarden.sweep",
    "filewarden.live",
)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, list[str]]]:
    """What ``path`` imports, wherever the import stands: (module, names taken from it)."""
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the modules of the package it imports.

    ``from filewarden import catalog`` imports the module ``filewarden.catalog``;
    ``from filewarden.watch import Watcher`` imports ``filewarden.watch``.
    """
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for base, names in imports_of(path, package):
            modules = {f"{base}.{n}" for n in names if f"{base}.{n}" in files}
            targets |= modules
            if base in files and (not names or len(modules) < len(names)):
                targets.add(base)
        edges[name] = targets - {name}
    return edges


def circles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles: strongly connected sets of more than one module, or one importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1 or node in edges.get(node, ()):
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    """The layer a module stands on: its own entry, else its package's (catalog.files: catalog)."""
    probe = module
    while True:
        for level, (_, members) in enumerate(LAYERS):
            if probe in members:
                return level
        if "." not in probe:
            raise KeyError(f"{module} is on no layer: add it to LAYERS (and docs/architecture.md)")
        probe = probe.rpartition(".")[0]


def upward(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import from a lower layer to a higher one, as "a -> b"."""
    return sorted(
        f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in edges.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    )


def watch_deciding(edges: Mapping[str, Iterable[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in edges.items()
        if a == "filewarden.watch" or a.startswith("filewarden.watch.")
        for b in targets
        if any(b == banned or b.startswith(banned + ".") for banned in WATCH_MUST_NOT_IMPORT)
    )


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_every_module_stands_on_a_layer_and_imports_only_down() -> None:
    assert upward(graph()) == []


def test_the_watcher_only_hints() -> None:
    """Nothing under watch/ imports the catalog, the reconciler, relinking, the writer or the planner."""
    assert watch_deciding(graph()) == []


# -- the checks themselves fail when they must ----------------------------------------


def test_a_circle_is_found_also_through_type_checking_and_function_imports(
    tmp_path: Path,
) -> None:
    pkg = tmp_path / "filewarden"
    (pkg / "watch").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from filewarden.daemon import D\n"
    )
    (pkg / "daemon.py").write_text("def f():\n    from filewarden import api\n")
    (pkg / "watch" / "__init__.py").write_text("from . import aggregator\n")
    (pkg / "watch" / "aggregator.py").write_text("from .. import catalog\nfrom . import hints\n")
    (pkg / "watch" / "hints.py").write_text("")
    (pkg / "catalog.py").write_text("")
    edges = graph(pkg)
    assert edges["filewarden.watch.aggregator"] == {
        "filewarden.catalog",
        "filewarden.watch.hints",
    }
    assert circles(edges) == [["filewarden.api", "filewarden.daemon"]]
    assert watch_deciding(edges) == ["filewarden.watch.aggregator -> filewarden.catalog"]
    assert upward(edges) == ["filewarden.api (serving) -> filewarden.daemon (process)"]


def test_a_module_on_no_layer_is_named() -> None:
    with pytest.raises(KeyError, match=r"filewarden_new\.thing is on no layer"):
        layer_of("filewarden_new.thing")
