#!/usr/bin/python3
"""Deploy benchmark (issue 9): what clients see while a service is redeployed.

    /usr/bin/python3 bench/bench_deploy.py             # 20 deploys each, ~3 minutes
    /usr/bin/python3 bench/bench_deploy.py --deploys 5 # a quicker look
    /usr/bin/python3 bench/bench_deploy.py --json

Each contender runs the same kind of server (tests/support/http_app.py, or
gunicorn with 2 sync workers serving tests/support/wsgi_app.py), which
answers `VERSION PID`. While `--threads` clients open new connections in a
loop (tests/support/loadgen.py), the bench deploys `--deploys` times, each
deploy changing the APP_VERSION environment variable the way that tool
deploys a change:

    pyinit       rewrite the TOML file, SIGHUP to pyinit
    supervisord  rewrite its config, `supervisorctl update`
    circus       `set web env` over its control socket (a graceful reload)
    gunicorn     rewrite its config file (raw_env), SIGHUP to the master

Per contender: requests sent and failed, the longest gap with no successful
answer (over the whole run), and the time from the deploy's trigger to
"fully replaced": the new version answers and every process that answered
with an old version has exited. The targets (issue 9): 0 failed over the
deploys, the longest gap below 50 ms, and a 4-worker rolling deploy done
within 4 x ready time + 1 s, where the ready time is measured here: from
starting http_app.py to its READY=1.

supervisor, circus and gunicorn are found in `--tools-python` (default: the
repository's .venv, where `pip install -e '.[test,bench]'` puts them); a
contender whose tool is missing is skipped with a note. Everything runs as
this user's children; pyinit is a subreaper here, not PID 1, so the pids
in the answers are the ones /proc shows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUPPORT = REPO / "tests" / "support"
sys.path.insert(0, str(SUPPORT))

from loadgen import LoadGenerator, Tally  # noqa: E402  (tests/support is not a package)

APP = SUPPORT / "http_app.py"
STARTUP = 0.2  # APP_STARTUP: seconds an app "imports" before it serves
STEADY = 3.0  # seconds of load before the first deploy: the gap a deploy must beat


@dataclass
class Running:
    """One contender's processes and what a deploy needs to know."""

    proc: subprocess.Popen[bytes]
    directory: Path
    port: int
    deploy: Callable[[str], None]
    stop: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)


@dataclass
class Contender:
    name: str
    how: str
    start: Callable[[Path, int], Running]
    needs: str = ""  # a module the tools python must import


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


# -- pyinit -------------------------------------------------------------------------------


def pyinit_contender(args: argparse.Namespace, name: str, how: str, table: str) -> Contender:
    def start(directory: Path, port: int) -> Running:
        config = directory / "pyinit.toml"

        def write(version: str) -> None:
            config.write_text(
                table.format(
                    python=json.dumps(args.python),
                    app=json.dumps(str(APP)),
                    port=port,
                    version=version,
                    startup=STARTUP,
                    gunicorn=json.dumps(args.tools_python),
                    support=json.dumps(str(SUPPORT)),
                )
            )

        write("v0")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYINIT_")}
        env["PYINIT_CTL_SOCKET"] = str(directory / "ctl.sock")
        env["PYINIT_LOG_FORMAT"] = "json"  # timestamps: ready times under load
        proc = subprocess.Popen(
            [*args.pyinit, "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(directory / "pyinit.log", "wb"),  # noqa: SIM115
        )

        def deploy(version: str) -> None:
            write(version)
            proc.send_signal(signal.SIGHUP)

        return Running(proc, directory, port, deploy)

    return Contender(name, how, start)


PYINIT_STDLIB = """
[services.web]
cmd = [{python}, "-S", {app}]
listen = ["tcp:127.0.0.1:{port}"]
workers = {workers}
ready = "notify"
env = {{ APP_VERSION = "{version}", APP_STARTUP = "{startup}" }}
"""

PYINIT_GUNICORN = """
[services.web]
cmd = [{gunicorn}, "-m", "gunicorn", "-w", "2", "--chdir", {support},
       "--graceful-timeout", "5", "wsgi_app:app"]
listen = ["tcp:127.0.0.1:{port}"]
env = {{ APP_VERSION = "{version}" }}
"""

PYINIT_RESTART = """
[services.web]
cmd = [{python}, "-S", {app}, "--port", "{port}"]
strategy = "restart"
ready = "tcp:{port}"
ready_timeout = "10s"
env = {{ APP_VERSION = "{version}", APP_STARTUP = "{startup}" }}
"""


# -- supervisord ------------------------------------------------------------------------------

SUPERVISORD = """
[unix_http_server]
file={dir}/supervisor.sock
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{dir}/supervisor.sock
[program:web]
command={python} -S {app} --port {port}
environment=APP_VERSION="{version}",APP_STARTUP="{startup}"
startsecs=0
stopwaitsecs=10
"""


def supervisord_contender(args: argparse.Namespace) -> Contender:
    def start(directory: Path, port: int) -> Running:
        config = directory / "supervisord.conf"

        def write(version: str) -> None:
            config.write_text(
                SUPERVISORD.format(
                    dir=directory,
                    python=args.python,
                    app=APP,
                    port=port,
                    version=version,
                    startup=STARTUP,
                )
            )

        write("v0")
        tool = [args.tools_python, "-m"]
        proc = subprocess.Popen(
            [*tool, "supervisor.supervisord", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def deploy(version: str) -> None:
            write(version)
            subprocess.run(
                [*tool, "supervisor.supervisorctl", "-c", str(config), "update"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )

        return Running(proc, directory, port, deploy)

    return Contender(
        "supervisord", "`supervisorctl update` after an env change", start, needs="supervisor"
    )


# -- circus ---------------------------------------------------------------------------------------

CIRCUS = """
[circus]
endpoint = ipc://{dir}/endpoint
pubsub_endpoint = ipc://{dir}/pubsub
check_delay = 5
[watcher:web]
cmd = {python} -S {app} --fd $(circus.sockets.web)
use_sockets = True
numprocesses = 1
graceful_timeout = 10
[socket:web]
host = 127.0.0.1
port = {port}
[env:web]
APP_VERSION = v0
APP_STARTUP = {startup}
"""

CIRCUS_SET_ENV = """
import sys
from circus.client import CircusClient
client = CircusClient(endpoint=sys.argv[1], timeout=30)
env = {"APP_VERSION": sys.argv[2], "APP_STARTUP": sys.argv[3]}
answer = client.call({"command": "set", "properties": {"name": "web", "options": {"env": env}}})
sys.exit(0 if answer.get("status") == "ok" else answer)
"""


def circus_contender(args: argparse.Namespace) -> Contender:
    def start(directory: Path, port: int) -> Running:
        config = directory / "circus.ini"
        config.write_text(
            CIRCUS.format(dir=directory, python=args.python, app=APP, port=port, startup=STARTUP)
        )
        proc = subprocess.Popen(
            [args.tools_python, "-m", "circus.circusd", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def deploy(version: str) -> None:
            subprocess.run(
                [args.tools_python, "-c", CIRCUS_SET_ENV, f"ipc://{directory}/endpoint"]
                + [version, str(STARTUP)],
                timeout=30,
                check=False,
                stdout=subprocess.DEVNULL,
            )

        return Running(proc, directory, port, deploy)

    return Contender(
        "circus", "socket held by circusd; `set web env` (graceful reload)", start, needs="circus"
    )


# -- gunicorn alone -------------------------------------------------------------------------------

GUNICORN_CONF = """
bind = "127.0.0.1:{port}"
workers = 2
chdir = {support!r}
graceful_timeout = 5
raw_env = ["APP_VERSION={version}"]
"""


def gunicorn_contender(args: argparse.Namespace) -> Contender:
    def start(directory: Path, port: int) -> Running:
        config = directory / "gunicorn.conf.py"

        def write(version: str) -> None:
            text = GUNICORN_CONF.format(port=port, support=str(SUPPORT), version=version)
            config.write_text(text)

        write("v0")
        proc = subprocess.Popen(
            [args.tools_python, "-m", "gunicorn", "-c", str(config), "wsgi_app:app"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def deploy(version: str) -> None:
            write(version)
            proc.send_signal(signal.SIGHUP)

        return Running(proc, directory, port, deploy)

    return Contender("gunicorn alone", "2 sync workers, SIGHUP", start, needs="gunicorn")


# -- the run --------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    how: str
    sent: int = 0
    failed: int = 0
    longest_gap: float = 0.0
    steady_gap: float = 0.0  # the longest gap in STEADY seconds before the first deploy
    ready_times: list[float] = field(default_factory=list)  # pyinit: start -> ready, under load
    replace_times: list[float] = field(default_factory=list)
    unfinished: int = 0  # deploys not fully replaced within the limit
    errors: list[str] = field(default_factory=list)
    skipped: str = ""


def wait_serving(port: int, version: str, timeout: float) -> None:
    probe = LoadGenerator("127.0.0.1", port, threads=1, timeout=1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe.fetch().split()[0] == version:
                return
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing answered {version} on port {port} within {timeout} s")


def run(contender: Contender, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(contender.name, contender.how)
    with tempfile.TemporaryDirectory(prefix="pit-deploy-", dir="/tmp") as tmp:
        port = free_port()
        running = contender.start(Path(tmp), port)
        try:
            wait_serving(port, "v0", 20)
            with LoadGenerator("127.0.0.1", port, threads=args.threads) as load:
                load.wait_for_body(lambda b: b.startswith("v0"), 10)
                quiet_from = time.monotonic()
                time.sleep(STEADY)
                outcome.steady_gap = load.tally.longest_gap(quiet_from, time.monotonic())
                for number in range(1, args.deploys + 1):
                    took = deploy_once(load, running, f"v{number}", args.limit)
                    if took is None:
                        outcome.unfinished += 1
                    else:
                        outcome.replace_times.append(took)
                    time.sleep(args.pause)
            tally: Tally = load.tally
            outcome.sent, outcome.failed = tally.sent, len(tally.failures)
            outcome.longest_gap = tally.longest_gap()
            outcome.errors = sorted({error for _, error in tally.failures})[:3]
        finally:
            stop(running)
        outcome.ready_times = ready_times_in(Path(tmp) / "pyinit.log")
    return outcome


def ready_times_in(log: Path) -> list[float]:
    """pyinit's JSON log: seconds from each worker's `started` to its `ready`."""
    if not log.exists():
        return []
    started: dict[object, float] = {}
    times = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        key = (record.get("service"), record.get("worker"))
        when = datetime.fromisoformat(record["time"]).timestamp()
        if record.get("event") == "started":
            started[key] = when
        elif record.get("event") == "ready" and key in started:
            times.append(when - started.pop(key))
    return times


def deploy_once(load: LoadGenerator, running: Running, version: str, limit: float) -> float | None:
    """Trigger one deploy; seconds until fully replaced, or None past `limit`."""
    with load._lock:
        old = {int(b.split()[1]) for _, b in load.tally.answers[-2000:] if b.split()[0] != version}
    start = time.monotonic()
    running.deploy(version)
    try:
        load.wait_for_body(lambda b: b.startswith(version + " "), limit, since=start)
    except TimeoutError:
        return None
    while any(alive(pid) for pid in old):
        if time.monotonic() - start > limit:
            return None
        time.sleep(0.002)
    return time.monotonic() - start


def stop(running: Running) -> None:
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def ready_time(python: str, samples: int = 5) -> float:
    """Median seconds from starting http_app.py to its READY=1 (the 'ready time')."""
    times = []
    with tempfile.TemporaryDirectory(prefix="pit-ready-", dir="/tmp") as tmp:
        path = os.path.join(tmp, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(10)
            for _ in range(samples):
                port = free_port()
                env = dict(os.environ, NOTIFY_SOCKET=path, APP_STARTUP=str(STARTUP))
                start = time.monotonic()
                proc = subprocess.Popen([python, "-S", str(APP), "--port", str(port)], env=env)
                sock.recv(4096)
                times.append(time.monotonic() - start)
                proc.terminate()
                proc.wait(5)
    return statistics.median(times)


def has_module(python: str, module: str) -> bool:
    done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False)
    return done.returncode == 0


def contenders(args: argparse.Namespace) -> list[Contender]:
    return [
        pyinit_contender(
            args,
            "pyinit rolling, 1 worker",
            "stdlib server, socket held by pyinit, ready=notify, SIGHUP",
            PYINIT_STDLIB.replace("{workers}", "1"),
        ),
        pyinit_contender(
            args,
            "pyinit rolling, 4 workers",
            "stdlib server x4, socket held by pyinit, ready=notify, SIGHUP",
            PYINIT_STDLIB.replace("{workers}", "4"),
        ),
        pyinit_contender(
            args,
            "pyinit rolling, gunicorn",
            "gunicorn -w 2 on the socket pyinit holds (LISTEN_FDS), settle 1 s, SIGHUP",
            PYINIT_GUNICORN,
        ),
        pyinit_contender(
            args,
            "pyinit restart",
            'strategy = "restart", server binds its own port (before issue 9), SIGHUP',
            PYINIT_RESTART,
        ),
        supervisord_contender(args),
        circus_contender(args),
        gunicorn_contender(args),
    ]


def table(outcomes: list[Outcome], ready: float, deploys: int) -> str:
    lines = [
        f"{deploys} deploys each; ready time (start to READY=1) {ready * 1000:.0f} ms",
        "",
        "| contender | how it deploys | requests | failed | longest gap (no deploy) |"
        " replaced in p50 / max |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.skipped:
            lines.append(f"| {o.name} | {o.how} | skipped: {o.skipped} | | | |")
            continue
        times = o.replace_times
        replaced = (
            f"{statistics.median(times) * 1000:.0f} / {max(times) * 1000:.0f} ms" if times else "-"
        )
        if o.unfinished:
            replaced += f" ({o.unfinished} unfinished)"
        percent = 100 * o.failed / o.sent if o.sent else 0
        lines.append(
            f"| {o.name} | {o.how} | {o.sent} | {o.failed} ({percent:.1f} %) |"
            f" {o.longest_gap * 1000:.0f} ms ({o.steady_gap * 1000:.0f} ms) | {replaced} |"
        )
    return "\n".join(lines)


def targets(outcomes: list[Outcome], ready: float) -> list[str]:
    lines = []
    for o in outcomes:
        if not o.name.startswith("pyinit rolling") or o.skipped:
            continue
        verdict = "ok" if not o.failed else "MISSED"
        lines.append(f"{o.name}: failed {o.failed} (target 0): {verdict}")
        gap_ok = o.longest_gap < 0.050
        lines.append(
            f"{o.name}: longest gap {o.longest_gap * 1000:.0f} ms (target < 50 ms):"
            f" {'ok' if gap_ok else 'MISSED'}"
        )
        if "4 workers" in o.name and o.replace_times:
            slowest = ""
            if o.ready_times:  # under load, as pyinit saw it: started -> READY=1
                ready = statistics.median(o.ready_times)
                slowest = f"; slowest ready time {max(o.ready_times):.2f} s"
            limit = 4 * ready + 1.0
            worst = max(o.replace_times)
            verdict = "ok" if worst <= limit else "MISSED"
            lines.append(
                f"{o.name}: slowest deploy {worst:.2f} s (target 4 x ready time {ready:.2f} + 1"
                f" = {limit:.2f} s{slowest}): {verdict}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between deploys")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds a deploy may take")
    parser.add_argument("--python", default="/usr/bin/python3", help="runs the app servers")
    venv = REPO / ".venv" / "bin" / "python"
    parser.add_argument("--tools-python", default=str(venv if venv.exists() else sys.executable))
    parser.add_argument("--pyinit", default=f"/usr/bin/python3 {REPO / 'dist' / 'pyinit.pyz'}")
    parser.add_argument("--only", default="", help="comma-separated substrings of names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.pyinit = args.pyinit.split()
    ready = ready_time(args.python)
    outcomes = []
    for contender in contenders(args):
        if args.only and not any(s in contender.name for s in args.only.split(",")):
            continue
        if contender.needs and not has_module(args.tools_python, contender.needs):
            outcome = Outcome(contender.name, contender.how, skipped=f"no {contender.needs}")
        else:
            print(f"running {contender.name} ...", file=sys.stderr, flush=True)
            try:
                outcome = run(contender, args)
            except (TimeoutError, OSError, subprocess.SubprocessError) as error:
                outcome = Outcome(contender.name, contender.how, skipped=str(error))
        outcomes.append(outcome)
    if args.json:
        print(json.dumps({"ready_time": ready, "outcomes": [o.__dict__ for o in outcomes]}))
    else:
        print(table(outcomes, ready, args.deploys))
        print()
        print("\n".join(targets(outcomes, ready)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
