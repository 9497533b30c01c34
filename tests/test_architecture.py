"""Architecture guards: the modules of registry/ and runner/ checked against the intended design.

The design is the data at the top of this file (which package may import which, the few seams
between registry and runner, the server's one entry point, the length limit): a maintainer
changes a rule there, not in the tests. The import graph is read statically, so every import
counts, including those inside functions and under `if TYPE_CHECKING:`: a dependency of the
design is one whether or not it runs at import time. Each test reports all its violations at
once, one per line.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("registry", "runner")

# The rules ---------------------------------------------------------------------------------------

#: registry's top-level modules: leaves that every registry package may import.
LEAVES = frozenset({"registry", "registry.config", "registry.units"})
#: What the leaves may import besides each other.
LEAF_DEPENDENCIES = frozenset({"runner.duration"})

#: The packages under registry/ (registry.<name>), each with an entry in LAYERS.
REGISTRY_PACKAGES = frozenset(
    {"model", "storage", "web", "egress", "auth", "mirror", "library", "airgap", "cache", "server", "cli"}
)
#: Which registry package may import which; "runner" stands for every runner module. A package may
#: always import its own modules and the LEAVES.
LAYERS: dict[str, frozenset[str]] = {
    "model": frozenset(),
    "storage": frozenset({"model"}),
    "web": frozenset({"storage", "model"}),
    "egress": frozenset(),
    "auth": frozenset({"egress", "web", "storage", "model"}),
    "mirror": frozenset({"egress", "auth", "web", "storage", "model"}),
    "library": frozenset({"mirror", "web", "storage", "model"}),
    "airgap": frozenset({"egress", "mirror", "library", "auth", "web", "storage", "model"}),
    "cache": frozenset({"mirror", "library", "web", "storage", "model"}),
    "server": REGISTRY_PACKAGES | {"runner"},
    "cli": frozenset({"server", "airgap", "auth", "storage", "model", "web"}),
}
#: Registry modules outside the packages LAYERS lets import runner that may still import these
#: runner modules: the store resolves a model to the runner's ModelSpec (runner/spec.py, the seam),
#: request bodies and manifests are decoded by the one JSON decoder (runner/jsonbody.py), and
#: /api/tags and /api/show write times as the runner's chunks do (runner/gotime.py, Go's format).
RUNNER_SEAMS: dict[str, frozenset[str]] = {
    "registry.storage.contents": frozenset({"runner.spec"}),
    "registry.library.handlers": frozenset({"runner.gotime"}),
    "registry.web.jsonbody": frozenset({"runner.jsonbody"}),
    "registry.model.manifest": frozenset({"runner.jsonbody"}),
}

#: The composition root; its modules are its own business.
SERVER = "registry.server"
#: Outside SERVER, only these modules (a name covers its submodules) may import from SERVER, and
#: only the modules listed: the CLI runs `corral serve`.
SERVER_ENTRY_POINTS: dict[str, frozenset[str]] = {
    "registry.cli": frozenset({"registry.server.app"}),
}

#: Longer modules must say in their docstring that they are LONG_ON_PURPOSE.
MAX_LINES = 700
LONG_ON_PURPOSE = "long on purpose"

# Reading the modules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "registry.cli.main"; a package is named by its __init__.py
    path: Path
    is_package: bool

    @property
    def shown(self) -> str:
        return str(self.path.relative_to(ROOT))


def _within(name: str, prefix: str) -> bool:
    """Whether `name` is the module `prefix` or one of its submodules."""
    return name == prefix or name.startswith(prefix + ".")


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for top in SOURCE_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            found[name] = Module(name, path, is_package)
    return found


@cache
def syntax_tree(name: str) -> ast.Module:
    module = modules()[name]
    return ast.parse(module.path.read_text(), filename=str(module.path))


def _known(name: str) -> str | None:
    """The repository module an import of `name` loads: the longest prefix that is one of ours."""
    parts = name.split(".")
    if parts[0] not in SOURCE_PACKAGES:
        return None
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules():
            return candidate
    return None


def _from_base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a `from … import` statement names, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(module: Module) -> set[str]:
    targets: set[str | None] = set()
    for node in ast.walk(syntax_tree(module.name)):
        if isinstance(node, ast.Import):
            targets.update(_known(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from pkg import name` imports the module pkg.name when there is one; importing a
                # submodule also runs its package's __init__, an edge left out here on purpose.
                targets.add(submodule if submodule in modules() else _known(base))
    return {t for t in targets if t is not None and t != module.name}


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Each module of registry/ and runner/ → the modules of this repository it imports."""
    return {name: frozenset(_imports_of(module)) for name, module in modules().items()}


def _fail(title: str, lines: list[str], count: int | None = None) -> None:
    """Fail listing `lines` under `title`, with how many violations there are (one a line unless `count`)."""
    if lines:
        pytest.fail(f"{title} ({len(lines) if count is None else count}):\n  " + "\n  ".join(lines), pytrace=False)


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of the graph, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _package(name: str) -> str:
    """The package LAYERS knows a module by: registry.<package>…, or "runner"."""
    parts = name.split(".")
    return "runner" if parts[0] == "runner" else parts[1]


# The tests ---------------------------------------------------------------------------------------


def test_the_exceptions_in_the_rules_are_in_use() -> None:
    """Each seam and entry point the rules allow is an import the code makes: this keeps the rules
    current, and shows that the import graph is read at all."""
    graph = import_graph()
    unused = [
        f"{name} → {target}"
        for name, targets in sorted(RUNNER_SEAMS.items())
        for target in sorted(targets)
        if target not in graph.get(name, frozenset())
    ]
    for entry, targets in sorted(SERVER_ENTRY_POINTS.items()):
        imported = {target for name, made in graph.items() if _within(name, entry) for target in made}
        unused += [f"{entry} → {target}" for target in sorted(targets - imported)]
    _fail("allowed imports that no module makes any more (take them out of the rules)", unused)


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = [component for component in strongly_connected(graph) if len(component) > 1]
    lines = []
    for cycle in cycles:
        lines.append(f"cycle of {len(cycle)} modules: {', '.join(cycle)}")
        lines.extend(f"    {m} → {', '.join(sorted(graph[m] & set(cycle)))}" for m in cycle)
    _fail("import cycles, each module listed with what it imports inside its cycle", lines, len(cycles))


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    # `__main__` modules are left out: importing one runs the program.
    names = [name for name in modules() if not name.endswith(".__main__")]
    script = (
        "import importlib, json, sys, traceback\n"
        "failures = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException as exc:\n"
        "        failures[name] = ''.join(traceback.format_exception_only(exc)).strip()\n"
        "print(json.dumps(failures))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"the importing interpreter failed:\n{result.stderr[-4000:]}"
    failures: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    _fail("modules that fail to import", [f"{name}: {error}" for name, error in sorted(failures.items())])


def test_runner_never_imports_registry() -> None:
    graph = import_graph()
    violations = sorted(
        (name, target)
        for name, targets in graph.items()
        if _within(name, "runner")
        for target in targets
        if _within(target, "registry")
    )
    _fail("runner modules importing registry", [f"{a} → {b}" for a, b in violations])


def test_only_the_cli_reaches_into_the_server() -> None:
    def allowed(importer: str, target: str) -> bool:
        return any(_within(importer, entry) and target in targets for entry, targets in SERVER_ENTRY_POINTS.items())

    graph = import_graph()
    violations = sorted(
        (name, target)
        for name, targets in graph.items()
        if not _within(name, SERVER)
        for target in targets
        if _within(target, SERVER) and not allowed(name, target)
    )
    entry = "; ".join(f"{k} may import {', '.join(sorted(v))}" for k, v in SERVER_ENTRY_POINTS.items())
    _fail(f"modules outside {SERVER} importing it (only {entry})", [f"{a} → {b}" for a, b in violations])


def test_registry_packages_import_only_the_layers_below() -> None:
    on_disk = {_package(name) for name in modules() if _within(name, "registry") and name not in LEAVES}
    lines = []
    for p in sorted(on_disk | REGISTRY_PACKAGES | LAYERS.keys()):
        found = [
            where
            for where, names in (
                ("on disk", on_disk),
                ("in REGISTRY_PACKAGES", REGISTRY_PACKAGES),
                ("in LAYERS", LAYERS.keys()),
            )
            if p in names
        ]
        if len(found) < 3:
            lines.append(
                f"registry.{p} is only {' and '.join(found)}: a package must be on disk, in REGISTRY_PACKAGES "
                "and in LAYERS (a top-level module belongs in LEAVES)"
            )
    for name, targets in sorted(import_graph().items()):
        if not _within(name, "registry"):
            continue
        for target in sorted(targets):
            if target in LEAVES:
                continue
            if name in LEAVES:
                if target not in LEAF_DEPENDENCIES:
                    allowed = ", ".join(sorted(LEAF_DEPENDENCIES))
                    lines.append(f"{name} → {target} (a top-level leaf may import only the leaves and {allowed})")
                continue
            package, other = _package(name), _package(target)
            # A package missing from LAYERS is reported once above, not at each of its imports.
            if package == other or other in LAYERS.get(package, REGISTRY_PACKAGES | {"runner"}):
                continue
            if target in RUNNER_SEAMS.get(name, frozenset()):
                continue
            lines.append(f"{name} → {target} (package {package} may not import package {other})")
    _fail("imports against the package layering", lines)


def test_no_module_is_too_long() -> None:
    lines = []
    for name, module in modules().items():
        length = len(module.path.read_text().splitlines())
        docstring = ast.get_docstring(syntax_tree(name)) or ""
        if length > MAX_LINES and LONG_ON_PURPOSE not in docstring:
            lines.append(f"{module.shown}: {length} lines")
    _fail(f'modules over {MAX_LINES} lines whose docstring does not say "{LONG_ON_PURPOSE}"', lines)
