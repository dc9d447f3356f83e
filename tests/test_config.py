"""The configuration layer of services mode: text in, frozen model out.

Pure tests: no process is started. Every error test checks the two things a
user relies on: the message names its source (the PYINIT_SERVICES entry, or
file:line), and it is one line.
"""

from __future__ import annotations

import os
import pwd
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyinit.config import ConfigError, load, load_toml, parse_config, parse_services
from pyinit.config.model import (
    Backoff,
    Config,
    OutputMode,
    ReadinessKind,
    ReloadMode,
    RestartPolicy,
    ServiceSpec,
    backoff_delay,
    check_cron,
    find_cycle,
    next_cron_time,
    start_order,
)
from pyinit.config.plan_text import format_plan

PATH = "/etc/pyinit.toml"
SOME_USER = pwd.getpwuid(0).pw_name  # exists wherever the tests run
NO_USER = "no-such-user-pyinit"

SPEC_TOML = """\
[pyinit]
grace = 10
log_format = "json"

[services.migrate]
cmd = "python manage.py migrate"
oneshot = true

[services.web]
cmd = ["gunicorn", "-b", ":8000", "app:app"]  # a string is split like a shell does
after = ["migrate"]             # start after these are ready (a oneshot: exited 0)
ready = "tcp:8000"
ready_timeout = "60s"
restart = "always"
backoff = { threshold = "1s", min_delay = "1s", max_delay = "1h" }
max_restarts = 0
restart_window = "60s"
grace = 20
stop_signal = "SIGTERM"
reload = "signal"
reload_signal = "SIGHUP"
user = "root"
cwd = "/app"
env = { LOG_LEVEL = "info" }
output = "inherit"
critical = true

[services.indexer]
class = "myapp.services:Indexer"
workers = 2
args = []
kwargs = { batch = 100 }

[services.cleanup]
cmd = "python -m myapp.cleanup"
every = "1h"
run_on_start = false
"""


def toml_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_toml(text, PATH)
    return one_line(caught.value)


def compact_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_services(text)
    return one_line(caught.value)


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message and message, repr(message)
    return message


# -- the compact form: good entries ----------------------------------------------


def test_spec_examples_parse():
    """Every PYINIT_SERVICES example of SPEC section 3, as written there."""
    web = parse_services("web: gunicorn -b :8000 app:app; worker[3]: python -m myapp.worker")
    assert web["web"].command == ("gunicorn", "-b", ":8000", "app:app")
    assert web["worker"].workers == 3 and web["worker"].command == ("python", "-m", "myapp.worker")

    indexer = parse_services("indexer[workers=2, grace=30]: py:myapp.services:Indexer")["indexer"]
    assert (indexer.py_class, indexer.command, indexer.workers, indexer.grace) == (
        "myapp.services:Indexer", None, 2, 30.0,
    )  # fmt: skip

    text = (
        "migrate[oneshot]: python manage.py migrate; "
        "web[after=migrate, ready=tcp:8000]: gunicorn app:app"
    )
    specs = parse_services(text)
    assert specs["migrate"].oneshot and specs["migrate"].restart is RestartPolicy.NEVER
    assert specs["web"].after == ("migrate",)
    assert specs["web"].ready.kind is ReadinessKind.TCP and specs["web"].ready.port == 8000

    text = (
        "cleanup[every=1h]: python -m myapp.cleanup; report[cron=0 3 * * *]: python -m myapp.report"
    )
    specs = parse_services(text)
    assert specs["cleanup"].schedule is not None and specs["cleanup"].schedule.every == 3600.0
    assert specs["report"].schedule is not None and specs["report"].schedule.cron == "0 3 * * *"


def test_semicolon_inside_quotes_belongs_to_the_command():
    specs = parse_services(
        """a: sh -c 'echo one; echo two'; b: echo "x;y"; c: find . -exec rm {} \\;"""
    )
    assert specs["a"].command == ("sh", "-c", "echo one; echo two")
    assert specs["b"].command == ("echo", "x;y")
    assert specs["c"].command == ("find", ".", "-exec", "rm", "{}", ";")


def test_newlines_separate_entries_and_empty_entries_are_not_counted():
    text = "\n  a: true\n\n;;\n  b[bogus]: true\n"
    assert compact_error(text).startswith("PYINIT_SERVICES entry 2 (b): unknown option 'bogus'")


def test_options_flags_quotes_and_lists():
    spec = parse_services(
        'r[cron="0 3,15 * * *", run_on_start, critical=false, stop_signal=INT, output=prefix]: x'
        "; s[2, after=r2+q, reload=restart, user=0, cwd=/srv]: py:pkg.mod:Outer.Inner"
        "; r2[oneshot, restart=on-failure]: y; q: z"
    )
    r = spec["r"]
    assert r.schedule is not None and r.schedule.cron == "0 3,15 * * *" and r.schedule.run_on_start
    assert not r.critical and r.stop_signal == signal.SIGINT and r.output is OutputMode.PREFIX
    s = spec["s"]
    assert (s.workers, s.after, s.reload, s.user, s.cwd) == (
        2,
        ("r2", "q"),
        ReloadMode.RESTART,
        "0",
        "/srv",
    )
    assert s.py_class == "pkg.mod:Outer.Inner"
    assert spec["r2"].restart is RestartPolicy.ON_FAILURE


def test_brackets_inside_options_and_readiness_hosts():
    specs = parse_services("a[ready=tcp:[::1]:8000]: x; b[ready=tcp:db.local:5432]: y")
    assert (specs["a"].ready.host, specs["a"].ready.port, specs["a"].command) == (
        "::1",
        8000,
        ("x",),
    )
    assert (specs["b"].ready.host, specs["b"].ready.port) == ("db.local", 5432)
    assert parse_services("c[ready=file:/run/c.ready]: z")["c"].ready.path == "/run/c.ready"


def test_defaults_follow_spec():
    spec = parse_services("web: true")["web"]
    assert spec.workers == 1 and spec.restart is RestartPolicy.ALWAYS
    assert spec.backoff == Backoff(threshold=1.0, min_delay=1.0, max_delay=3600.0)
    assert spec.reload is ReloadMode.SIGNAL and spec.reload_signal == signal.SIGHUP
    assert spec.stop_signal == signal.SIGTERM and spec.output is OutputMode.INHERIT
    assert spec.ready.kind is ReadinessKind.NONE and spec.grace is None
    assert (spec.max_restarts, spec.critical, spec.oneshot, spec.schedule) == (
        0,
        False,
        False,
        None,
    )
    assert spec.origin == "PYINIT_SERVICES entry 1"


def test_origin_is_not_part_of_equality():
    """Moving a service in the file is not a change a reload should act on."""
    a = parse_services("x: true; web[2]: sleep 1")["web"]
    b = parse_services("web[2]: sleep 1")["web"]
    assert a.origin != b.origin and a == b


# -- the compact form: errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: true; web[worker=2]: x",
            "entry 2 (web): unknown option 'worker' (did you mean 'workers'?)",
        ),
        ("my web: x", "entry 1: bad service name 'my web'"),
        ("w@b: x", "entry 1: bad service name 'w@b'"),
        (": x", "entry 1: missing service name"),
        ("web gunicorn", "entry 1: expected NAME: COMMAND"),
        ("web:", "entry 1 (web): missing command after ':'"),
        ("web: ''", "entry 1 (web): cmd: empty command"),
        ("web[2: x", "entry 1 (web): missing ']'"),
        ("web[2] x", "entry 1 (web): expected ':' after the options"),
        ("web: true; web: false", "entry 2 (web): service 'web' is already entry 1"),
        ("web[env=A=1]: x", "entry 1 (web): option 'env' exists only in the TOML file"),
        ("web[backoff=1s]: x", "entry 1 (web): option 'backoff' exists only in the TOML file"),
        ("web[kwargs=1]: py:a:B", "entry 1 (web): option 'kwargs' exists only in the TOML file"),
        (
            "web[ready=exec:true]: x",
            "entry 1 (web): ready: exec readiness exists only in the TOML file",
        ),
        ("web[cmd=true]: x", "entry 1 (web): 'cmd' is not an option"),
        ("web[grace]: x", "entry 1 (web): option 'grace' needs a value"),
        ("web[grace=]: x", "entry 1 (web): grace: empty value"),
        ("web[grace=soon]: x", "entry 1 (web): grace: expected seconds"),
        ("web[grace=1, grace=2]: x", "entry 1 (web): option 'grace' given twice"),
        ("web[2, workers=3]: x", "entry 1 (web): option 'workers' given twice"),
        ("web[workers=-1]: x", "entry 1 (web): workers: expected a whole number"),
        ("web[workers=two]: x", "entry 1 (web): workers: expected a whole number"),
        ("web[2,,]: x", "entry 1 (web): empty option"),
        ("web[stop_signal=SIGNOPE]: x", "entry 1 (web): stop_signal: unknown signal"),
        ("web[reload_signal=99]: x", "entry 1 (web): reload_signal: no such signal number"),
        ("web[oneshot=maybe]: x", "entry 1 (web): oneshot: expected 1 or 0"),
        ('web[cron="0 3 * *"]: x', "entry 1 (web): cron: expected 5 cron fields"),
        ("web[cron=0 25 * * *]: x", "entry 1 (web): cron: bad cron expression"),
        ("web[cron=* * * * * *]: x", "entry 1 (web): cron: expected 5 cron fields"),
        ("web[every=1h, cron=0 3 * * *]: x", "entry 1 (web): cron: every and cron both given"),
        ("web[every=0]: x", "entry 1 (web): every: expected a duration above 0"),
        ("web[run_on_start]: x", "entry 1 (web): run_on_start: applies only with every or cron"),
        ("web[after=db]: x", "entry 1 (web): after: unknown service 'db'"),
        (
            "a[after=b]: x; b[after=c]: x; c[after=a]: x",
            "entry 1 (a): after: dependency cycle: a -> b -> c -> a",
        ),
        ("a[after=a]: x", "entry 1 (a): after: dependency cycle: a -> a"),
        ("a[after=b+b]: x; b: y", "entry 1 (a): after: 'b' is listed twice"),
        ("a[after=b+]: x; b: y", "entry 1 (a): after: bad service name ''"),
        ("j[every=1m]: x; a[after=j]: y", "entry 2 (a): after: 'j' is a periodic job"),
        ("web[user=" + NO_USER + "]: x", f"entry 1 (web): user: unknown user '{NO_USER}'"),
        ("web[group=" + NO_USER + "]: x", f"entry 1 (web): group: unknown group '{NO_USER}'"),
        ("web[watchdog=30s]: x", 'entry 1 (web): watchdog: needs ready = "notify"'),
        ("web[ready=http:80]: x", "entry 1 (web): ready: expected none, notify"),
        ("web[ready=tcp:99999]: x", "entry 1 (web): ready: expected a port from 1 to 65535"),
        ("web[ready=tcp:]: x", "entry 1 (web): ready: expected none, notify"),
        (
            "web[restart=sometimes]: x",
            "entry 1 (web): restart: expected one of always, on-failure, never",
        ),
        ("web[output=xml]: x", "entry 1 (web): output: expected one of inherit, prefix, json"),
        ("m[oneshot, workers=2]: x", "entry 1 (m): workers: a oneshot runs one process"),
        ("m[oneshot, restart=always]: x", "entry 1 (m): restart: a oneshot cannot restart always"),
        ("m[oneshot, every=1h]: x", "entry 1 (m): every: a oneshot cannot also be periodic"),
        ("m[every=1h, workers=3]: x", "entry 1 (m): workers: a periodic job runs one process"),
        (
            "web[reload=none, reload_signal=USR1]: x",
            'entry 1 (web): reload_signal: needs reload = "signal"',
        ),
        ("web: py:not a class", "entry 1 (web): class: expected module:Class"),
        ("web: py:module", "entry 1 (web): class: expected module:Class"),
        ("web: echo 'unclosed", "entry 1 (web): unterminated ' quote"),
        ('a: true; web: echo "unclosed', 'entry 2 (web): unterminated " quote'),
        ("web: echo \\", "entry 1 (web): command 'echo \\\\': no escaped character"),
        ('web[cron="0 3 * * *]: x', 'entry 1 (web): unterminated " quote'),
        (
            "web[max_restarts=1, restart_window=0]: x",
            "entry 1 (web): restart_window: expected a duration above 0",
        ),
    ],
)
def test_compact_errors_name_the_entry(text, expected):
    message = compact_error(text)
    assert message.startswith("PYINIT_SERVICES " + expected), message


# -- the TOML form ------------------------------------------------------------------


def test_spec_toml_example_parses():
    settings_, specs = load_toml(SPEC_TOML, PATH)
    assert (settings_.grace, settings_.log_format, settings_.log_level) == (10.0, "json", None)
    assert list(specs) == ["migrate", "web", "indexer", "cleanup"]
    web = specs["web"]
    assert web.command == ("gunicorn", "-b", ":8000", "app:app") and web.after == ("migrate",)
    assert (web.ready.kind, web.ready.port, web.ready_timeout) == (ReadinessKind.TCP, 8000, 60.0)
    assert web.backoff == Backoff(1.0, 1.0, 3600.0) and web.restart_window == 60.0
    assert (web.grace, web.user, web.cwd, dict(web.env), web.critical) == (
        20.0, "root", "/app", {"LOG_LEVEL": "info"}, True,
    )  # fmt: skip
    assert specs["migrate"].command == ("python", "manage.py", "migrate")
    assert specs["migrate"].restart is RestartPolicy.NEVER
    indexer = specs["indexer"]
    assert (indexer.py_class, indexer.workers, indexer.args, dict(indexer.kwargs)) == (
        "myapp.services:Indexer", 2, (), {"batch": 100},
    )  # fmt: skip
    cleanup = specs["cleanup"].schedule
    assert cleanup is not None and (cleanup.every, cleanup.run_on_start) == (3600.0, False)
    assert web.origin == f"{PATH}:9" and specs["migrate"].origin == f"{PATH}:5"


def test_toml_exec_readiness_notify_watchdog_and_health_port():
    text = """
[pyinit]
health_port = "127.0.0.1:8080"
ctl_socket = "/tmp/ctl.sock"
log_level = "DEBUG"
[services.db]
cmd = "postgres"
ready = { exec = ["pg_isready", "-q"], interval = "2s" }
[services.app]
cmd = "app"
ready = "notify"
watchdog = "30s"
user = 1000
group = "0"
env = { PORT = 8000 }
"""
    settings_, specs = load_toml(text, PATH)
    assert settings_.health_port == ("127.0.0.1", 8080) and settings_.log_level == "debug"
    ready = specs["db"].ready
    assert (ready.kind, ready.command, ready.interval) == (
        ReadinessKind.EXEC,
        ("pg_isready", "-q"),
        2.0,
    )
    app = specs["app"]
    assert (app.ready.kind, app.watchdog, app.user, app.group) == (
        ReadinessKind.NOTIFY,
        30.0,
        "1000",
        "0",
    )
    assert dict(app.env) == {"PORT": "8000"}


def test_toml_error_lines_point_at_the_key():
    lines = SPEC_TOML.split("\n")

    def line_of(prefix: str, table: str) -> int:
        start = lines.index(table)
        return next(i for i, line in enumerate(lines[start:], start + 1) if line.startswith(prefix))

    web_grace = line_of("grace = 20", "[services.web]")
    message = toml_error(SPEC_TOML.replace("grace = 20", 'grace = "long"'))
    assert message.startswith(f"{PATH}:{web_grace}: services.web.grace: expected seconds"), message

    backoff = line_of("backoff", "[services.web]")
    message = toml_error(SPEC_TOML.replace('max_delay = "1h"', 'max_delay = "0.5s"'))
    assert message == f"{PATH}:{backoff}: services.web.backoff.max_delay: is below min_delay"

    workers = line_of("workers", "[services.indexer]")
    message = toml_error(SPEC_TOML.replace("workers = 2", "worker = 2"))
    assert (
        message
        == f"{PATH}:{workers}: services.indexer.worker: unknown key (did you mean 'workers'?)"
    )

    message = toml_error(SPEC_TOML.replace("grace = 10", "grace = true"))
    assert message.startswith(f"{PATH}:2: pyinit.grace: expected a duration"), message
    assert message.endswith("got a boolean"), message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[services.web]\ncmd = "a"\nclass = "m:C"',
            "3: services.web.class: cmd and class both given",
        ),
        ("[services.web]\nworkers = 1", "1: services.web: needs cmd (a command) or class"),
        (
            '[services.web]\ncmd = "a"\nworkers = -1',
            "3: services.web.workers: expected a whole number from 0 to 10000, got -1",
        ),
        (
            '[services.web]\ncmd = "a"\nworkers = "2"',
            "3: services.web.workers: expected a whole number from 0 to 10000, got '2'",
        ),
        (
            '[services.web]\ncmd = "a"\nworkers = 1.5',
            "3: services.web.workers: expected a whole number",
        ),
        ('[services.web]\ncmd = ""', "2: services.web.cmd: empty command"),
        ("[services.web]\ncmd = []", "2: services.web.cmd: empty command"),
        ('[services.web]\ncmd = ["a", 1]', "2: services.web.cmd: expected a string, got 1"),
        ("[services.web]\ncmd = 5", "2: services.web.cmd: expected a command"),
        ('[services.web]\ncmd = "a \'b"', "2: services.web.cmd: no closing quotation"),
        (
            '[services.web]\ncmd = "a"\ngrace = -1',
            "3: services.web.grace: expected a duration of 0 or more seconds",
        ),
        (
            '[services.web]\ncmd = "a"\ngrace = inf',
            "3: services.web.grace: expected a duration of at most 100 years (36500d), got inf",
        ),
        (
            '[services.web]\ncmd = "a"\ngrace = nan',
            "3: services.web.grace: expected a duration of 0 or more seconds",
        ),
        (
            '[services.web]\ncmd = "a"\nstop_signal = "TREM"',
            "3: services.web.stop_signal: unknown signal: 'TREM'",
        ),
        (
            '[services.web]\ncmd = "a"\nstop_signal = 0',
            "3: services.web.stop_signal: no such signal number: 0",
        ),
        ('[services.web]\ncmd = "a"\nafter = "db"', "3: services.web.after: unknown service 'db'"),
        (
            '[services.web]\ncmd = "a"\nafter = [1]',
            "3: services.web.after: expected a string, got 1",
        ),
        (
            '[services.web]\ncmd = "a"\nafter = {a = 1}',
            "3: services.web.after: expected an array of service names",
        ),
        (
            '[services.web]\ncmd = "a"\nenv = { "A=B" = "1" }',
            "3: services.web.env: bad variable name 'A=B'",
        ),
        (
            '[services.web]\ncmd = "a"\nenv = { A = true }',
            "3: services.web.env.A: expected a string, got a boolean",
        ),
        ('[services.web]\ncmd = "a"\nenv = "A=1"', "3: services.web.env: expected a table"),
        (
            '[services.web]\ncmd = "a"\nargs = [1]',
            "3: services.web.args: applies only to class services",
        ),
        (
            '[services.web]\nclass = "m:C"\nargs = [1979-05-27]',
            "3: services.web.args: a date or time cannot be passed",
        ),
        ('[services.web]\nclass = "m:C"\nkwargs = [1]', "3: services.web.kwargs: expected a table"),
        (
            '[services.web]\ncmd = "a"\nbackoff = { threshold = "1s", delay = 2 }',
            "3: services.web.backoff.delay: unknown key",
        ),
        ('[services.web]\ncmd = "a"\nbackoff = "1s"', "3: services.web.backoff: expected a table"),
        (
            '[services.web]\ncmd = "a"\nready = { interval = "1s" }',
            "3: services.web.ready: a readiness table needs exec",
        ),
        (
            '[services.web]\ncmd = "a"\nready = { exec = "x", every = "1s" }',
            "3: services.web.ready.every: unknown key",
        ),
        (
            '[services.web]\ncmd = "a"\nready = { exec = "x", interval = 0 }',
            "3: services.web.ready.interval: expected a duration above 0",
        ),
        (
            '[services.web]\ncmd = "a"\nready = "exec:true"',
            "3: services.web.ready: an exec check is a table",
        ),
        (
            '[services.web]\ncmd = "a"\nready = "file:"',
            "3: services.web.ready: expected none, notify",
        ),
        (
            '[services.web]\ncmd = "a"\nready = "tcp:db:x"',
            "3: services.web.ready: expected a port from 1 to 65535, got 'x'",
        ),
        (
            '[services.web]\ncmd = "a"\nwatchdog = "5s"\nready = "tcp:80"',
            "3: services.web.watchdog: needs ready",
        ),
        (
            '[services.web]\ncmd = "a"\nuser = "' + NO_USER + '"',
            f"3: services.web.user: unknown user '{NO_USER}'",
        ),
        ('[services.web]\ncmd = "a"\nuser = -5', "3: services.web.user: bad id '-5'"),
        ('[services.web]\ncmd = "a"\ncwd = ""', "3: services.web.cwd: expected a non-empty string"),
        ('[services.web]\ncmd = "a"\ncwd = "/a\\u0000b"', "3: services.web.cwd: NUL character"),
        (
            '[services.web]\ncmd = "a"\noneshot = 1',
            "3: services.web.oneshot: expected true or false, got 1",
        ),
        (
            '[services.web]\ncmd = "a"\ncron = "61 * * * *"',
            "3: services.web.cron: bad cron expression '61 * * * *'",
        ),
        (
            '[services.web]\ncmd = "a"\nevery = "1m"\ncron = "* * * * *"',
            "4: services.web.cron: every and cron both given",
        ),
        (
            '[services.web]\ncmd = "a"\noneshot = true\nworkers = 3',
            "4: services.web.workers: a oneshot runs one process",
        ),
        ('[services."my web"]\ncmd = "a"', '1: services."my web": bad service name'),
        (
            '[services]\nweb = "a"',
            "2: services.web: expected a table ([services.web]), got a string",
        ),
        ("services = 3", "1: services: expected [services.NAME] tables"),
        ("[pyinit]\ngrce = 1", "2: pyinit.grce: unknown key (did you mean 'grace'?)"),
        ('[pyinit]\nlog_format = "xml"', "2: pyinit.log_format: expected one of text, json"),
        ("[pyinit]\nhealth_port = 0", "2: pyinit.health_port: expected a port from 1 to 65535"),
        ("pyinit = 1", "1: pyinit: expected a table"),
        ('[service.web]\ncmd = "a"', "1: service: unknown key (the file has a [pyinit] table"),
        (
            '[services.a]\ncmd = "x"\nafter = ["b"]\n[services.b]\ncmd = "y"\nafter = ["a"]',
            "3: services.a.after: dependency cycle: a -> b -> a",
        ),
    ],
)
def test_toml_errors_name_file_and_line(text, expected):
    message = toml_error(text)
    assert message.startswith(f"{PATH}:{expected}"), message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[services.web]\ncmd = [\n  'a',\n  oops\n]", 4),
        ('[services.web]\ncmd = "a"\ncmd = "b"', 3),
        ("x = 1\ny = \n", 2),
        ("[services.web\ncmd = 'a'", 1),
        ("a = [\n", 1),
    ],
)
def test_toml_syntax_errors_are_reworded_with_the_line(text, line):
    message = toml_error(text)
    assert message.startswith(f"{PATH}:{line}: invalid TOML: "), message
    assert "(at line" not in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('services.web.cmd = "a"\nservices.web.grace = "x"', 2),  # dotted keys at the top
        ('[services]\nweb.cmd = "a"\nweb.grace = "x"', 3),
        ('[services.web]\r\ncmd = "a"\r\ngrace = "x"\r\n', 3),  # CRLF line ends
    ],
)
def test_key_lines_follow_dotted_keys_and_crlf(text, line):
    assert toml_error(text).startswith(f"{PATH}:{line}: services.web.grace: expected seconds")


def test_key_lines_are_not_fooled_by_strings_arrays_and_quoted_names():
    text = """\
# [services.web] in a comment
[services."a.b"]
cmd = [
  "x",
  "[services.web]",
  "grace = 1",
]
note = '''
[services.web]
grace = 2
'''
[services . web ]
cmd = "y"
grace = "bad"
"""
    message = toml_error(text)
    assert message.startswith(f'{PATH}:8: services."a.b".note: unknown key'), message
    message = toml_error(
        text.replace("note = '''", "env = { X = '''").replace(
            "'''\n[services . web", "''' }\n[services . web"
        )
    )
    assert message.startswith(f"{PATH}:14: services.web.grace: expected seconds"), message


# -- both forms, and load() ------------------------------------------------------


def test_a_name_in_both_forms_is_an_error():
    with pytest.raises(ConfigError) as caught:
        parse_config("a: x; web: y", '[services.web]\ncmd = "z"\n', PATH)
    assert one_line(caught.value) == (
        f"PYINIT_SERVICES entry 2 (web): service 'web' is also defined at {PATH}:1"
    )


def test_after_may_cross_forms_and_cycles_across_forms_are_found():
    config = parse_config(
        "web[after=migrate]: y", '[services.migrate]\ncmd = "m"\noneshot = true\n', PATH
    )
    assert start_order(config) == [("migrate",), ("web",)]
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "web[after=migrate]: y", '[services.migrate]\ncmd = "m"\nafter = ["web"]\n', PATH
        )
    assert one_line(caught.value) == (
        "PYINIT_SERVICES entry 1 (web): after: dependency cycle: web -> migrate -> web"
    )


def test_load_reads_the_variable_and_the_file(tmp_path: Path):
    path = tmp_path / "pyinit.toml"
    path.write_text('[pyinit]\ngrace = "30s"\n[services.db]\ncmd = "postgres"\n')
    other = tmp_path / "other.toml"
    other.write_text('[services.cache]\ncmd = "redis-server"\n')
    environ = {"PYINIT_SERVICES": "web[after=db]: gunicorn app:app", "PYINIT_CONFIG": str(path)}

    config = load(environ, None)
    assert list(config.services) == ["web", "db"] and config.path == str(path)
    assert config.settings.grace == 30.0 and config.services["db"].origin == f"{path}:3"

    config = load({**environ, "PYINIT_SERVICES": "web: x"}, str(other))  # --config wins
    assert list(config.services) == ["web", "cache"] and config.path == str(other)

    assert load({}, None, allow_empty=True) == Config()
    with pytest.raises(ConfigError, match="no services configured"):
        load({}, None)


def test_load_file_errors(tmp_path: Path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load({"PYINIT_CONFIG": str(missing)}, None)
    assert one_line(caught.value) == f"{missing}: cannot read: No such file or directory"
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b'[services.web]\ncmd = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load({}, str(binary))
    assert one_line(caught.value) == f"{binary}: not UTF-8 text (byte 25)"
    with pytest.raises(ConfigError) as caught:
        load({}, str(tmp_path))
    assert one_line(caught.value).startswith(f"{tmp_path}: cannot read: Is a directory")


def test_user_and_group_that_exist_are_accepted():
    spec = parse_services(f"web[user={SOME_USER}, group=0]: x")["web"]
    assert (spec.user, spec.group) == (SOME_USER, "0")


def test_config_error_is_always_one_line():
    assert str(ConfigError("a\nb")) == "a b"


# -- pure helpers ------------------------------------------------------------------


def test_backoff_doubles_from_min_delay_up_to_max_delay():
    default = Backoff()
    delays = [backoff_delay(n, default) for n in range(0, 15)]
    assert delays[:4] == [0.0, 1.0, 2.0, 4.0]
    assert delays[12] == 2048.0 and delays[13] == 3600.0 and delays[14] == 3600.0
    assert backoff_delay(10**6, default) == 3600.0  # no overflow for a very long crash loop
    assert backoff_delay(-1, default) == 0.0
    custom = Backoff(threshold=5.0, min_delay=0.25, max_delay=1.0)
    assert [backoff_delay(n, custom) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_start_order_layers_follow_after():
    specs = parse_services(
        "web[after=db+cache]: w; db[after=migrate]: d; cache: c; migrate[oneshot]: m; "
        "worker[after=db]: k; lone: l"
    )
    layers = start_order(Config(services=specs))
    assert layers == [("cache", "migrate", "lone"), ("db",), ("web", "worker")]
    position = {name: i for i, layer in enumerate(layers) for name in layer}
    for spec in specs.values():
        assert all(position[dep] < position[spec.name] for dep in spec.after)


def test_start_order_refuses_a_cycle_and_find_cycle_names_it():
    specs = {
        n: ServiceSpec(name=n, command=("x",), after=a) for n, a in (("a", ("b",)), ("b", ("a",)))
    }
    with pytest.raises(ValueError, match="cycle"):
        start_order(Config(services=specs))
    assert find_cycle({"a": ("b",), "b": ("c",), "c": ("b",)}) == ["b", "c", "b"]
    assert find_cycle({"a": ("b", "zz"), "b": ()}) is None


def test_format_plan_shows_order_workers_and_what_runs_as_whom():
    config = parse_config(
        f"web[2, after=migrate, ready=tcp:8000, user={SOME_USER}]: gunicorn -b :8000 app:app",
        SPEC_TOML.replace("[services.web]", "[services.api]").replace('after = ["migrate"]', ""),
        PATH,
    )
    plan = format_plan(config)
    assert plan.startswith("5 services, 7 workers\n")
    assert "  1. migrate, api, indexer, cleanup\n  2. web\n" in plan
    assert "web: service, 2 workers  (PYINIT_SERVICES entry 1)" in plan
    assert "  runs     gunicorn -b :8000 app:app" in plan
    assert f"  as       user {SOME_USER}" in plan
    assert "  as       user root, in /app" in plan
    assert "  runs     py:myapp.services:Indexer" in plan
    assert "migrate: oneshot, 1 worker" in plan and "cleanup: periodic, 1 worker" in plan
    assert "  when     every 1h" in plan
    assert "SIGKILL after 20s" in plan and "SIGKILL after 10s" in plan  # own grace; [pyinit] grace
    assert (
        "  env      LOG_LEVEL" in plan and "info" not in plan.split("LOG_LEVEL")[1].split("\n")[0]
    )
    assert format_plan(Config()) == "no services configured\n"


def test_next_cron_time_is_strictly_after_and_keeps_the_zone():
    utc = UTC
    assert next_cron_time("0 3 * * *", datetime(2024, 1, 1, 2, 59, 59, tzinfo=utc)) == datetime(
        2024, 1, 1, 3, 0, tzinfo=utc
    )
    assert next_cron_time("0 3 * * *", datetime(2024, 1, 1, 3, 0, 0, 1, tzinfo=utc)) == datetime(
        2024, 1, 2, 3, 0, tzinfo=utc
    )
    assert next_cron_time("0 3,15 * * *", datetime(2024, 1, 1, 4, tzinfo=utc)) == datetime(
        2024, 1, 1, 15, tzinfo=utc
    )
    berlin = ZoneInfo("Europe/Berlin")  # 2024-03-31 02:30 does not exist there (DST)
    found = next_cron_time("30 2 * * *", datetime(2024, 3, 30, 12, tzinfo=berlin))
    assert found is not None and found.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "expr", ["* * * *", "0 0 * * * 2030", "60 * * * *", "* * 32 * *", "0 0 31 2 *", "a b c d e"]
)
def test_check_cron_refuses_bad_expressions(expr):
    with pytest.raises(ValueError):
        check_cron(expr)


# -- properties -------------------------------------------------------------------

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRAMMAR_ALPHABET = "aw09_.-[]:;=,+\"'\\ \n\tpy*/#" + "\0é"
OPTION_KEYS = sorted(
    "workers after ready ready_timeout watchdog restart max_restarts restart_window grace"
    " stop_signal reload reload_signal user group cwd output critical oneshot every cron"
    " run_on_start env worker".split()
)
OPTION_VALUES = [
    "", "1", "0", "-1", "3", "1h", "500ms", "x", "TERM", "SIGHUP", "99", "notify", "tcp:80",
    "file:/x", "exec:true", "always", "never", "on-failure", "prefix", "json", "signal", "restart",
    "true", "root",
    '"0 3 * * *"', '"* * * *"', "a+b", "web", "/srv", '"unterminated',
]  # fmt: skip


def parses_or_config_error(text: str) -> None:
    try:
        specs = parse_services(text)
    except ConfigError as error:
        one_line(error)
        assert str(error).startswith("PYINIT_SERVICES entry "), str(error)
    else:
        order = start_order(Config(services=specs))
        assert sorted(n for layer in order for n in layer) == sorted(specs)
        format_plan(Config(services=specs))


@FAST
@given(st.text())
def test_any_text_parses_or_raises_config_error(text):
    parses_or_config_error(text)


@FAST
@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=60))
def test_grammar_shaped_text_parses_or_raises_config_error(text):
    parses_or_config_error(text)


@st.composite
def entries(draw: st.DrawFn) -> str:
    """Well-formed-looking entries with random options: reaches the value checks."""
    out = []
    for index in range(draw(st.integers(1, 3))):
        keys = draw(st.lists(st.sampled_from(OPTION_KEYS), max_size=4))
        options = ", ".join(
            key
            if draw(st.booleans()) and key in ("oneshot", "critical", "run_on_start")
            else f"{key}={draw(st.sampled_from(OPTION_VALUES))}"
            for key in keys
        )
        name = draw(st.sampled_from(["web", "a", "b", f"s{index}"]))
        target = draw(st.sampled_from(["true", "py:m:C", "sh -c 'a; b'", "py:bad", "''", "x\0y"]))
        out.append(f"{name}[{options}]: {target}")
    return draw(st.sampled_from(["; ", "\n"])).join(out)


@FAST
@given(entries())
def test_random_option_entries_parse_or_raise_config_error(text):
    parses_or_config_error(text)


TOML_KEYS = [*OPTION_KEYS, "cmd", "class", "env", "backoff", "args", "kwargs", "bogus"]
TOML_VALUES = [
    '"x"', "1", "-1", "0", "1.5", "true", "nan", '"1h"', '["a", "b"]', "[]", "[1]", '{ A = "1" }',
    '{ threshold = "2s" }', '{ exec = ["true"] }', '"m:C"', '"notify"', '"tcp:8000"', "1979-05-27",
    '"0 3 * * *"', '"TERM"', "{}", '"root"',
]  # fmt: skip


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append("[pyinit]")
        for key in draw(
            st.lists(
                st.sampled_from(["grace", "log_level", "health_port", "x"]), max_size=2, unique=True
            )
        ):
            lines.append(f"{key} = {draw(st.sampled_from(TOML_VALUES))}")
    for name in draw(
        st.lists(st.sampled_from(["web", "db", '"a b"', "c.d"]), max_size=3, unique=True)
    ):
        lines.append(f"[services.{name}]")
        for key in draw(st.lists(st.sampled_from(TOML_KEYS), max_size=5, unique=True)):
            lines.append(f"{key} = {draw(st.sampled_from(TOML_VALUES))}")
    return "\n".join(lines) + "\n"


@FAST
@given(st.one_of(toml_documents(), st.text(max_size=80)))
def test_any_toml_parses_or_raises_config_error_with_file_and_line(text):
    try:
        _, specs = load_toml(text, PATH)
    except ConfigError as error:
        assert one_line(error).startswith(PATH + ":"), str(error)
    else:
        format_plan(Config(services=specs))


@FAST
@given(st.text(alphabet="0123456789*/,-LW#? MONJANabc", max_size=30))
def test_check_cron_raises_only_value_error(expr):
    try:
        check_cron(expr)
    except ValueError:
        return
    found = next_cron_time(expr, datetime(2024, 1, 1, tzinfo=UTC))
    assert found is None or found > datetime(2024, 1, 1, tzinfo=UTC)


def test_no_processes_are_started():
    """Parsing is pure: a run of the whole suite's parsers starts no child."""
    before = set(os.listdir(f"/proc/{os.getpid()}/task"))
    parse_config(
        "web[2]: sleep 1000; m[oneshot]: true",
        SPEC_TOML.replace("[services.web]", "[services.w2]"),
        PATH,
    )
    assert set(os.listdir(f"/proc/{os.getpid()}/task")) == before
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
