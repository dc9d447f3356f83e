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
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent

PURE_DEPENDENCIES = [
    "sdnotify==0.3.2", "python-json-logger==4.2.0", "cronsim==2.8", "prometheus-client==0.26.0",
]  # fmt: skip
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


#: The pyz's first bytes: a /bin/sh launcher, then the zip (zip readers find
#: the archive from its end, so a prefix is allowed). Started as a program,
#: the shell execs the interpreter with -I -S on the archive: no `site`, no
#: `runpy`, no PYTHON* variables, no user site-packages. That is about 40%
#: of the start-up of `python3 pyinit.pyz` (which still works: the zip's
#: __main__.py), and it keeps the application's PYTHONPATH out of PID 1.
#: The shell never reads past the `exec` line. Path made absolute: Python
#: workers are started with the pyz on their sys.path, from their own cwd.
LAUNCHER = (
    b"#!/bin/sh\n"
    b"# pyinit.pyz: a Python zip application; this line-oriented launcher runs it.\n"
    b"exec python3 -I -S -c 'import sys, os; sys.path.insert(0, os.path.abspath(sys.argv.pop(1)));"
    b" import pyinit.__main__' \"$0\" \"$@\"\n"
)


def write_pyz(staging: Path, target: Path) -> None:
    """The executable zip: the launcher (LAUNCHER), then the archive.

    The modules of the single-command path (HOT_MODULES) are stored
    uncompressed, since they are read on every start-up and inflating them
    costs more than reading them; everything else (services mode, the
    dependencies) is compressed.
    """
    with open(target, "wb") as out:
        out.write(LAUNCHER)
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
