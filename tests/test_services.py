"""Services mode, end to end: configuration in, what the services get out.

`pyinit --check` and bad configurations (exit 2, one `pyinit: error:` line
naming the entry or file:line, and nothing started), `cwd` and `env` from a
TOML file, privilege drop with `user`, and the output modes with a child that
writes 10 MB as fast as it can. SPEC.md sections 1 (exit status), 3 and 7.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
from pathlib import Path

import pytest
from support.helpers import (
    INSTALLED_ONLY,
    PID1_ONLY,
    SUBREAPER_ONLY,
    StartInit,
    assert_no_traceback,
    base_env,
    find_descendant,
    run_init,
    stays_true,
    wait_until,
)
from support.svc_helpers import (
    Events,
    services_env,
    status_ids,
    svc,
    svc_argv,
    write_toml,
)

FLOOD_BYTES = 10_000_000
FLOOD_LINES = FLOOD_BYTES // 1000  # svc_child.py writes 1000-byte lines


# --------------------------------------------------------------------------- --check


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_check_prints_the_plan_and_starts_nothing(
    pyinit_argv: list[str], as_pid1: list[str], tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "migrate": {"cmd": ["touch", str(marker)], "oneshot": True},
            "web": {
                "cmd": "sleep 30",
                "workers": 2,
                "after": ["migrate"],
                "grace": 4,
                "env": {"SECRET_TOKEN": "hunter2"},
            },
        },
    )
    result = run_init([*pyinit_argv, "--check", "--config", str(config)], env=base_env())
    assert result.returncode == 0, result.stderr
    plan = "\n".join(result.stdout)
    assert re.search(r"2 services, 3 workers", plan), plan
    assert re.search(r"1\. migrate\n\s+2\. web", plan), "the start order, layer by layer"
    assert re.search(rf"migrate: oneshot, 1 worker\s+\({re.escape(str(config))}:1\)", plan)
    assert re.search(r"web: service, 2 workers", plan)
    assert re.search(r"runs\s+sleep 30", plan)
    assert re.search(r"SIGKILL after 4s", plan)
    assert "SECRET_TOKEN" in plan and "hunter2" not in plan, "env names only, never values"
    assert not marker.exists(), "--check started a service"


# --------------------------------------------------------------------------- bad configs

# (PYINIT_SERVICES or None, TOML text or None, regex the error line must match).
# {marker} is a command that creates the marker file; {toml} is the file's path.
BAD_CONFIGS = {
    "unknown option": (
        "m: {marker}; web[worker=2]: sleep 1",
        None,
        r"PYINIT_SERVICES entry 2 \(web\): .*'worker'",
    ),
    "unknown after": (
        "m: {marker}; web[after=nope]: sleep 1",
        None,
        r"PYINIT_SERVICES entry 2 \(web\): .*nope",
    ),
    "cycle": (
        "m: {marker}; x[after=y]: sleep 1; y[after=x]: sleep 1",
        None,
        r"PYINIT_SERVICES entry [23] \([xy]\): .*cycle",
    ),
    "duplicate name": (
        "m: {marker}; web: sleep 1; web: sleep 2",
        None,
        r"PYINIT_SERVICES entry 3 \(web\)",
    ),
    "bad duration": (
        "m: {marker}; job[every=often]: true",
        None,
        r"PYINIT_SERVICES entry 2 \(job\): .*often",
    ),
    "no target": ("m: {marker}; web[2]:", None, r"PYINIT_SERVICES entry 2"),
    "bad toml syntax": (
        None,
        '[services.m]\ncmd = "{marker}"\n\n[services.web]\ncmd = "sleep 1\n',
        r"{toml}:5",
    ),
    "bad toml value": (
        None,
        '[services.m]\ncmd = "{marker}"\n\n[services.web]\ncmd = "sleep 1"\ngrace = "ten"\n',
        r"{toml}:6: services\.web\.grace: .*ten",
    ),
    "unknown user": (
        None,
        '[services.m]\ncmd = "{marker}"\n\n[services.web]\ncmd = "sleep 1"\n'
        'user = "no-such-user-pit"\n',
        r"{toml}:6: .*no-such-user-pit",
    ),
    "name in both forms": (
        "m2: {marker}; web: sleep 1",
        '[services.m]\ncmd = "{marker}"\n\n[services.web]\ncmd = "sleep 1"\n',
        r"PYINIT_SERVICES entry 2 \(web\): .*{toml}:4",
    ),
    "missing file": (None, "", r"{toml}"),
}


@INSTALLED_ONLY
@SUBREAPER_ONLY
@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_configuration_exits_2_with_one_line_and_starts_nothing(
    pyinit_argv: list[str], as_pid1: list[str], tmp_path: Path, case: str
) -> None:
    services, toml, pattern = BAD_CONFIGS[case]
    marker_file = tmp_path / "started"
    marker = f"touch {marker_file}"
    env = base_env()
    argv = list(pyinit_argv)
    toml_path = tmp_path / "pyinit.toml"
    if services is not None:
        env["PYINIT_SERVICES"] = services.format(marker=marker)
    if toml is not None:
        if toml:
            toml_path.write_text(toml.format(marker=marker))
        argv += ["--config", str(toml_path)]
    result = run_init([*argv, "--", "touch", str(marker_file)], env=env)
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result.stderr)
    lines = [line for line in result.stderr if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert lines[0].startswith("pyinit: error: "), lines
    assert re.search(pattern.format(toml=re.escape(str(toml_path))), lines[0]), lines[0]
    stays_true(lambda: not marker_file.exists(), 0.2, "nothing was started")


# --------------------------------------------------------------------------- what a child gets


@INSTALLED_ONLY
@PID1_ONLY
def test_cwd_and_env_from_a_toml_file(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    script = (
        'pwd; echo "$GREETING"; echo "$PYINIT_WORKER_ID";'
        ' echo "${PYINIT_CONFIG-unset} ${PYINIT_SERVICES-unset}"; echo "$FROM_OUTSIDE"'
    )
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "probe": {
                "cmd": ["sh", "-c", f"({script}) > result.tmp && mv result.tmp result"],
                "oneshot": True,
                "cwd": str(workdir),
                "env": {"GREETING": "hello; world"},
            }
        },
    )
    env = base_env({"FROM_OUTSIDE": "inherited", "PYINIT_SERVICES": ""})
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=env)
    result = workdir / "result"
    wait_until(result.exists, 10, lambda: f"{result} ({proc.describe()})")
    assert result.read_text().splitlines() == [
        str(workdir),
        "hello; world",
        "0",
        "unset unset",  # pyinit's own configuration is not passed down
        "inherited",
    ]
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_user_nobody_drops_uid_gid_and_supplementary_groups(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    nobody = pwd.getpwnam("nobody")
    spec = "low[user=nobody]: sleep 30; high: sleep 31"
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    low = status_ids(find_descendant(proc.pid, ["sleep", "30"]))
    high = status_ids(find_descendant(proc.pid, ["sleep", "31"]))
    assert low["Uid"] == [nobody.pw_uid] * 4, f"real, effective, saved, fs uid: {low}"
    assert low["Gid"] == [nobody.pw_gid] * 4, low
    assert sorted(low["Groups"]) == sorted(set(os.getgrouplist("nobody", nobody.pw_gid))), low
    assert high["Uid"] == [0] * 4, "a service without `user` keeps pyinit's"
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0


# --------------------------------------------------------------------------- output


def _check_flood_stdout(lines: list[str], mode: str) -> None:
    """Every flood line arrived once, whole and in order, in `mode`'s format."""
    body = []
    for line in lines:
        if mode == "prefix":
            head, sep, rest = line.partition(" | ")
            assert sep and head == "flood[0]", f"not a prefixed line: {line[:80]!r}"
            body.append(rest)
        else:
            record = json.loads(line)  # a cut line would not parse
            assert set(record) >= {"time", "service", "worker", "stream", "message"}, record
            assert (record["service"], record["worker"], record["stream"]) == (
                "flood",
                0,
                "stdout",
            ), record
            body.append(record["message"])
    assert body[-1] == f"end {FLOOD_LINES}"
    assert len(body) == FLOOD_LINES + 1, f"{len(body)} lines, expected {FLOOD_LINES + 1}"
    for number, text in enumerate(body[:-1]):
        head = f"line {number:08d} "
        if text != head + "x" * (999 - len(head)):
            raise AssertionError(f"line {number} lost, cut or out of order: {text[:40]!r}...")


@INSTALLED_ONLY
@SUBREAPER_ONLY
@pytest.mark.parametrize("mode", ["prefix", "json"])
def test_output_modes_relay_10_mb_in_whole_lines(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path, mode: str
) -> None:
    events = Events(tmp_path / "events")
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "flood": {
                "cmd": svc_argv(events.path, "flood", "--flood", str(FLOOD_BYTES)),
                "oneshot": True,
                "output": mode,
            }
        },
    )
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=base_env())
    events.context = proc.describe
    proc.expect_line(rf".*end {FLOOD_LINES}.*", timeout=30)
    wait_until(
        lambda: any("flood[0]: exit status 0" in line for line in proc.stderr_lines(0)),
        10,
        "the flood to exit",
    )
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 0
    _check_flood_stdout(result.stdout, mode)
    relayed = [line for line in result.stderr if not line.startswith("pyinit")]
    if mode == "prefix":
        assert relayed == [f"flood[0] | err {n}" for n in range(3)], result.stderr
    else:
        records = [json.loads(line) for line in relayed]
        assert [(r["stream"], r["message"]) for r in records] == [
            ("stderr", f"err {n}") for n in range(3)
        ], relayed


@INSTALLED_ONLY
@SUBREAPER_ONLY
def test_output_is_inherited_by_default(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    events = Events(tmp_path / "events")
    spec = f"talk: {svc(events.path, 'talk', '--say', 'hello from talk')}"
    proc = start_init(pyinit_argv, prefix=as_pid1, env=services_env(spec))
    events.context = proc.describe
    assert proc.next_line(10) == "hello from talk", "no prefix, no wrapping"
    (start,) = events.wait_starts("talk", 1)
    pipe = os.readlink(f"/proc/{proc.pid}/fd/1")
    assert os.readlink(f"/proc/{start.pid}/fd/1") == pipe, "the child writes to pyinit's stdout"
    proc.send(signal.SIGTERM)
    assert proc.wait(10) == 0
