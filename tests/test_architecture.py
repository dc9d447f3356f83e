"""ARCHITECTURE.md stays true: layers, no import cycle, small modules, a lean start-up.

Every module under pyinit/ is parsed with `ast`. Its runtime imports count,
those inside functions included (a lazy import is still an arrow); imports
under `if TYPE_CHECKING:` do not, since they never run. From those arrows:

(a) layering: each layer imports only the layers LAYERS allows (itself too);
(b) no import cycle between modules;
(c) no module over MAX_LINES lines;
(d) the single-command path (the built pyz running `-- true`, seen through
    `python3 -X importtime`) imports no pyinit module outside it;
and ARCHITECTURE.md shows exactly the LAYERS table and names every package.

The `test_checker_*` tests run the same checks on a small package written to
a temporary directory with the faults in it, so each check is shown to fail.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = REPO_ROOT / "ARCHITECTURE.md"
MAX_LINES = 400

#: What each layer may import besides itself. ARCHITECTURE.md shows this table.
LAYERS: dict[str, frozenset[str]] = {
    "bootstrap": frozenset(),
    "core": frozenset(),
    "single": frozenset({"core"}),
    "config": frozenset({"core"}),
    "control": frozenset({"core", "bootstrap"}),
    "python": frozenset({"core", "config"}),
    "supervise": frozenset({"core", "config", "control", "python"}),
    "entry": frozenset({"bootstrap", "core", "single", "config", "control", "python", "supervise"}),
}
#: Modules outside the layer packages, by layer.
TOP_LEVEL = {
    "pyinit._bootstrap": "bootstrap",
    "pyinit": "entry",
    "pyinit.__main__": "entry",
    "pyinit.cli": "entry",
    "pyinit.runner": "entry",
    "pyinit.oslo_config_glue": "entry",
}
#: What `pyinit -- CMD` may import: these modules and the packages below.
SINGLE_PATH_MODULES = frozenset(
    {"pyinit", "pyinit.__main__", "pyinit.cli", "pyinit.runner", "pyinit._bootstrap"}
)
SINGLE_PATH_PACKAGES = ("pyinit.core", "pyinit.single")


# -- the checker ------------------------------------------------------------------------


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: list[tuple[str, int]] = field(default_factory=list)  # (module, line)


def load_modules(package: Path) -> dict[str, Module]:
    """Every module of `package` (a directory named pyinit) with its runtime imports."""
    modules: dict[str, Module] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        text = path.read_text(encoding="utf-8")
        modules[".".join(parts)] = Module(".".join(parts), path, len(text.splitlines()))
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        is_package = module.path.name == "__init__.py"
        for node in _runtime_nodes(tree):
            module.imports.extend(_targets(node, module.name, is_package, modules))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that can run: anywhere, except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                found.extend(_runtime_nodes(ast.Module(body=[other], type_ignores=[])))
        elif isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        else:
            found.extend(_runtime_nodes(child))
    return found


def _targets(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict[str, Module]
) -> list[tuple[str, int]]:
    """The pyinit modules one import statement loads (`from pkg import mod` is pkg.mod)."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package else name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        wanted = [f"{base}.{alias.name}" for alias in node.names]
    found = []
    for target in wanted:
        while target and target not in modules:  # an attribute: its module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append((target, node.lineno))
    return sorted(set(found))


def layer_of(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    package = module.split(".")[1]
    if package not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md")
    return package


def layering_violations(modules: dict[str, Module]) -> list[str]:
    problems = []
    for module in modules.values():
        layer = layer_of(module.name)
        for target, line in module.imports:
            other = layer_of(target)
            if other != layer and other not in LAYERS[layer]:
                problems.append(
                    f"{module.path.name}:{line}: {module.name} imports {target}"
                    f" ({layer} may not import {other})"
                )
    return problems


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: [t for t, _ in module.imports] for name, module in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def one_cycle(modules: dict[str, Module], component: list[str]) -> str:
    """One concrete loop through `component`, as `a -> b -> a` (shortest from its first)."""
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target, _ in modules[node].imports:
            if target == start:
                return " -> ".join([*paths[node], start])
            if target in component and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return ", ".join(component)


def oversized(modules: dict[str, Module]) -> list[str]:
    return [
        f"{m.name}: {m.lines} lines (max {MAX_LINES})"
        for m in modules.values()
        if m.lines > MAX_LINES
    ]


def outside_single_path(imported: set[str]) -> set[str]:
    return {
        name
        for name in imported
        if (name == "pyinit" or name.startswith("pyinit."))
        and name not in SINGLE_PATH_MODULES
        and not any(name == p or name.startswith(p + ".") for p in SINGLE_PATH_PACKAGES)
    }


def documented_layers(text: str) -> dict[str, frozenset[str]]:
    """The table between the `<!-- layers` and `<!-- /layers -->` markers."""
    block = text.split("<!-- layers", 1)[1].split("<!-- /layers -->", 1)[0]
    table: dict[str, frozenset[str]] = {}
    for row in re.findall(r"^\|\s*`(\w+)`\s*\|([^|]*)\|", block, re.MULTILINE):
        name, allowed = row[0], row[1].strip()
        if allowed == "everything":
            table[name] = frozenset(LAYERS) - {name}
        elif allowed.startswith("("):
            table[name] = frozenset()
        else:
            table[name] = frozenset(word.strip() for word in allowed.split(","))
    return table


# -- the checks on pyinit ----------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules(REPO_ROOT / "pyinit")


def test_every_module_is_in_a_layer_and_imports_only_what_its_layer_may(modules) -> None:
    assert len(modules) > 40  # the probe sees the package
    assert layering_violations(modules) == []


def test_no_import_cycle_between_modules(modules) -> None:
    cycles = import_cycles(modules)
    assert [one_cycle(modules, component) for component in cycles] == []


def test_no_module_over_the_line_limit(modules) -> None:
    assert oversized(modules) == []


def test_architecture_md_shows_the_layer_table_and_every_package() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    assert documented_layers(text) == LAYERS
    packages = {p.parent.name for p in (REPO_ROOT / "pyinit").glob("*/__init__.py")}
    assert packages <= set(LAYERS), f"packages in no layer: {packages - set(LAYERS)}"
    for package in packages:
        assert f"`{package}`" in text, f"ARCHITECTURE.md does not name {package}/"
    assert "ARCHITECTURE.md" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_single_command_path_imports_only_core_single_and_the_entry(pyz_path) -> None:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("/usr/bin/python3 is missing: the pyz's interpreter")
    done = subprocess.run(
        ["/usr/bin/python3", "-X", "importtime", str(pyz_path), "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "pyinit.single.command" in imported  # the probe sees pyinit's own modules
    assert outside_single_path(imported) == set()


# -- each check can fail ------------------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pyinit"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_checker_finds_an_upward_import_even_inside_a_function(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/loop.py": "def f():\n    from pyinit.supervise import unit\n",
            "supervise/__init__.py": "",
            "supervise/unit.py": "from pyinit.core import loop\n",
            "control/__init__.py": "",
            "control/server.py": "import pyinit.supervise.unit\n",
        },
    )
    problems = layering_violations(load_modules(package))
    assert len(problems) == 2
    assert any(
        "pyinit.core.loop imports pyinit.supervise.unit (core may not import supervise)" in p
        for p in problems
    )
    assert any("control may not import supervise" in p for p in problems)


def test_checker_ignores_type_checking_imports_but_not_their_else(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "supervise/__init__.py": "",
            "supervise/a.py": "from pyinit.supervise import b\n",
            "supervise/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pyinit.supervise.a import A\n"
            ),
            "supervise/c.py": (
                "TYPE_CHECKING = False\n"
                "if TYPE_CHECKING:\n    pass\nelse:\n    from pyinit.supervise import d\n"
            ),
            "supervise/d.py": "def f():\n    from . import c\n",
        },
    )
    found = load_modules(package)
    assert import_cycles(found) == [["pyinit.supervise.c", "pyinit.supervise.d"]]
    cycle = one_cycle(found, ["pyinit.supervise.c", "pyinit.supervise.d"])
    assert cycle == "pyinit.supervise.c -> pyinit.supervise.d -> pyinit.supervise.c"


def test_checker_finds_a_long_module_and_a_module_in_no_layer(tmp_path: Path) -> None:
    package = write_package(
        tmp_path, {"core/__init__.py": "", "core/big.py": "x = 1\n" * (MAX_LINES + 1)}
    )
    assert oversized(load_modules(package)) == [f"pyinit.core.big: {MAX_LINES + 1} lines (max 400)"]
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("pyinit.plugins.extra")


def test_checker_flags_services_modules_on_the_single_command_path() -> None:
    imported = {"pyinit", "pyinit.cli", "pyinit.core.loop", "pyinit.single.command", "json"}
    assert outside_single_path(imported) == set()
    assert outside_single_path(imported | {"pyinit.config.load", "pyinit.cores"}) == {
        "pyinit.config.load",
        "pyinit.cores",
    }


def test_checker_reads_a_changed_table_in_the_doc() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    changed = text.replace(
        "| `python`    | core, config ", "| `python`    | core, config, supervise "
    )
    assert changed != text
    assert documented_layers(changed)["python"] == {"core", "config", "supervise"}
    assert documented_layers(changed) != LAYERS
