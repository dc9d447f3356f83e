"""Run a real OCI container under runc, with the host's /usr mounted read-only.

Why: pyinit exists to be PID 1 of a container, so the end-to-end tests run it
as exactly that: the init process of a runc container with its own pid
namespace, stopped the way `docker stop` stops it (`runc kill ID TERM`, then
KILL after a timeout).

The rootfs is a temporary directory holding only `/usr` (a read-only bind
mount of the host's, since Debian 12 is merged-usr the `/bin`, `/sbin`,
`/lib`, `/lib64` symlinks point into it), a minimal `/etc`, `/tmp` and the
files a test copies in (the pyz, child scripts). `config.json` comes from
`runc spec` and is edited here. Every container gets a unique id and a private
`--root` state directory; `Container.destroy()` (called by `running()` on
exit) kills and deletes it and kills the runc process tree, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from support.helpers import descendants, wait_until

RUNC = shutil.which("runc")
CONTAINER_PYTHON = "/usr/bin/python3"
# Merged-usr links of Debian 12; only those the host really has are created.
USR_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]


class LineReader:
    """Collect the lines of a pipe in a thread so tests can wait for one with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        stream.close()

    def expect(self, pattern: str, timeout: float) -> re.Match:
        """Return the match of the first line matching pattern, waiting up to timeout seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    pytest.fail(
                        f"no line matching {pattern!r} within {timeout}s; got {self.lines!r}"
                    )
                self._cond.wait(remaining)

    def join(self, timeout: float) -> None:
        """Wait until the pipe is closed (all output read)."""
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def runc(
    state_root: Path, *args: str, timeout: float = 10, check: bool = True
) -> subprocess.CompletedProcess:
    """Run one runc management command against a private state directory."""
    return subprocess.run(
        [RUNC, "--root", str(state_root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def pid_namespace_members(init_pid: int) -> dict[int, tuple[int, str, int]]:
    """Processes in init_pid's pid namespace: host pid -> (pid inside, state, ppid)."""
    try:
        namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return {}
    members = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry}/status") as f:
                fields = dict(
                    line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line
                )
        except (OSError, ValueError):
            continue
        inner = int(fields["NSpid"].split()[-1])
        members[int(entry)] = (inner, fields["State"].split()[0], int(fields["PPid"]))
    return members


class Container:
    """One runc container: its bundle, state dir, `runc run` process and collected output."""

    def __init__(self, bundle: Path, state_root: Path, container_id: str) -> None:
        self.bundle = bundle
        self.state_root = state_root
        self.id = container_id
        self.proc: subprocess.Popen | None = None
        self.stdout: LineReader | None = None
        self.stderr: LineReader | None = None

    def start(self) -> None:
        """Start `runc run` in the foreground (as docker's shim does), stdio on pipes."""
        self.proc = subprocess.Popen(
            [
                RUNC,
                "--root",
                str(self.state_root),
                "run",
                "--no-pivot",
                "--bundle",
                str(self.bundle),
                self.id,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stdout = LineReader(self.proc.stdout)
        self.stderr = LineReader(self.proc.stderr)

    def state(self) -> dict | None:
        """`runc state` as a dict, or None when the container does not exist (any more)."""
        result = runc(self.state_root, "state", self.id, check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def init_host_pid(self, timeout: float = 10) -> int:
        """Host pid of the container's PID 1, once the container is running."""

        def running_pid() -> int | None:
            state = self.state()
            if state and state.get("status") == "running" and state.get("pid"):
                return int(state["pid"])
            return None

        return wait_until(running_pid, timeout, f"container {self.id} running")  # type: ignore[return-value]

    def kill(self, sig: str) -> None:
        """`runc kill ID SIG`: signal the container's init, as `docker kill`/`docker stop` do."""
        runc(self.state_root, "kill", self.id, sig)

    def wait(self, timeout: float) -> int | None:
        """Exit status of `runc run` (the init's status), or None if still running at timeout."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float, signal_name: str = "TERM") -> tuple[int, bool]:
        """Do what `docker stop -t timeout` does; return (exit status, whether KILL was needed)."""
        self.kill(signal_name)
        status = self.wait(timeout)
        if status is not None:
            return status, False
        self.kill("KILL")
        status = self.wait(10)
        assert status is not None, f"container {self.id} survived SIGKILL"
        return status, True

    def destroy(self) -> None:
        """Kill and delete the container, then kill whatever is left of the runc process tree."""
        runc(self.state_root, "kill", self.id, "KILL", check=False)
        runc(self.state_root, "delete", "-f", self.id, check=False)
        if self.proc is not None:
            for pid in [self.proc.pid, *descendants(self.proc.pid)][::-1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            for reader in (self.stdout, self.stderr):
                if reader is not None:
                    reader.join(5)


def make_bundle(
    base: Path,
    args: Sequence[str],
    files: dict[str, Path | str | bytes] | None = None,
    env: Sequence[str] = (),
) -> Path:
    """Create an OCI bundle under base running args as the container's PID 1.

    files maps a path inside the container to a host file to copy, or to text or
    bytes to write; every such file is made mode 0755.
    """
    bundle = base / "bundle"
    rootfs = bundle / "rootfs"
    for directory in ("usr", "etc", "tmp", "proc", "dev", "sys", "root", "run"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    for name, target in USR_LINKS.items():
        if os.path.islink(f"/{name}"):
            (rootfs / name).symlink_to(target)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (rootfs / "etc" / "hostname").write_text("pyinit-test\n")
    for inner, source in (files or {}).items():
        target = rootfs / inner.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copyfile(source, target)
        elif isinstance(source, bytes):
            target.write_bytes(source)
        else:
            target.write_text(source)
        target.chmod(0o755)

    subprocess.run([RUNC, "spec"], cwd=bundle, check=True, capture_output=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    process = config["process"]
    process["args"] = list(args)
    process["terminal"] = False
    process["cwd"] = "/"
    process["env"] = DEFAULT_ENV + list(env)
    # The rootfs is a throwaway directory; keep it writable like a container's layer.
    config["root"] = {"path": "rootfs", "readonly": False}
    mounts = [m for m in config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    mounts.append(
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}
    )
    config["mounts"] = mounts
    config["hostname"] = "pyinit-test"
    config_path.write_text(json.dumps(config, indent=2))
    return bundle


def new_container(base: Path, args: Sequence[str], **bundle_options) -> Container:
    """Build a bundle in base; return an unstarted Container with a unique id and state dir."""
    bundle = make_bundle(base, args, **bundle_options)
    state_root = base / "runc-state"
    state_root.mkdir()
    return Container(bundle, state_root, f"pyinit-test-{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def running(base: Path, args: Sequence[str], **bundle_options) -> Iterator[Container]:
    """Start a container running args as PID 1; always destroy it on exit."""
    container = new_container(base, args, **bundle_options)
    try:
        container.start()
        yield container
    finally:
        container.destroy()


_runc_usable: str | None = None  # None: not probed yet; "": usable; else the reason it is not


def require_runc(base: Path) -> None:
    """Skip the test unless runc exists and can run a trivial container (/bin/true) here."""
    global _runc_usable
    if _runc_usable is None:
        _runc_usable = _probe_runc(base)
    if _runc_usable:
        pytest.skip(_runc_usable)


def _probe_runc(base: Path) -> str:
    if RUNC is None:
        return "runc is not installed"
    if os.geteuid() != 0:
        return "runc containers need root here"
    container = new_container(base, ["/bin/true"])
    try:
        container.start()
        status = container.wait(20)
        if status != 0:
            container.stderr.join(5)
            stderr = container.stderr.text if container.stderr else ""
            detail = stderr.strip()[:300]
            return f"runc cannot run a trivial container (/bin/true exited {status}): {detail}"
        return ""
    finally:
        container.destroy()
