"""`${VAR}`, `${VAR:-default}` and `$$` in the configuration (issue 11).

Expanded from pyinit's environment in TOML string values and in
PYINIT_SERVICES, at start and again at every reload (SIGHUP re-reads and
re-expands the file). What a user sees is checked: the arguments a service
really received (it prints them), the plan `--check` prints, and, for an
unset variable without a default, one `pyinit: error:` line naming the
variable and where it was written, exit status 2 and nothing started; at
reload a "reload refused" line and the running service left alone.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from support.helpers import INSTALLED_ONLY, PID1_ONLY, StartInit, assert_no_traceback, run_init
from support.svc_helpers import services_env, wait_log, write_toml

from pyinit.config.expand import ExpandError, expand

# A service that prints its arguments on one line, then waits to be stopped.
ECHO_ARGS = 'printf "%s|" "$@"; echo; exec sleep 60'


def echo_service(*args: str) -> dict[str, object]:
    return {"cmd": ["sh", "-c", ECHO_ARGS, "sh", *args]}


# -- the grammar, on the pure function ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${PORT}", "8080"),
        ("-b :${PORT}", "-b :8080"),
        ("${PORT}${PORT}", "80808080"),
        ("${MISSING:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),  # as sh: `:-` also replaces an empty value
        ("${EMPTY}", ""),
        ("${MISSING:-}", ""),
        ("${PORT:-9}", "8080"),
        ("$$", "$"),
        ("$${PORT}", "${PORT}"),
        ("$$${PORT}", "$8080"),
        ("$$$${PORT}", "$${PORT}"),
        ("echo $1 $HOME $", "echo $1 $HOME $"),  # a lone $ stays: sh -c uses $1
        ("cost: 5$", "cost: 5$"),
        # the shell's other forms are left to the shell
        (
            "${PORT-x} ${#PORT} ${1} ${PORT%0} ${PORT:+y}",
            "${PORT-x} ${#PORT} ${1} ${PORT%0} ${PORT:+y}",
        ),
        ("a ${PORT", "a ${PORT"),
        ("${}", "${}"),
    ],
)
def test_expand_grammar(text: str, expected: str) -> None:
    assert expand(text, {"PORT": "8080", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${NOPE}", "x ${PORT} ${NOPE:-} ${NOPE}", "$${X} ${NOPE}"])
def test_expand_errors_name_the_unset_variable(text: str) -> None:
    with pytest.raises(ExpandError) as caught:
        expand(text, {"PORT": "1"})
    assert str(caught.value).startswith("${NOPE}: environment variable NOPE is not set")


# -- at start ---------------------------------------------------------------------


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_toml_values_are_expanded_at_start(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "pyinit.toml",
        {"web": echo_service("${PORT}", "${MISSING:-fallback}", "$$PORT", "$1", "${PORT-sh}")},
        settings={"grace": "${GRACE:-3}"},
    )
    env = services_env(PORT="8080")
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=env)
    proc.expect_line(r"8080\|fallback\|\$PORT\|\$1\|\$\{PORT-sh\}\|", timeout=10)
    proc.send(signal.SIGTERM)
    assert proc.result(10).returncode == 0


@INSTALLED_ONLY
@PID1_ONLY
def test_compact_values_and_commands_are_expanded_at_start(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit
) -> None:
    spec = f"web[workers=${{WORKERS:-1}}]: sh -c '{ECHO_ARGS}' sh ${{PORT}} $$ '${{WHO:-a b}}'"
    env = services_env(spec, PORT="9000")
    proc = start_init(pyinit_argv, prefix=as_pid1, env=env)
    proc.expect_line(r"9000\|\$\|a b\|", timeout=10)
    proc.send(signal.SIGTERM)
    assert proc.result(10).returncode == 0


@INSTALLED_ONLY
def test_check_prints_the_expanded_plan(pyinit_argv: list[str], tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "pyinit.toml", {"web": {"cmd": "server --port ${PORT}", "grace": "${G:-45}"}}
    )
    result = run_init(
        [*pyinit_argv, "--check", "--config", str(config)], env=services_env(PORT="81")
    )
    assert result.returncode == 0, result
    plan = "\n".join(result.stdout)
    assert "server --port 81" in plan and "45" in plan, plan
    assert "${" not in plan, plan


@INSTALLED_ONLY
@PID1_ONLY
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("toml-cmd", r"pyinit\.toml:2: services\.web\.cmd: \$\{NOPE\}: environment variable NOPE"),
        ("toml-env", r"pyinit\.toml:3: services\.web\.env\.TOKEN: \$\{NOPE\}: environment var"),
        ("toml-settings", r"pyinit\.toml:2: pyinit\.grace: \$\{NOPE\}: environment variable"),
        ("compact-cmd", r"PYINIT_SERVICES entry 1 \(web\): command: \$\{NOPE\}: environment"),
        ("compact-option", r"PYINIT_SERVICES entry 2 \(db\): grace: \$\{NOPE\}: environment"),
    ],
)
def test_an_unset_variable_is_one_error_line_and_nothing_starts(
    pyinit_argv: list[str], as_pid1: list[str], tmp_path: Path, where: str, expected: str
) -> None:
    marker = tmp_path / "started"
    command = f"touch {marker}"
    env = services_env()
    args = [*pyinit_argv]
    if where.startswith("toml"):
        config = tmp_path / "pyinit.toml"
        config.write_text(
            {
                "toml-cmd": f'[services.web]\ncmd = "{command} ${{NOPE}}"\n',
                "toml-env": f'[services.web]\ncmd = "{command}"\nenv = {{ TOKEN = "${{NOPE}}" }}\n',
                "toml-settings": (
                    f'[pyinit]\ngrace = "${{NOPE}}"\n[services.web]\ncmd = "{command}"\n'
                ),
            }[where]
        )
        args += ["--config", str(config)]
    else:
        env["PYINIT_SERVICES"] = {
            "compact-cmd": f"web: {command} ${{NOPE}}",
            "compact-option": f"web: {command}; db[grace=${{NOPE}}]: {command}",
        }[where]
    result = run_init(args, prefix=as_pid1, env=env, cwd=tmp_path)
    assert result.returncode == 2, result
    assert len(result.stderr) == 1, result.stderr
    assert re.search(r"^pyinit: error: .*" + expected, result.stderr[0]), result.stderr
    assert_no_traceback(result.stderr)
    assert not marker.exists(), "a service was started despite the error"


# -- at reload -------------------------------------------------------------------


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
def test_reload_expands_the_file_again_and_refuses_an_unset_variable(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    config = write_toml(tmp_path / "pyinit.toml", {"web": echo_service("v1", "${PORT}")})
    env = services_env(PORT="7000", COLOR="blue")
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=env)
    proc.expect_line(r"v1\|7000\|", timeout=10)

    # A changed file, expanded again from pyinit's environment: the service restarts.
    write_toml(config, {"web": echo_service("v2", "${COLOR}", "${SIZE:-large}")})
    proc.send(signal.SIGHUP)
    proc.expect_line(r"v2\|blue\|large\|", timeout=10)

    # An unset variable: refused with file:line and the name; web keeps running as is.
    config.write_text(f"[services.web]\ncmd = {echo_service('v3', '${NOPE}')['cmd']!r}\n")
    proc.send(signal.SIGHUP)
    refused = wait_log(proc, r"reload refused")
    assert "pyinit.toml:2: services.web.cmd: ${NOPE}: environment variable NOPE" in refused[0]
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 0, result
    assert not any(line.startswith("v3") for line in result.stdout), result.stdout
    assert_no_traceback(result.stderr)
