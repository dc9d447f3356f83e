#!/usr/bin/env python3
"""Build dist/pyinit.pyz: pyinit and its dependencies in one executable file.

    python3 build_zipapp.py [--output PATH] [--wheels DIR]

The pyz needs nothing but CPython 3.11 or newer. It carries:
  * pyinit, sdnotify and python-json-logger (pure Python) at the top level;
  * psutil's Python files, and its native module for each Linux architecture
    in ARCHITECTURES as `_native/<machine>/<module>.so` (loaded through
    memfd by pyinit/_bootstrap.py, never written to disk);
  * compiled bytecode next to every module (unchecked-hash .pyc): zipimport
    cannot cache bytecode itself, and compiling on each start would cost
    more than pyinit's whole start-up. Another Python version ignores these
    .pyc files (wrong magic number) and compiles from the .py beside them.

Wheels are fetched with pip into --wheels (default build/wheels) once and
reused, so a rebuild works offline.
"""

from __future__ import annotations

import argparse
import ast
import marshal
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import CodeType

ROOT = Path(__file__).resolve().parent

PURE_DEPENDENCIES = ["sdnotify==0.3.2", "python-json-logger==4.2.0", "cronsim==2.8"]
PSUTIL = "psutil==7.2.2"
#: machine (os.uname().machine) -> pip platform tag of its manylinux wheel
#: The pyz's top-level entry: importing pyinit.__main__ runs it.
ZIP_MAIN = '"""pyinit.pyz entry: see pyinit/__main__.py."""\nimport pyinit.__main__  # noqa: F401\n'
#: What `pyinit -- COMMAND` imports, without extension (see write_pyz).
HOT_MODULES = {"__main__"} | {
    f"pyinit/{name}"
    for name in (
        "__init__", "__main__", "_bootstrap", "cli", "runner",
        "core/__init__", "core/model", "core/values", "core/loop", "core/signals", "core/spawn",
        "core/reaper", "core/logs", "single/__init__", "single/command",
    )
}  # fmt: skip
ARCHITECTURES = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True
    )


def fetch_wheels(cache: Path) -> dict[str, Path]:
    """Wheels by key ('pure:<name>' or 'psutil:<machine>'), downloading missing ones."""
    wheels: dict[str, Path] = {}
    for requirement in PURE_DEPENDENCIES:
        name, version = requirement.split("==")
        key = f"pure:{name}"
        stem = f"{name.replace('-', '_')}-{version}-"
        found = sorted(cache.glob(stem + "*.whl"))
        if not found:
            pip("wheel", "--no-deps", "-w", str(cache), requirement)
            found = sorted(cache.glob(stem + "*.whl"))
        wheels[key] = found[0]
    name, version = PSUTIL.split("==")
    for machine, platform in ARCHITECTURES.items():
        pattern = f"psutil-{version}-*{machine}*.whl"
        found = sorted(cache.glob(pattern))
        if not found:
            pip(
                "download", "--no-deps", "--only-binary=:all:", "--platform", platform,
                "--implementation", "cp", "--python-version", "3.11", "-d", str(cache), PSUTIL,
            )  # fmt: skip
            found = sorted(cache.glob(pattern))
        if not found:
            raise SystemExit(f"build_zipapp: no {PSUTIL} wheel for {machine} in {cache}")
        wheels[f"psutil:{machine}"] = found[0]
    return wheels


def unpack(wheel: Path, staging: Path, *, native_to: Path | None = None) -> None:
    """Extract a wheel's importable files; native modules go to `native_to`."""
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            top = member.split("/", 1)[0]
            if top.endswith((".dist-info", ".data")) or member.endswith("/"):
                continue
            if member.endswith(".so"):
                if native_to is not None:
                    module = Path(member).name.split(".", 1)[0]
                    native_to.mkdir(parents=True, exist_ok=True)
                    (native_to / f"{module}.so").write_bytes(archive.read(member))
                continue
            target = staging / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))


def compile_all(staging: Path) -> None:
    for source in staging.rglob("*.py"):
        py_compile.compile(
            str(source),
            cfile=str(source.with_suffix(".pyc")),
            dfile=str(source.relative_to(staging)),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


#: The pyz's first bytes: a /bin/sh launcher, the hot table (pyinit/_hotload.py),
#: then the zip (zip readers find the archive from its end, so a prefix is
#: allowed). Started as a program, the shell execs the interpreter with -I -S
#: on the archive: no `site`, no `runpy`, no PYTHON* variables, no user
#: site-packages. That is about 40% of the start-up of `python3 pyinit.pyz`
#: (which still works: the zip's __main__.py), and it keeps the application's
#: PYTHONPATH out of PID 1. On the Python the build compiled for, the -c code
#: then reads the hot table (one pread at a fixed offset) and runs its loader,
#: so the single-command modules are not imported through zipimport. The
#: pyz goes last on sys.path, after the standard library: a stdlib import
#: (`_ctypes`, for the subreaper) then never asks zipimport, whose first look
#: reads the zip's whole directory (0.5 ms of CPU); the pyz holds no stdlib
#: name, and its packages' submodules are found through their __path__. No
#: garbage collection meanwhile, as in pyinit/__main__.py: unmarshalling
#: creates thousands of objects that all live as long as pyinit.
#: The shell reads no further than the `exec` command. Path made absolute:
#: Python workers are started with the pyz on their sys.path, from their own
#: cwd. `posix`, not `os` (os.path.abspath): see pyinit/core/__init__.py.
LAUNCHER = """#!/bin/sh
# pyinit.pyz: a Python zip application; this line-oriented launcher runs it.
exec python3 -I -S -c 'import sys, posix, marshal, gc
gc.disable()
p = sys.argv.pop(1)
p = p if p[:1] == "/" else posix.getcwd() + "/" + p
sys.path.append(p)
if sys.implementation.cache_tag == "{tag}":
    f = posix.open(p, posix.O_RDONLY | posix.O_CLOEXEC)
    exec(*marshal.loads(posix.pread(f, {length:10d}, {offset:10d})))
    posix.close(f)
import pyinit.__main__' "$0" "$@"
"""


def launcher(table: bytes) -> bytes:
    """LAUNCHER for a hot table of that many bytes, written right after it."""
    size = len(LAUNCHER.format(tag=sys.implementation.cache_tag, length=0, offset=0).encode())
    text = LAUNCHER.format(tag=sys.implementation.cache_tag, length=len(table), offset=size)
    return text.encode()


def hot_table(staging: Path) -> bytes:
    """(pyinit/_hotload.py's code, {"HOT_TABLE": {module: (is package, code)}}),
    marshalled, from the compiled HOT_MODULES in `staging`."""
    stems = {stem.replace("/", ".").removesuffix(".__init__"): stem for stem in HOT_MODULES}
    del stems["__main__"]  # the zip's own entry, not a pyinit module
    table = {}
    for name in dependency_order(staging, stems):
        stem = stems[name]
        source = (staging / stem).with_suffix(".py")
        table[name] = (stem.endswith("/__init__"), compile_lean(source, staging))
    loader = compile_lean(staging / "pyinit" / "_hotload.py", staging)
    return marshal.dumps((loader, {"HOT_TABLE": table}))


def dependency_order(staging: Path, stems: dict[str, str]) -> list[str]:
    """The module names of `stems`, each after its parent packages and the hot
    modules it imports at its top level (what _hotload.preload needs)."""
    needs: dict[str, list[str]] = {}
    for name, stem in stems.items():
        tree = ast.parse((staging / stem).with_suffix(".py").read_bytes())
        found = [name.rsplit(".", n)[0] for n in range(name.count("."), 0, -1)]
        for node in tree.body:  # the top level: what runs when the module is imported
            if isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        needs[name] = [dep for dep in found if dep in stems and dep != name]
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dep in needs[name]:
                visit(dep)
            order.append(name)

    for name in sorted(stems):
        visit(name)
    return order


def compile_lean(source: Path, staging: Path) -> CodeType:
    """`source` compiled without its docstrings (a quarter of the table's
    bytes, unmarshalled on every start for nothing: no hot module reads
    __doc__), asserts kept, line numbers unchanged for tracebacks."""
    tree = ast.parse(source.read_bytes(), str(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.copy_location(ast.Pass(), body[0])
    name = source.relative_to(staging).as_posix()
    return compile(tree, name, "exec", dont_inherit=True)


def write_pyz(staging: Path, target: Path) -> None:
    """The executable zip: the launcher (LAUNCHER), the hot table, then the archive.

    The modules of the single-command path (HOT_MODULES) are stored
    uncompressed in the zip too, for `python3 pyinit.pyz` and other Python
    versions, since they are read on every start-up and inflating them
    costs more than reading them; everything else (services mode, the
    dependencies) is compressed.
    """
    table = hot_table(staging)
    with open(target, "wb") as out:
        out.write(launcher(table))
        out.write(table)
        with zipfile.ZipFile(out, "w") as archive:
            for path in sorted(staging.rglob("*")):
                if path.is_dir():
                    continue
                name = path.relative_to(staging).as_posix()
                hot = name.rsplit(".", 1)[0] in HOT_MODULES
                method = zipfile.ZIP_STORED if hot else zipfile.ZIP_DEFLATED
                archive.write(path, name, compress_type=method)
    os.chmod(target, 0o755)


def build(output: Path, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = fetch_wheels(cache)
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "app"
        shutil.copytree(
            ROOT / "pyinit",
            staging / "pyinit",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for key, wheel in wheels.items():
            kind, _, machine = key.partition(":")
            if kind == "pure":
                unpack(wheel, staging)
            else:
                unpack(wheel, staging, native_to=staging / "_native" / machine)
        (staging / "__main__.py").write_text(ZIP_MAIN)
        compile_all(staging)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".tmp")
        write_pyz(staging, partial)
        os.replace(partial, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / "pyinit.pyz")
    parser.add_argument("--wheels", type=Path, default=ROOT / "build" / "wheels")
    args = parser.parse_args()
    build(args.output.resolve(), args.wheels.resolve())
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
