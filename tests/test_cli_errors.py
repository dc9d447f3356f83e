"""Usage errors: exit 2, one stderr line `pyinit: error: ...` naming the culprit, no child.

The command given to pyinit would create a marker file, so "no child started"
is checked, not assumed. A hypothesis property then throws junk at every
valued flag and PYINIT_* variable: either it is accepted (the command runs,
exit 0) or it is refused the same clean way (exit 2) - never a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import INSTALLED_ONLY, Result, assert_no_traceback, base_env, run_init


def marker_command(marker: Path, code: int = 0) -> list[str]:
    """A command whose only trace is the file it creates."""
    return ["sh", "-c", f'touch "{marker}"; exit {code}']


def assert_usage_error(result: Result, names: str | None, marker: Path) -> None:
    """Exit 2, exactly one line `pyinit: error: ...` (naming ``names``), no child."""
    assert result.returncode == 2, result
    assert_no_traceback(result.stderr)
    assert len(result.stderr) == 1, f"expected one stderr line, got {result.stderr}"
    line = result.stderr[0]
    assert line.startswith("pyinit: error:"), line
    if names:
        assert names in line, f"{line!r} does not name {names!r}"
    assert not marker.exists(), "pyinit started the command despite the usage error"
    assert result.stdout == []


BAD_FLAGS = [
    (["--bogus"], "--bogus"),
    (["--grace", "abc"], "--grace"),
    (["--grace", "-1"], "--grace"),
    (["--grace=-1"], "--grace"),
    (["--grace", ""], "--grace"),
    (["--rewrite", "FOO:BAR"], "--rewrite"),
    (["--rewrite", "TERM"], "--rewrite"),
    (["--rewrite", "TERM:FOO"], "--rewrite"),
    (["--rewrite", "99:TERM"], "--rewrite"),
    (["--rewrite", ":TERM"], "--rewrite"),
    (["--remap-exit", "300"], "--remap-exit"),
    (["--remap-exit", "-1"], "--remap-exit"),
    (["--remap-exit", "abc"], "--remap-exit"),
    (["--pdeathsig", "NOPE"], "--pdeathsig"),
    (["--log-format", "xml"], "--log-format"),
    (["--log-level", "loud"], "--log-level"),
]


@INSTALLED_ONLY
@pytest.mark.parametrize(("args", "names"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag(pyinit_argv: list[str], tmp_path: Path, args: list[str], names: str) -> None:
    marker = tmp_path / "started"
    result = run_init([*pyinit_argv, *args, "--", *marker_command(marker)])
    assert_usage_error(result, names, marker)


BAD_VARIABLES = [
    ("PYINIT_GRACE", "abc"),
    ("PYINIT_GRACE", "-3"),
    ("PYINIT_REWRITE", "bad"),
    ("PYINIT_REWRITE", "TERM:QUIT,INT"),
    ("PYINIT_REMAP_EXIT", "143,abc"),
    ("PYINIT_REMAP_EXIT", "256"),
    ("PYINIT_PDEATHSIG", "NOPE"),
    ("PYINIT_LOG_FORMAT", "xml"),
    ("PYINIT_LOG_LEVEL", "loud"),
]


@INSTALLED_ONLY
@pytest.mark.parametrize(
    ("name", "value"), BAD_VARIABLES, ids=[f"{n}={v}" for n, v in BAD_VARIABLES]
)
def test_bad_variable(pyinit_argv: list[str], tmp_path: Path, name: str, value: str) -> None:
    marker = tmp_path / "started"
    result = run_init([*pyinit_argv, "--", *marker_command(marker)], env=base_env({name: value}))
    assert_usage_error(result, name, marker)


@INSTALLED_ONLY
def test_flag_wins_over_bad_variable_or_reports_it(pyinit_argv: list[str], tmp_path: Path) -> None:
    """A valid flag with an invalid variable: either the flag wins (exit 0) or a clean error."""
    marker = tmp_path / "started"
    result = run_init(
        [*pyinit_argv, "--grace", "1", "--", *marker_command(marker)],
        env=base_env({"PYINIT_GRACE": "abc"}),
    )
    assert_no_traceback(result.stderr)
    if result.returncode == 2:
        assert_usage_error(result, "PYINIT_GRACE", marker)
    else:
        assert result.returncode == 0 and marker.exists(), result


@pytest.mark.parametrize(
    "args",
    [[], ["--"], ["-c"], ["--grace", "3"], ["-v", "--"]],
    ids=["nothing", "dashdash", "-c", "grace", "-v dashdash"],
)
def test_no_command_is_a_usage_error(pyinit_argv: list[str], args: list[str]) -> None:
    result = run_init([*pyinit_argv, *args])
    assert result.returncode == 2, result
    assert_no_traceback(result.stderr)
    assert len(result.stderr) == 1 and result.stderr[0].startswith("pyinit: error:"), result.stderr


@INSTALLED_ONLY
@pytest.mark.parametrize("args", [["--grace"], ["-t"], ["--rewrite"], ["-e"]])
def test_flag_missing_its_value(pyinit_argv: list[str], args: list[str]) -> None:
    result = run_init([*pyinit_argv, *args])
    assert result.returncode == 2, result
    assert_no_traceback(result.stderr)
    assert len(result.stderr) == 1 and result.stderr[0].startswith("pyinit: error:"), result.stderr


@INSTALLED_ONLY
def test_short_flag_errors_are_one_line(pyinit_argv: list[str], tmp_path: Path) -> None:
    marker = tmp_path / "started"
    for args in (["-t", "abc"], ["-r", "TERM"], ["-e", "999"], ["-p", "NOPE"], ["-x"]):
        result = run_init([*pyinit_argv, *args, "--", *marker_command(marker)])
        assert_usage_error(result, None, marker)


@INSTALLED_ONLY
def test_help_and_version(pyinit_argv: list[str]) -> None:
    """--help lists every flag with its variable; --version prints one line. Both exit 0."""
    help_result = run_init([*pyinit_argv, "--help"])
    assert help_result.returncode == 0
    text = "\n".join(help_result.stdout)
    for flag, variable in [
        ("--single-child", "PYINIT_SINGLE_CHILD"),
        ("--rewrite", "PYINIT_REWRITE"),
        ("--remap-exit", "PYINIT_REMAP_EXIT"),
        ("--pdeathsig", "PYINIT_PDEATHSIG"),
        ("--grace", "PYINIT_GRACE"),
        ("--log-format", "PYINIT_LOG_FORMAT"),
        ("--log-level", "PYINIT_LOG_LEVEL"),
    ]:
        assert flag in text and variable in text, f"--help lacks {flag} / {variable}"
    version = run_init([*pyinit_argv, "--version"])
    assert version.returncode == 0
    assert len(version.stdout) == 1 and version.stdout[0].startswith("pyinit "), version.stdout


# --------------------------------------------------------------------------- property

OPTIONS = ["--grace", "--rewrite", "--remap-exit", "--pdeathsig", "--log-format", "--log-level"]
VARIABLES = [
    "PYINIT_GRACE",
    "PYINIT_REWRITE",
    "PYINIT_REMAP_EXIT",
    "PYINIT_PDEATHSIG",
    "PYINIT_LOG_FORMAT",
    "PYINIT_LOG_LEVEL",
    "PYINIT_SINGLE_CHILD",
]
SIGNAL_WORDS = [
    "TERM",
    "SIGTERM",
    "term",
    "KILL",
    "HUP",
    "USR1",
    "0",
    "9",
    "15",
    "31",
    "32",
    "64",
    "-1",
    "SIGFOO",
    "",
]
junk = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "0.5",
            "1e3",
            "nan",
            "inf",
            "-inf",
            "1_0",
            " 3 ",
            "",
            ",",
            "255",
            "256",
            "143,137",
            "143,,137",
            "json",
            "text",
            "JSON",
            "debug",
            "DEBUG",
            "TERM:QUIT,INT:0",
            "TERM:QUIT;INT:0",
            "true",
            "yes",
            "0x10",
            "١",
        ]
    ),
    st.builds(
        lambda a, b: f"{a}:{b}", st.sampled_from(SIGNAL_WORDS), st.sampled_from(SIGNAL_WORDS)
    ),
)


@INSTALLED_ONLY
@settings(
    max_examples=40,
    deadline=None,
    database=None,  # do not write .hypothesis/ into the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(where=st.sampled_from(OPTIONS + VARIABLES), value=junk)
def test_junk_is_accepted_or_refused_cleanly(
    pyinit_argv: list[str], where: str, value: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "started"
        if where.startswith("--"):
            result = run_init([*pyinit_argv, f"{where}={value}", "--", *marker_command(marker)])
        else:
            result = run_init(
                [*pyinit_argv, "--", *marker_command(marker)], env=base_env({where: value})
            )
        assert_no_traceback(result.stderr)
        if result.returncode == 2:
            assert_usage_error(result, where, marker)
        else:
            assert result.returncode == 0, f"{where}={value!r}: {result}"
            assert marker.exists(), f"{where}={value!r}: exit 0 but the command never ran"
