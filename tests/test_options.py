"""The option parser as a pure function: argv + environment -> Options.

These need no process: `cli.parse` takes text and returns values, so the
rules (flag beats variable, repeated flags replace the variable's list,
options end at the first word that is not one) are checked directly. The
behaviour tests check the same rules end to end.
"""

from __future__ import annotations

import signal
import sys

import pytest

from pyinit.cli import UsageError, parse, parse_seconds


def options(argv: list[str], **environ: str):
    return parse(argv, environ)[0]


def test_defaults():
    opts = options(["sleep", "1"])
    assert opts.command == ["sleep", "1"]
    assert not opts.single_child
    assert opts.grace == 10
    assert opts.rewrite == {}
    assert opts.remap_exit == frozenset()
    assert (opts.log_format, opts.log_level) == ("text", "info")


def test_options_end_at_the_first_command_word():
    opts = options(["-t", "3", "sh", "-c", "exit 1", "-t", "9"])
    assert opts.grace == 3
    assert opts.command == ["sh", "-c", "exit 1", "-t", "9"]


def test_double_dash_ends_options_and_ctl_after_it_is_a_command():
    assert options(["--", "-weird-name"]).command == ["-weird-name"]
    assert options(["--", "ctl", "status"]).command == ["ctl", "status"]


def test_short_flags_cluster_and_take_attached_values():
    opts = options(["-cvt2.5", "true"])
    assert opts.single_child and opts.log_level == "debug" and opts.grace == 2.5


def test_long_options_with_equals():
    opts = options(["--grace=500ms", "--log-format=json", "true"])
    assert opts.grace == 0.5 and opts.log_format == "json"


def test_flag_wins_over_variable():
    opts = options(["--grace", "3", "true"], PYINIT_GRACE="7", PYINIT_SINGLE_CHILD="1")
    assert opts.grace == 3
    assert opts.single_child


def test_repeated_flags_replace_the_variables_list():
    opts = options(["-r", "USR1:USR2", "-r", "HUP:0", "true"], PYINIT_REWRITE="TERM:QUIT,INT:0")
    assert opts.rewrite == {signal.SIGUSR1: signal.SIGUSR2, signal.SIGHUP: 0}


def test_variable_lists():
    opts = options(["true"], PYINIT_REWRITE="TERM:QUIT, INT:0", PYINIT_REMAP_EXIT="143,137")
    assert opts.rewrite == {signal.SIGTERM: signal.SIGQUIT, signal.SIGINT: 0}
    assert opts.remap_exit == {143, 137}


def test_empty_variable_counts_as_unset():
    assert options(["true"], PYINIT_GRACE="", PYINIT_SINGLE_CHILD="").grace == 10


@pytest.mark.parametrize(
    ("text", "number"),
    [("TERM", 15), ("SIGTERM", 15), ("term", 15), ("15", 15), ("RTMIN+2", signal.SIGRTMIN + 2)],
)
def test_signal_spellings(text, number):
    assert options(["-r", f"{text}:0", "true"]).rewrite == {number: 0}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("10", 10), ("2.5", 2.5), ("250ms", 0.25), ("30s", 30), ("2m", 120), ("1h", 3600)],
)
def test_durations(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    ("argv", "environ", "names"),
    [
        (["--grace", "abc", "true"], {}, "--grace abc"),
        (["--grace", "-1", "true"], {}, "--grace -1"),
        (["--grace", "nan", "true"], {}, "--grace nan"),
        (["-r", "FOO:BAR", "true"], {}, "--rewrite FOO:BAR"),
        (["-r", "TERM", "true"], {}, "--rewrite TERM"),
        (["-r", "KILL:TERM", "true"], {}, "cannot be caught"),
        (["-e", "256", "true"], {}, "--remap-exit 256"),
        (["--log-format", "xml", "true"], {}, "--log-format xml"),
        (["--bogus", "true"], {}, "--bogus"),
        (["-x", "true"], {}, "-x"),
        (["--grace"], {}, "--grace"),
        (["-c=1", "true"], {}, "-="),
        (["true"], {"PYINIT_GRACE": "soon"}, "PYINIT_GRACE"),
        (["true"], {"PYINIT_SINGLE_CHILD": "maybe"}, "PYINIT_SINGLE_CHILD"),
        (["true"], {"PYINIT_REMAP_EXIT": "1,x"}, "PYINIT_REMAP_EXIT"),
        (["--health-port", "port", "true"], {}, "--health-port port"),
        ([], {}, "no command"),
    ],
)
def test_errors_name_the_culprit(argv, environ, names):
    with pytest.raises(UsageError) as caught:
        parse(argv, environ)
    message = str(caught.value)
    assert names in message
    assert "\n" not in message


def test_check_needs_no_command_and_keeps_the_config_path():
    opts, flags = parse(["--check", "--config", "/etc/pyinit.toml"], {})
    assert "check" in flags and opts.config == "/etc/pyinit.toml"


def test_services_need_no_command():
    opts = options([], PYINIT_SERVICES="web: sleep 1")
    assert opts.command == []
    assert options(["--config", "/etc/pyinit.toml"]).config == "/etc/pyinit.toml"


def test_help_and_version_need_no_command():
    assert "help" in parse(["--help"], {})[1]
    assert "version" in parse(["-V"], {})[1]


def test_check_prints_the_plan_or_one_error_line():
    """`pyinit --check` end to end: the installed command validates and plans."""
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "PYINIT_SERVICES": "web[2]: sleep 1; job[every=1h]: true"}
    good = subprocess.run(
        [sys.executable, "-m", "pyinit", "--check"], env=env, capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("2 services, 3 workers")
    env["PYINIT_SERVICES"] = "web[worker=2]: sleep 1"
    bad = subprocess.run(
        [sys.executable, "-m", "pyinit", "--check"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "pyinit: error: PYINIT_SERVICES entry 1 (web): unknown option 'worker'"
        " (did you mean 'workers'?)"
    ]
