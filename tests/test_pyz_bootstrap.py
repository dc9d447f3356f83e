"""The single-file build: its layout, its isolation, and psutil from memory.

Each test runs a real interpreter on the built pyz.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def run_python(code: str, pyz, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` with the pyz first on sys.path, as the pyz's own modules see it."""
    prelude = f"import sys; sys.path.insert(0, {str(pyz)!r})\n"
    return subprocess.run(
        [PYTHON, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_pyz_is_an_executable_zip_behind_a_sh_launcher(pyz_path):
    with open(pyz_path, "rb") as f:
        assert f.readline() == b"#!/bin/sh\n"
    assert os.access(pyz_path, os.X_OK)
    names = set(zipfile.ZipFile(pyz_path).namelist())
    for required in (
        "__main__.py",
        "pyinit/__main__.py",
        "pyinit/cli.pyc",
        "sdnotify/__init__.py",
        "pythonjsonlogger/__init__.py",
        "psutil/__init__.py",
        "_native/x86_64/_psutil_linux.so",
        "_native/aarch64/_psutil_linux.so",
    ):
        assert required in names
    # No native module where zipimport (or a user) would look for it.
    assert not [n for n in names if n.endswith(".so") and not n.startswith("_native/")]


def test_psutil_loads_from_memory_not_from_a_file(pyz_path, tmp_path):
    code = (
        "from pyinit import _bootstrap\n"
        "psutil, why = _bootstrap.import_psutil()\n"
        "assert psutil is not None, why\n"
        "print(psutil.Process().pid == __import__('os').getpid())\n"
        "print(psutil._psplatform.cext.__file__)\n"
        "print(open('/proc/self/maps').read())\n"
    )
    result = run_python(code, pyz_path, TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    same_pid, module_file, maps = result.stdout.split("\n", 2)
    assert same_pid == "True"
    assert module_file.startswith("/proc/self/fd/")
    assert "/memfd:_psutil_linux" in maps
    # Nothing was extracted anywhere a temporary file would go.
    assert list(tmp_path.iterdir()) == []


def test_psutil_missing_for_this_machine_is_reported_not_raised(pyz_path):
    # An architecture the pyz does not carry: simulate by asking for a
    # native module name that is not in it.
    code = (
        "from pyinit import _bootstrap\n"
        "_bootstrap.import_psutil()\n"
        "import importlib\n"
        "try:\n"
        "    importlib.import_module('psutil._psutil_nosuch')\n"
        "except ImportError:\n"
        "    print('ImportError')\n"
    )
    result = run_python(code, pyz_path)
    assert result.stdout.strip() == "ImportError", result.stderr


def test_pythonpath_and_site_packages_are_cut_from_the_inits_path(pyz_path, tmp_path):
    shadow = tmp_path / "app"
    shadow.mkdir()
    (shadow / "heapq.py").write_text("raise SystemExit('the app shadowed heapq')\n")
    probe = (
        "import sys\n"
        "from pyinit import _bootstrap\n"
        "_bootstrap.isolate()\n"
        "print('\\n'.join(sys.path))\n"
    )
    result = run_python(probe, pyz_path, PYTHONPATH=str(shadow))
    assert result.returncode == 0, result.stderr
    path = result.stdout.split()
    assert path[0] == str(pyz_path)
    assert str(shadow) not in path
    assert not [p for p in path if "site-packages" in p or "dist-packages" in p]


def test_pyz_runs_from_any_directory_with_a_hostile_pythonpath(pyz_path, tmp_path):
    shadow = tmp_path / "app"
    shadow.mkdir()
    for name in ("heapq", "select", "selectors", "subprocess", "logging", "_bootstrap"):
        (shadow / f"{name}.py").write_text(f"raise SystemExit('shadowed {name}')\n")
    result = subprocess.run(
        [PYTHON, str(pyz_path), "--", "sh", "-c", "exit 7"],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": str(shadow)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 7, result.stderr
    assert "shadowed" not in result.stderr


def test_json_logging_uses_the_carried_python_json_logger(pyz_path, tmp_path):
    import json

    result = subprocess.run(
        [PYTHON, str(pyz_path), "--log-format", "json", "-v", "--", "true"],
        cwd=str(tmp_path),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all({"time", "level", "message"} <= set(r) for r in records)
    assert any(r.get("event") == "started" for r in records)


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3"
)
def test_pyz_runs_under_a_python_without_pyinits_dependencies(pyz_path, tmp_path):
    """Debian's interpreter has none of psutil, sdnotify, python-json-logger installed."""
    check = subprocess.run(
        ["/usr/bin/python3", "-c", "import pythonjsonlogger"], capture_output=True, timeout=30
    )
    if check.returncode == 0:
        pytest.skip("/usr/bin/python3 has python-json-logger installed; not a bare interpreter")
    result = subprocess.run(
        ["/usr/bin/python3", str(pyz_path), "--log-format", "json", "--", "sh", "-c", "exit 4"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr


HEAVY_MODULES = {
    "subprocess", "logging", "enum", "re", "dataclasses", "typing", "selectors",
    "json", "argparse", "ctypes", "signal", "tomllib", "socket", "psutil",
}  # fmt: skip


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3"
)
def test_single_command_start_up_imports_nothing_heavy(pyz_path):
    """`pyinit -- true` must stay lean: each of these would cost 1-10 ms of start-up.

    Checked against what a bare `python3 -c pass` already imports, so the
    interpreter's own start-up (site, .pth files) is not held against pyinit.
    """

    def imported(argv: list[str]) -> set[str]:
        done = subprocess.run(
            ["/usr/bin/python3", "-X", "importtime", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        )
        return {
            line.rsplit("|", 1)[1].strip()
            for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line
        }

    baseline = imported(["-c", "pass"])
    ours = imported([str(pyz_path), "--", "true"])
    assert "pyinit.single.command" in ours  # the probe works: it sees pyinit's own modules
    assert (ours - baseline) & HEAVY_MODULES == set()
