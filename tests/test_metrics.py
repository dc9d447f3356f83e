"""`GET /metrics` on the health port (issue 11), scraped from a real pyinit.

pyinit runs real services (tests/support/svc_child.py) as PID 1 of a fresh
PID namespace; the page is fetched over TCP and read with prometheus_client's
own text parser, so what is checked is what Prometheus would store: values
after a crash (a worker SIGKILLed), a `pyinit ctl restart`, a forwarded
signal, an orphan, and reloads (SIGHUP with a changed file, then a broken one).
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support.helpers import (
    PID1_ONLY,
    SUBREAPER_ONLY,
    InitProcess,
    StartInit,
    kill_quietly,
    wait_until,
)
from support.svc_helpers import Events, host_pid, services_env, svc_argv, write_toml
from test_ctl_status import Ctl

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of one GET on the health port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of /metrics, parsed by prometheus_client: {(name, labels): value}."""
    status, content_type, body = get(port, "/metrics")
    assert status == 200, body
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples


def worker(samples: Samples, name: str, service: str, **labels: str) -> float | None:
    """The sample `name` of `service`[0], or None when there is none."""
    key = tuple(sorted({"service": service, "worker": "0", **labels}.items()))
    return samples.get((name, key))


def start(
    start_init: StartInit,
    argv: list[str],
    prefix: list[str],
    tmp_path: Path,
    services: dict[str, dict[str, object]],
) -> tuple[InitProcess, Path, int]:
    config = write_toml(tmp_path / "pyinit.toml", services)
    port = free_port()
    sock = tmp_path / "ctl" / "ctl.sock"
    proc = start_init(
        [*argv, "--config", str(config), "--health-port", f"127.0.0.1:{port}"],
        prefix=prefix,
        env=services_env(PYINIT_CTL_SOCKET=str(sock)),
    )
    wait_until(sock.exists, 10, lambda: f"the control socket ({proc.describe()})")
    return proc, config, port


@PID1_ONLY
def test_metrics_after_a_crash_a_restart_a_signal_and_reloads(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    log = tmp_path / "events"
    events = Events(log)
    services: dict[str, dict[str, object]] = {
        "web": {"cmd": svc_argv(log, "web"), "backoff": {"threshold": "0s"}},
        "orphans": {"cmd": ["sh", "-c", "sleep 0.2 & exit 0"], "oneshot": True},
        "job": {"cmd": svc_argv(log, "job", "--exit", "0"), "every": "1h"},
    }
    began = time.time()
    proc, config, port = start(start_init, pyinit_argv, as_pid1, tmp_path, services)
    events.context = proc.describe
    ctl = Ctl(pyinit_argv, tmp_path / "ctl" / "ctl.sock")
    (first,) = events.wait_starts("web", 1)

    samples = wait_until(
        lambda: (s := scrape(port))[("pyinit_orphans_reaped_total", ())] >= 1 and s,
        10,
        lambda: f"the orphan sleep reaped; {proc.describe()}",
    )
    assert worker(samples, "pyinit_worker_state", "web", state="running") == 1
    assert worker(samples, "pyinit_worker_ready", "web") == 1
    assert worker(samples, "pyinit_worker_restarts_total", "web") == 0
    assert worker(samples, "pyinit_worker_starts_total", "web") == 1
    assert worker(samples, "pyinit_worker_last_exit_code", "web") is None, "never exited"
    uptime = worker(samples, "pyinit_worker_uptime_seconds", "web")
    assert uptime is not None and 0 <= uptime < time.time() - began + 1
    assert (worker(samples, "pyinit_worker_resident_memory_bytes", "web") or 0) > 1 << 20
    assert worker(samples, "pyinit_worker_state", "orphans", state="exited") == 1
    assert worker(samples, "pyinit_worker_last_exit_code", "orphans") == 0
    next_run = samples[("pyinit_service_next_run_timestamp_seconds", (("service", "job"),))]
    assert began + 3600 - 1 <= next_run <= time.time() + 3600 + 1
    assert samples[("pyinit_ready", ())] == 1
    assert samples[("pyinit_reloads_total", (("result", "ok"),))] == 0
    assert samples[("pyinit_reloads_total", (("result", "failed"),))] == 0
    assert samples[("process_resident_memory_bytes", ())] > 1 << 20, "pyinit's own RSS"

    # A crash: SIGKILL from outside. The policy restarts it: one restart, exit 128+9.
    killed_at = time.time()
    kill_quietly(host_pid(proc, first.pid), signal.SIGKILL)
    events.wait_starts("web", 2)
    samples = wait_until(
        lambda: (s := scrape(port)) and worker(s, "pyinit_worker_ready", "web") == 1 and s,
        10,
        "web running again",
    )
    assert worker(samples, "pyinit_worker_restarts_total", "web") == 1
    assert worker(samples, "pyinit_worker_starts_total", "web") == 2
    assert worker(samples, "pyinit_worker_last_exit_code", "web") == 128 + signal.SIGKILL
    exit_time = worker(samples, "pyinit_worker_last_exit_timestamp_seconds", "web")
    assert exit_time is not None and killed_at - 1 <= exit_time <= time.time() + 1

    # `pyinit ctl restart`: a start, not a restart by policy; svc_child exits 0 on SIGTERM.
    assert ctl.run("restart", "web").returncode == 0
    events.wait_starts("web", 3)
    samples = wait_until(
        lambda: (s := scrape(port)) and worker(s, "pyinit_worker_starts_total", "web") == 3 and s,
        10,
        "the third start of web",
    )
    assert worker(samples, "pyinit_worker_restarts_total", "web") == 1
    assert worker(samples, "pyinit_worker_last_exit_code", "web") == 0

    # A signal pyinit forwards: counted by name, and the service got it.
    proc.send(signal.SIGUSR1)
    events.wait_for(
        lambda seen: any(e.kind == "signal" and e.signum == signal.SIGUSR1 for e in seen),
        10,
        "web got SIGUSR1",
    )
    assert scrape(port)[("pyinit_signals_forwarded_total", (("signal", "SIGUSR1"),))] == 1

    # A reload with a changed file: counted ok, and the new service shows up.
    services["added"] = {"cmd": svc_argv(log, "added")}
    write_toml(config, services)
    proc.send(signal.SIGHUP)
    samples = wait_until(
        lambda: (s := scrape(port)) and worker(s, "pyinit_worker_ready", "added") == 1 and s,
        10,
        lambda: f"the added service running; {proc.describe()}",
    )
    assert samples[("pyinit_reloads_total", (("result", "ok"),))] == 1
    assert samples[("pyinit_reloads_total", (("result", "failed"),))] == 0
    assert worker(samples, "pyinit_worker_starts_total", "web") == 3, "unchanged: not restarted"

    # A broken file: refused, counted failed, nothing else moves.
    config.write_text(config.read_text() + '\n[services.bad]\nrestart = "sometimes"\n')
    proc.send(signal.SIGHUP)
    samples = wait_until(
        lambda: (s := scrape(port))[("pyinit_reloads_total", (("result", "failed"),))] == 1 and s,
        10,
        lambda: f"the refused reload counted; {proc.describe()}",
    )
    assert samples[("pyinit_reloads_total", (("result", "ok"),))] == 1
    assert worker(samples, "pyinit_worker_state", "added", state="running") == 1
    assert worker(samples, "pyinit_worker_starts_total", "web") == 3


@SUBREAPER_ONLY
def test_a_scrape_imports_no_http_or_prometheus_library_into_pid1(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    """pyinit writes the page itself: prometheus_client would bring ssl and
    http.server (~10 MiB, ~50 ms of a stalled loop) into PID 1 for one page."""
    script = pyinit_argv[1:] if pyinit_argv[0] == sys.executable else pyinit_argv
    argv = [sys.executable, "-X", "importtime", *script]
    log = tmp_path / "events"
    proc, _config, port = start(
        start_init, argv, as_pid1, tmp_path, {"web": {"cmd": svc_argv(log, "web")}}
    )
    Events(log).wait_starts("web", 1)
    heavy = re.compile(r"\|\s+(prometheus_client|ssl|http\.server|urllib\.request|wsgiref)$")

    def imported() -> list[str]:
        lines = proc.stderr_lines(0)  # `import time: 202 | 30912 |   prometheus_client`
        return [line for line in lines if heavy.search(line)]

    assert any("import time:" in line for line in proc.stderr_lines(0)), "the probe works"
    assert get(port, "/healthz")[0] == 200
    for _ in range(3):
        assert ("pyinit_ready", ()) in scrape(port)
    assert get(port, "/readyz")[0] == 200  # the loop went on after the scrapes
    assert imported() == []
