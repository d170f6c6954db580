"""The package's imports point one way: down the layer order, with no circle.

Every ``import`` / ``from … import`` of every module under ``src/minority`` is read with
``ast``, those inside functions included. A module's unit is its first name below ``minority``
(``minority.sampling.loop`` → ``sampling``, ``minority.errors`` → ``errors``). Top to bottom:

* entry glue — ``cli`` and ``demo`` (its own script, which composes configs), then ``schema``
  (config checks) and ``report`` (its own script);
* ``tasks`` → ``lit`` → ``instantiate`` (config-built objects, Hydra);
* the Lightning- and Hydra-free layers: ``sampling`` → ``guidance`` → ``scores`` → ``diffusion``
  → ``models`` / ``metrics`` (siblings: neither imports the other) → ``data``;
* base modules: ``outputs``, ``weights``, ``provenance``, ``seeding``, then ``errors``.

A module may import its own unit or any unit below it. The pure layers and the base modules
import neither Lightning nor Hydra nor OmegaConf.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "minority"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "demo"),
    ("schema", "report"),
    ("tasks",),
    ("lit",),
    ("instantiate",),
    ("sampling",),
    ("guidance",),
    ("scores",),
    ("diffusion",),
    ("models", "metrics"),
    ("data",),
    ("outputs", "weights", "provenance", "seeding"),
    ("errors",),
)
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}
PURE = {unit for layer in LAYERS[LAYERS.index(("sampling",)) :] for unit in layer}
CONFIG_AND_TRAINING = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf")

Imports = dict[str, list[tuple[str, int]]]


def module_name(path: Path, root: Path) -> str:
    """``root/a/b.py`` → ``minority.a.b``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> list:
    """(imported module, line) for every import in ``tree``, nested ones included; a
    ``from pkg import name`` naming a submodule counts as an import of that submodule."""
    found = []
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return found


def read_imports(sources: Mapping[str, tuple[str, bool]]) -> Imports:
    """Every module's imports, from ``{module: (source text, is_package)}``."""
    known = set(sources)
    return {
        module: imported_names(ast.parse(text), module, is_package, known)
        for module, (text, is_package) in sources.items()
    }


def package_sources(root: Path = SOURCE) -> dict[str, tuple[str, bool]]:
    return {
        module_name(path, root): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(root.rglob("*.py"))
    }


def unit(module: str) -> str | None:
    """The layer unit of a module of the package (None for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def upward_imports(imports: Imports) -> list[str]:
    """Imports of a unit from a unit that is not below it (or of an unplaced unit)."""
    bad = []
    for module, targets in imports.items():
        for target, line in targets:
            src, dst = unit(module), unit(target)
            if src is None or dst is None or src == dst:
                continue
            if src not in RANK or dst not in RANK or RANK[dst] <= RANK[src]:
                bad.append(f"{module}:{line} imports {target}")
    return bad


def heavy_imports(imports: Imports) -> list[str]:
    """Imports of Lightning, Hydra or OmegaConf from the pure layers or the base modules."""
    return [
        f"{module}:{line} imports {target}"
        for module, targets in imports.items()
        if unit(module) in PURE
        for target, line in targets
        if target.split(".")[0] in CONFIG_AND_TRAINING
    ]


def import_circles(imports: Imports) -> list[list[str]]:
    """Circles among the package's modules (Tarjan's strongly connected components > 1)."""
    graph = {m: sorted({t for t, _ in ts if t in imports and t != m}) for m, ts in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return circles


def lines(found: Iterable) -> str:
    return "\n".join(str(item) for item in found)


IMPORTS = read_imports(package_sources())


def test_every_unit_is_placed_in_the_layer_order():
    units = {unit(m) for m in IMPORTS} - {None}
    assert units <= set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"


def test_no_import_goes_up_the_layer_order():
    assert not (bad := upward_imports(IMPORTS)), lines(bad)


def test_no_import_circle_between_modules():
    assert not (circles := import_circles(IMPORTS)), lines(circles)


def test_pure_layers_import_neither_lightning_nor_hydra_nor_omegaconf():
    assert not (bad := heavy_imports(IMPORTS)), lines(bad)


def test_the_checks_catch_a_synthetic_upward_import_circle_and_lightning():
    """A lazy upward import, a circle and a nested Lightning import are all reported."""
    lazy_up = "def f():\n    from minority.lit.sampling import ShardWriter\n"
    sources = {
        "minority.data.toy": (lazy_up, False),
        "minority.lit.sampling": ("from ..data import toy\n", False),
        "minority.lit": ("", True),
        "minority.scores.a": ("from . import b\n", False),
        "minority.scores.b": ("import minority.scores.a\n", False),
        "minority.scores": ("", True),
        "minority.models.x": ("def g():\n    import pytorch_lightning as pl\n", False),
    }
    imports = read_imports(sources)
    assert upward_imports(imports) == ["minority.data.toy:2 imports minority.lit.sampling"]
    assert sorted(import_circles(imports)) == [
        ["minority.data.toy", "minority.lit.sampling"],
        ["minority.scores.a", "minority.scores.b"],
    ]
    assert heavy_imports(imports) == ["minority.models.x:2 imports pytorch_lightning"]
