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


# -- the pyz run as a program: its sh launcher and the hot table (issue 8) ----------------------


def _program_env(python_dir: str) -> dict[str, str]:
    """The environment with `python_dir` first on PATH: the launcher runs `python3` from it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYINIT_", "NOTIFY_SOCKET"))}
    env["PATH"] = os.pathsep.join([python_dir, env.get("PATH", "/usr/bin:/bin")])
    return env


def _launcher_code(pyz_path) -> str:
    """The -c program of the pyz's launcher, to run it under `-X importtime`."""
    head = pyz_path.read_bytes()[:4096].decode("latin-1")
    start = head.index("-c '") + 4
    return head[start : head.index('\' "$0"', start)]


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3"
)
def test_pyz_as_a_program_runs_the_command_and_keeps_pythonpath_out(pyz_path, tmp_path):
    shadow = tmp_path / "app"
    shadow.mkdir()
    for name in ("select", "errno", "signal", "posix", "marshal", "pyinit"):
        (shadow / f"{name}.py").write_text(f"raise SystemExit('shadowed {name}')\n")
    result = subprocess.run(
        [str(pyz_path), "--", "sh", "-c", "exit 7"],
        cwd=str(tmp_path),
        env={**_program_env("/usr/bin"), "PYTHONPATH": str(shadow)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 7, result.stderr
    assert "shadowed" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3"
)
def test_pyz_as_a_program_reports_a_missing_command_from_a_relative_path(pyz_path, tmp_path):
    """The launcher makes $0 absolute without os.path: a relative pyz path must work."""
    local = tmp_path / "pyinit.pyz"
    local.write_bytes(pyz_path.read_bytes())
    local.chmod(0o755)
    result = subprocess.run(
        ["./pyinit.pyz", "--", "no-such-command-pyinit-test"],
        cwd=str(tmp_path),
        env=_program_env("/usr/bin"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 127, result.stderr
    assert result.stderr == "pyinit: no-such-command-pyinit-test: No such file or directory\n"


@pytest.mark.skipif(
    not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3"
)
def test_pyz_as_a_program_imports_neither_os_nor_its_modules_from_the_zip(pyz_path):
    """`pyinit -- true` started as the program: 1 ms of `os` and ~0.5 ms of
    zipimport were most of what pyinit added to the interpreter's start-up."""
    code = _launcher_code(pyz_path)
    probe = code.replace(
        "import pyinit.__main__",
        "import pyinit.runner, pyinit.cli\n"
        "print(type(sys.modules['pyinit.single.command'].__loader__).__name__)",
    )
    assert probe != code, "the launcher no longer ends with `import pyinit.__main__`"
    shown = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", probe, str(pyz_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.stdout.strip() == "HotFinder", shown.stderr
    done = subprocess.run(
        [
            "/usr/bin/python3",
            "-X",
            "importtime",
            "-I",
            "-S",
            "-c",
            code,
            str(pyz_path),
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "_posixsubprocess" in imported  # the probe sees the run (pyinit spawned `true`)
    assert imported & {"os", "_collections_abc", "posixpath", "zipfile", "__future__"} == set()


OTHER_PYTHONS = sorted(
    str(p.parent)
    for p in __import__("pathlib").Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python3")
)


@pytest.mark.skipif(not OTHER_PYTHONS, reason="needs a Python 3.12+ (pyenv) besides the build's")
def test_pyz_as_a_program_on_another_python_version_imports_from_the_zip(pyz_path, tmp_path):
    """The hot table holds 3.11 code objects: another version must skip it
    and compile the .py files of the zip (the images' Python varies)."""
    result = subprocess.run(
        [str(pyz_path), "--", "sh", "-c", "exit 5"],
        cwd=str(tmp_path),
        env=_program_env(OTHER_PYTHONS[-1]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
