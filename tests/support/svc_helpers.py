"""Helpers for the services-mode tests: run svc_child.py services, read their events.

`svc_child.py` appends one line per event to a shared log file; `Events`
parses it. pyinit's own log lines are read from its stderr as they arrive
(`wait_log`). Pids in events are as the service saw them (namespace pids
under unshare); `host_pid` maps one back through /proc/PID/status NSpid.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support.helpers import (
    InitProcess,
    base_env,
    cmdline,
    descendants,
    is_dead,
    support_script,
    wait_until,
)


def svc(log: Path, name: str, *options: str) -> str:
    """Shell-quoted command line of a svc_child.py service, for PYINIT_SERVICES or TOML."""
    return shlex.join(support_script("svc_child.py", "--log", str(log), "--name", name, *options))


def svc_argv(log: Path, name: str, *options: str) -> list[str]:
    """The same, as an argv list (TOML `cmd = [...]`)."""
    return support_script("svc_child.py", "--log", str(log), "--name", name, *options)


def services_env(services: str | None = None, **extra: str) -> dict[str, str]:
    """pyinit's environment: no PYINIT_* from the test run, PYINIT_SERVICES = `services`."""
    env = base_env(extra)
    if services is not None:
        env["PYINIT_SERVICES"] = services
    return env


@dataclass(frozen=True)
class Event:
    """One line of the svc_child.py log."""

    name: str
    kind: str  # start, signal, stop
    time: float
    pid: int
    worker: str = "-"  # start only
    pgid: int = 0  # start only
    signum: int = 0  # signal only


class Events:
    """The events in one log file, re-read on every call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Set to `proc.describe` once pyinit runs: failure messages then show its output.
        self.context: Callable[[], str] = lambda: ""

    def all(self) -> list[Event]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        events = []
        for line in text.splitlines():
            fields = line.split()
            if not line.endswith(tuple("0123456789-")) or len(fields) < 4:
                continue  # a line being written right now
            name, kind = fields[0], fields[1]
            if kind == "start" and len(fields) == 6:
                events.append(
                    Event(name, kind, float(fields[2]), int(fields[3]), fields[4], int(fields[5]))
                )
            elif kind == "signal" and len(fields) == 5:
                events.append(
                    Event(name, kind, float(fields[3]), int(fields[4]), signum=int(fields[2]))
                )
            elif kind == "stop" and len(fields) == 4:
                events.append(Event(name, kind, float(fields[2]), int(fields[3])))
        return events

    def of(self, name: str, kind: str | None = None) -> list[Event]:
        return [e for e in self.all() if e.name == name and (kind is None or e.kind == kind)]

    def starts(self, name: str) -> list[Event]:
        return self.of(name, "start")

    def wait_starts(self, name: str, count: int, timeout: float = 10.0) -> list[Event]:
        """Wait until `name` has started at least `count` times; return its starts."""
        return wait_until(
            lambda: (s := self.starts(name)) and len(s) >= count and s,
            timeout,
            lambda: f"{count} starts of {name}; events: {self.all()}; {self.context()}",
        )

    def wait_for(
        self, predicate: Callable[[list[Event]], object], timeout: float, what: str
    ) -> list[Event]:
        """Wait until `predicate(all events)` holds; return the events."""
        return wait_until(
            lambda: (e := self.all()) and predicate(e) and e,
            timeout,
            lambda: f"{what}; events: {self.all()}; {self.context()}",
        )


def wait_log(proc: InitProcess, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
    """Wait until `count` of pyinit's stderr lines match the regex `pattern` (search)."""
    regex = re.compile(pattern)
    return wait_until(
        lambda: (
            (m := [line for line in proc.stderr_lines(0) if regex.search(line)])
            and len(m) >= count
            and m
        ),
        timeout,
        lambda: f"{count} stderr line(s) matching {pattern!r}; stderr: {proc.stderr_lines(0)}",
    )


def log_lines(proc: InitProcess, pattern: str) -> list[str]:
    """pyinit's stderr lines so far that match `pattern` (search)."""
    regex = re.compile(pattern)
    return [line for line in proc.stderr_lines(0) if regex.search(line)]


def ns_pid(host: int) -> int:
    """The pid `host` has in its innermost PID namespace (NSpid's last field)."""
    for line in Path(f"/proc/{host}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for pid {host}")


def host_pid(proc: InitProcess, pid: int, timeout: float = 5.0) -> int:
    """Host pid of pyinit's live descendant whose own (namespace) pid is `pid`."""

    def look() -> int | None:
        for candidate in descendants(proc.pid):
            try:
                if ns_pid(candidate) == pid and not is_dead(candidate):
                    return candidate
            except (FileNotFoundError, ProcessLookupError):
                continue
        return None

    return wait_until(look, timeout, f"a descendant of pyinit with namespace pid {pid}")


def live_services(proc: InitProcess) -> dict[str, list[int]]:
    """Live svc_child.py processes below pyinit: {--name value: [host pids]}."""
    found: dict[str, list[int]] = {}
    for pid in descendants(proc.pid):
        argv = cmdline(pid)
        if is_dead(pid) or not any(a.endswith("svc_child.py") for a in argv):
            continue
        name = argv[argv.index("--name") + 1] if "--name" in argv else "svc"
        found.setdefault(name, []).append(pid)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its own, not its children's), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups lines of /proc/PID/status, as integer lists."""
    wanted = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            wanted[key] = [int(v) for v in value.split()]
    return wanted


def toml_value(value: object) -> str:
    """A Python value as TOML: str, bool, int, float, list, dict (inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def write_toml(
    path: Path, services: dict[str, dict[str, object]], settings: dict[str, object] | None = None
) -> Path:
    """Write a pyinit TOML file: an optional [pyinit] table, then [services.NAME] tables."""
    lines = []
    if settings:
        lines.append("[pyinit]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in settings.items())
        lines.append("")
    for name, table in services.items():
        lines.append(f"[services.{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path
