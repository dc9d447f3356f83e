"""One log schema for pyinit's records and its services' lines (issue 11).

pyinit runs as PID 1 with `--log-format json|logfmt -v` and three services: a
command relayed with `output = json|logfmt` that writes awkward lines
(quotes, `=`, tabs, backslashes, invalid UTF-8) to stdout and stderr, and
a Python `Service` whose worker runner logs through pyinit's own format.
Every line pyinit writes, on stdout and on stderr, must parse (json:
`json.loads`; logfmt: the strict parser below) and start with the same keys
in the same order: time (RFC 3339 UTC, ms, Z), level, source, stream,
message. The default `output` is `prefix` once more than one program writes
(pyinit's own format when that is json or logfmt; `inherit` for one
service), and a reload that adds a service leaves the first one running as
it was.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from support.helpers import PID1_ONLY, SUPPORT_DIR, StartInit, base_env, wait_until
from support.svc_helpers import Events, services_env, write_toml

KEYS = ["time", "level", "source", "stream", "message"]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
LEVELS = {"debug", "info", "warning", "error"}

# Lines a child prints: each one must come back, whole, as the record's message.
AWKWARD = [
    'say "hi" to a=b',
    "tab\there, back\\slash, end=",
    "",
    "ünïcödé ✓",
]
PRINTER = (
    "import sys, time\n"
    "lines = {lines!r}\n"
    "for line in lines:\n"
    "    print(line, flush=True)\n"
    "    print('err ' + line, file=sys.stderr, flush=True)\n"
    "sys.stdout.buffer.write(b'bad \\xff byte\\n'); sys.stdout.flush()\n"
    "print('printer done', flush=True)\n"
    "time.sleep(60)\n"
)


# -- a strict logfmt parser --------------------------------------------------------

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> dict[str, str]:
    """`key=value key="quoted value"` -> dict, in order; AssertionError on anything else.

    Keys: letters, digits, `_`, `.`, `-`. A bare value has no space, `=` or
    `"`; a quoted value escapes only `\\"`, `\\\\`, `\\n`, `\\r`, `\\t`, `\\uXXXX`
    and `\\UXXXXXXXX`. Pairs are separated by exactly one space.
    """
    record: dict[str, str] = {}
    i = 0
    while i < len(line):
        key = re.match(r"[A-Za-z0-9_.-]+=", line[i:])
        assert key, f"no key at column {i}: {line!r}"
        name = key.group()[:-1]
        assert name not in record, f"key {name!r} twice: {line!r}"
        i += key.end()
        if line[i : i + 1] == '"':
            i += 1
            value = []
            while True:
                assert i < len(line), f"unterminated quote: {line!r}"
                char = line[i]
                if char == '"':
                    i += 1
                    break
                if char == "\\":
                    code = line[i + 1 : i + 2]
                    if code in _ESCAPES:
                        value.append(_ESCAPES[code])
                        i += 2
                    elif code in ("u", "U"):
                        width = 4 if code == "u" else 8
                        digits = line[i + 2 : i + 2 + width]
                        assert re.fullmatch(r"[0-9a-f]+", digits) and len(digits) == width, line
                        value.append(chr(int(digits, 16)))
                        i += 2 + width
                    else:
                        raise AssertionError(f"bad escape \\{code} in {line!r}")
                else:
                    assert char.isprintable(), f"raw control character in {line!r}"
                    value.append(char)
                    i += 1
            record[name] = "".join(value)
        else:
            bare = re.match(r'[^ ="]+', line[i:])
            assert bare, f"empty bare value for {name!r}: {line!r}"
            assert all(c.isprintable() for c in bare.group()), line
            record[name] = bare.group()
            i += bare.end()
        if i < len(line):
            assert line[i] == " " and line[i + 1 : i + 2] != " ", f"bad separator: {line!r}"
            i += 1
    return record


def test_the_logfmt_parser_is_strict() -> None:
    assert parse_logfmt('a=1 b="x y" c="q\\"\\n"') == {"a": "1", "b": "x y", "c": 'q"\n'}
    for bad in ['a="open', "a=1  b=2", "a=x=y", "a=", 'a="\\q"', "=1"]:
        with pytest.raises(AssertionError):
            parse_logfmt(bad)


def parse(fmt: str, line: str) -> dict[str, object]:
    if fmt == "json":
        record = json.loads(line)
        assert isinstance(record, dict), line
        return record
    return dict(parse_logfmt(line))


def check_record(record: dict[str, object], line: str) -> None:
    assert list(record)[: len(KEYS)] == KEYS, f"keys {list(record)} in {line!r}"
    assert TIME.fullmatch(str(record["time"])), line
    assert record["level"] in LEVELS, line
    assert record["stream"] in ("stdout", "stderr"), line


# -- every line, both formats --------------------------------------------------------


@PID1_ONLY
@pytest.mark.parametrize("fmt", ["json", "logfmt"])
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_every_line_parses_with_the_same_keys(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path, fmt: str
) -> None:
    events = Events(tmp_path / "events")
    config = write_toml(
        tmp_path / "pyinit.toml",
        {
            "printer": {
                "cmd": ["python3", "-c", PRINTER.format(lines=AWKWARD)],
                "output": fmt,
            },
            "py": {  # inherit: its runner's records reach our stderr as they are
                "output": "inherit",
                "class": "svc_classes:Plain",
                "kwargs": {"log": str(events.path), "tag": "py"},
                "env": {"PYTHONPATH": str(SUPPORT_DIR)},
            },
            # no output given: beside other services it takes pyinit's format
            "failing": {"cmd": ["sh", "-c", "echo failing >&2; exit 3"], "restart": "never"},
        },
    )
    argv = [*pyinit_argv, "--log-format", fmt, "-v", "--config", str(config)]
    proc = start_init(argv, prefix=as_pid1, env=base_env())
    events.context = proc.describe
    events.wait_starts("py", 1, timeout=15)
    wait_until(
        lambda: any("printer done" in line for line in proc.stdout_lines),
        10,
        lambda: f"the printer's last line; stdout: {proc.stdout_lines}",
    )
    proc.send(signal.SIGTERM)
    result = proc.result(15)
    assert result.returncode == 0, result

    by_source: dict[str, list[dict[str, object]]] = {}
    for stream, lines in (("stdout", result.stdout), ("stderr", result.stderr)):
        for line in lines:
            record = parse(fmt, line)
            check_record(record, line)
            if record["source"] != "pyinit":  # pyinit's own lines all go to stderr
                assert record["stream"] == stream or record["source"] == "py[0]", line
            by_source.setdefault(str(record["source"]), []).append(record)

    pyinit_records = by_source["pyinit"]
    assert all(r["stream"] == "stderr" for r in pyinit_records)
    assert any(r.get("event") == "exited" and str(r.get("exit_code")) == "3"
               for r in pyinit_records), pyinit_records  # fmt: skip
    assert pyinit_records[-1].get("event") == "stopped", pyinit_records[-1]

    printed = by_source["printer[0]"]
    assert all(r["service"] == "printer" and str(r["worker"]) == "0" for r in printed)
    assert all(r["level"] == "info" for r in printed)
    out = [r["message"] for r in printed if r["stream"] == "stdout"]
    err = [r["message"] for r in printed if r["stream"] == "stderr"]
    assert out == [*AWKWARD, "bad \ufffd byte", "printer done"], out
    assert err == [f"err {line}" for line in AWKWARD], err

    (failing,) = by_source["failing[0]"]
    assert (failing["stream"], failing["message"]) == ("stderr", "failing"), failing

    # The Python worker's runner speaks pyinit's format, as its own source.
    runner = by_source["py[0]"]
    assert runner and all(r["stream"] == "stderr" for r in runner), runner
    assert any("SIGTERM: stopping" in str(r["message"]) for r in runner), runner


# -- the default output ------------------------------------------------------------------

SAY = "echo {word}; exec sleep 60"


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
@pytest.mark.parametrize(
    ("services", "command", "expected"),
    [
        ("a: sh -c '" + SAY.format(word="hello-a") + "'", [], ["hello-a"]),
        (
            f"a: sh -c '{SAY.format(word='hello-a')}'; b: sh -c '{SAY.format(word='hello-b')}'",
            [],
            ["a[0] | hello-a", "b[0] | hello-b"],
        ),
        (
            "a: sh -c '" + SAY.format(word="hello-a") + "'",
            ["sh", "-c", SAY.format(word="hello-main")],
            ["a[0] | hello-a", "hello-main"],
        ),
        (
            f"a[output=inherit]: sh -c '{SAY.format(word='hello-a')}';"
            f" b: sh -c '{SAY.format(word='hello-b')}'",
            [],
            ["hello-a", "b[0] | hello-b"],
        ),
    ],
    ids=["one-service", "two-services", "beside-command", "written-wins"],
)  # fmt: skip
def test_default_output_is_prefix_when_several_programs_write(
    pyinit_argv: list[str],
    as_pid1: list[str],
    start_init: StartInit,
    services: str,
    command: list[str],
    expected: list[str],
) -> None:
    argv = [*pyinit_argv, *(["--", *command] if command else [])]
    proc = start_init(argv, prefix=as_pid1, env=services_env(services))
    proc.expect_lines([re.escape(line) for line in expected], timeout=10, strict=True)
    proc.send(signal.SIGTERM)
    proc.result(10)


@PID1_ONLY
@pytest.mark.parametrize("pyinit_argv", ["installed"], indirect=True)
def test_a_reload_adding_a_service_does_not_restart_the_first_to_prefix_it(
    pyinit_argv: list[str], as_pid1: list[str], start_init: StartInit, tmp_path: Path
) -> None:
    say = {"cmd": ["sh", "-c", 'echo "start $$$$"; exec sleep 60']}  # $$ is a literal $
    config = write_toml(tmp_path / "pyinit.toml", {"a": say})
    proc = start_init([*pyinit_argv, "--config", str(config)], prefix=as_pid1, env=base_env())
    first = proc.expect_line(r"start (\d+)", timeout=10)
    write_toml(config, {"a": say, "b": {"cmd": ["sh", "-c", "echo hello-b; exec sleep 60"]}})
    proc.send(signal.SIGHUP)
    proc.expect_line(re.escape("b[0] | hello-b"), timeout=10)
    proc.send(signal.SIGTERM)
    result = proc.result(10)
    assert result.returncode == 0, result
    starts = [line for line in result.stdout if "start " in line]
    assert starts == [first.group()], f"a was restarted: {result.stdout}"
