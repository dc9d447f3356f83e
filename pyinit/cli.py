"""Command line and PYINIT_* variables -> Options; then run.

The one place that turns a usage error into `pyinit: error: ...` and exit
status 2. The parser is hand-written: `argparse` costs ~3 ms of start-up
(`gettext`, `re`) and cannot stop at the first non-option word the way an
init must (`pyinit sh -c '...'` passes `-c` to sh). Options are scanned
POSIX style: they end at `--` or at the first word that is not an option.
"""

import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py
import sys

from pyinit import __version__
from pyinit.core.logs import FORMATS as LOG_FORMATS
from pyinit.core.model import Options
from pyinit.core.values import parse_bool, parse_choice, parse_exit_code, parse_seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

EXIT_USAGE = 2

USAGE = "usage: pyinit [OPTIONS] [--] COMMAND [ARG...]"
MORE_USAGE = """       pyinit [OPTIONS]              run the services of PYINIT_SERVICES / --config
       pyinit --check [OPTIONS]      validate the services, print the plan
       pyinit ctl [--ctl-socket PATH] VERB [ARG...]
                                     status [--json], ready, start|stop|restart NAME,
                                     signal NAME SIG, reload"""

HELP = f"""{USAGE}
{MORE_USAGE}

Run COMMAND as an init: reap every zombie, forward signals to COMMAND's process
group, stop it with SIGKILL when it outstays the grace period, and exit with its
status (128+N if a signal N killed it). With services configured, supervise them
too (COMMAND, if given, is the main one: its exit ends pyinit).

services (see the README for the grammar and the TOML keys):
  PYINIT_SERVICES='web: gunicorn app:app; worker[2]: python -m app.worker'
  values may use ${{VAR}} and ${{VAR:-default}} from the environment ($$ is a $)

options (each has an environment variable; the flag wins):
  -c, --single-child       signal only the child, not its process group, and
                           do not start it in a new session    PYINIT_SINGLE_CHILD=1
  -r, --rewrite SRC:DST    forward signal SRC as DST (names or numbers; DST 0
                           drops it); repeatable               PYINIT_REWRITE=TERM:QUIT,INT:0
  -e, --remap-exit CODE    treat exit status CODE as 0; repeatable
                                                               PYINIT_REMAP_EXIT=143,137
  -p, --pdeathsig SIG      signal pyinit gets when its parent dies (not as PID 1)
                                                               PYINIT_PDEATHSIG=TERM
  -t, --grace SECONDS      after a stop signal, wait this long before SIGKILL;
                           0 waits forever (default 10)        PYINIT_GRACE=10
      --log-format FORMAT  text, json or logfmt (default text); json/logfmt keys:
                           time level source stream message... PYINIT_LOG_FORMAT=json
      --log-level LEVEL    debug, info, warning, error (default info)
                                                               PYINIT_LOG_LEVEL=debug
      --config PATH        services from a TOML file           PYINIT_CONFIG=/etc/pyinit.toml
      --ctl-socket PATH    control socket, for the server and for `pyinit ctl`
                           (default /run/pyinit/ctl.sock)      PYINIT_CTL_SOCKET=/path
      --health-port [ADDR:]PORT
                           serve HTTP /healthz /readyz /metrics PYINIT_HEALTH_PORT=8080
      --check              validate the services configuration (PYINIT_SERVICES
                           and --config), print the plan, exit 0 or 2
      --completion SHELL   print the bash or zsh completion script; in ~/.bashrc:
                           eval "$(pyinit --completion bash)"
  -v, --verbose            same as --log-level debug
  -V, --version            print the version and exit
  -h, --help               print this help and exit

exit status: COMMAND's; 128+N if signal N killed it; 126 if it cannot run;
127 if it is not found; 2 for a usage error.
"""


class UsageError(Exception):
    """Bad command line or PYINIT_* value; the message names which."""


# -- value parsers: text -> value, or ValueError saying what is wrong ----------


def parse_rewrite(text: str) -> tuple[int, int]:
    from pyinit.core.signals import SIGKILL, SIGSTOP, parse_signal

    source, sep, target = text.partition(":")
    if not sep or not source.strip() or not target.strip():
        raise ValueError(f"expected SRC:DST (e.g. TERM:QUIT, or INT:0 to drop), got {text!r}")
    received = parse_signal(source)
    if received in (SIGKILL, SIGSTOP):  # never delivered to a handler
        raise ValueError(f"{source.strip()} cannot be caught, so it cannot be rewritten")
    return received, parse_signal(target, allow_zero=True)


def parse_pdeathsig(text: str) -> int:
    from pyinit.core.signals import parse_signal

    return parse_signal(text)


def parse_health_port(text: str) -> tuple[str, int]:
    from pyinit.control.health import parse_health_port as parse

    return parse(text)


# -- the option table ------------------------------------------------------------


#: Kinds of value for shell completion (completion.py knows them by these names).
FILE, SIGNAL, SIGNAL_PAIR = "file", "signal", "signal:signal"
LOG_LEVELS, SHELLS = ("debug", "info", "warning", "error"), ("bash", "zsh")


class Opt:
    """One option: its flags, its variable, how to parse it, where it goes,
    and what shell completion offers for its value (`complete`)."""

    __slots__ = ("short", "long", "variable", "parse", "attr", "repeat", "complete")

    def __init__(
        self,
        short: str | None,
        long: str,
        variable: str | None,
        parse: "Callable[[str], object] | None",
        attr: str,
        repeat: bool = False,
        complete: str | tuple[str, ...] = (),
    ) -> None:
        self.short = short
        self.long = long
        self.variable = variable
        self.parse = parse  # None: a flag that takes no value
        self.attr = attr
        self.repeat = repeat
        self.complete = complete  # FILE, SIGNAL, SIGNAL_PAIR, or the words themselves


OPTIONS = (
    Opt("c", "single-child", "PYINIT_SINGLE_CHILD", None, "single_child"),
    Opt("r", "rewrite", "PYINIT_REWRITE", parse_rewrite, "rewrite", True, SIGNAL_PAIR),
    Opt("e", "remap-exit", "PYINIT_REMAP_EXIT", parse_exit_code, "remap_exit", repeat=True),
    Opt("p", "pdeathsig", "PYINIT_PDEATHSIG", parse_pdeathsig, "pdeathsig", complete=SIGNAL),
    Opt("t", "grace", "PYINIT_GRACE", parse_seconds, "grace"),
    Opt(None, "log-format", "PYINIT_LOG_FORMAT", parse_choice(*LOG_FORMATS), "log_format",
        complete=LOG_FORMATS),
    Opt(None, "log-level", "PYINIT_LOG_LEVEL", parse_choice(*LOG_LEVELS), "log_level",
        complete=LOG_LEVELS),
    Opt(None, "config", "PYINIT_CONFIG", str, "config", complete=FILE),
    Opt(None, "ctl-socket", "PYINIT_CTL_SOCKET", str, "ctl_socket", complete=FILE),
    Opt(None, "health-port", "PYINIT_HEALTH_PORT", parse_health_port, "health_port"),
    Opt(None, "check", None, None, "check"),
    Opt(None, "completion", None, parse_choice(*SHELLS), "completion", complete=SHELLS),
    Opt("v", "verbose", None, None, "verbose"),
    Opt("V", "version", None, None, "version"),
    Opt("h", "help", None, None, "help"),
)  # fmt: skip


def _apply(options: Options, opt: "Opt", values: list[str], source: "Callable[[str], str]") -> None:
    """Parse `values` for `opt` and store them; errors name `source(value)`."""
    parsed = []
    for value in values:
        try:
            parsed.append(opt.parse(value) if opt.parse else parse_bool(value))
        except ValueError as error:
            raise UsageError(f"{source(value)}: {error}") from None
    if opt.attr == "rewrite":
        options.rewrite = dict(parsed)  # type: ignore[arg-type]
    elif opt.attr == "remap_exit":
        options.remap_exit = frozenset(parsed)  # type: ignore[arg-type]
    elif parsed:
        setattr(options, opt.attr, parsed[-1])


def _split_list(text: str) -> list[str]:
    return [item for item in (part.strip() for part in text.split(",")) if item]


def _scan_argv(argv: list[str]) -> tuple[dict[str, list[str]], set[str], list[str]]:
    """argv -> ({attr: [values]}, {flag attrs seen}, command)."""
    by_long = {opt.long: opt for opt in OPTIONS}
    by_short = {opt.short: opt for opt in OPTIONS if opt.short}
    values: dict[str, list[str]] = {}
    flags: set[str] = set()

    def take(opt: "Opt", value: str | None, index: int, shown: str) -> int:
        if opt.parse is None:
            if value is not None:
                raise UsageError(f"{shown} takes no value")
            flags.add(opt.attr)
            return index
        if value is None:
            if index >= len(argv):
                raise UsageError(f"{shown} needs a value")
            value, index = argv[index], index + 1
        values.setdefault(opt.attr, []).append(value)
        return index

    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            return values, flags, argv[i:]
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            opt = by_long.get(name)
            if opt is None:
                raise UsageError(f"unknown option --{_shown(name)} (see pyinit --help)")
            i = take(opt, value if eq else None, i, "--" + name)
        elif word.startswith("-") and word != "-":
            j = 1
            while j < len(word):
                opt = by_short.get(word[j])
                if opt is None:
                    raise UsageError(f"unknown option -{_shown(word[j])} (see pyinit --help)")
                if opt.parse is not None:
                    rest = word[j + 1 :]
                    i = take(opt, rest or None, i, "-" + word[j])
                    break
                take(opt, None, i, "-" + word[j])
                j += 1
        else:
            return values, flags, argv[i - 1 :]
    return values, flags, []


def parse(argv: list[str], environ: "Mapping[str, str]") -> tuple[Options, set[str]]:
    """Build Options from argv (without the program name) and the environment.

    Returns the options and the set of action flags seen (help, version, check).
    Raises UsageError for anything wrong.
    """
    values, flags, command = _scan_argv(argv)
    if "help" in flags or "version" in flags:
        return Options(), flags
    if "completion" in values:  # an action, like --help: nothing else matters
        options, opt = Options(), next(o for o in OPTIONS if o.attr == "completion")
        _apply(options, opt, values["completion"], _flag_source(opt))
        return options, flags | {"completion"}

    options = Options()
    for opt in OPTIONS:
        if opt.attr in ("verbose", "version", "help", "check", "completion"):
            continue
        if opt.attr in values or opt.attr in flags:
            flag_values = values.get(opt.attr, ["1"])
            _apply(options, opt, flag_values, _flag_source(opt))
            options.explicit.add(opt.attr)
        elif opt.variable and environ.get(opt.variable, "").strip():
            text = environ[opt.variable]
            items = _split_list(text) if opt.repeat else [text]
            _apply(options, opt, items, _variable_source(opt))
            options.explicit.add(opt.attr)
    if "verbose" in flags and "log_level" not in values:
        options.log_level = "debug"
    options.command = command
    options.warnings.extend(unknown_variables(environ))
    if "check" in flags or services_configured(options, environ):
        return options, flags
    if not command:
        raise UsageError("no command given and no services configured (see pyinit --help)")
    return options, flags


#: PYINIT_* variables read by something other than the option table: the
#: compact services, and what pyinit sets for a Python worker.
OTHER_VARIABLES = frozenset(
    {"PYINIT_SERVICES", "PYINIT_WORKER_ID", "PYINIT_SERVICE_NAME", "PYINIT_SERVICE_ARGS"}
)


def unknown_variables(environ: "Mapping[str, str]") -> list[str]:
    """A warning for each PYINIT_* name pyinit does not know (a typo like
    PYINIT_GRAC would otherwise be ignored in silence), with the closest name."""
    known = {opt.variable for opt in OPTIONS if opt.variable} | OTHER_VARIABLES
    unknown = sorted(n for n in environ if n.startswith("PYINIT_") and n not in known)
    if not unknown:
        return []
    import difflib  # only when there is something to say: not on the start-up path

    warnings = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"unknown variable {name!r} is ignored{hint}")
    return warnings


def services_configured(options: Options, environ: "Mapping[str, str]") -> bool:
    return bool(options.config or environ.get("PYINIT_SERVICES", "").strip())


def _flag_source(opt: "Opt") -> "Callable[[str], str]":
    """How an error names a bad flag value: `--grace abc`.

    A value holding a newline or an escape sequence is quoted (repr), so it
    cannot make an error two lines or forge a log line (issue 7, item 21).
    """
    return lambda value: f"--{opt.long} {_shown(value)}" if opt.parse else f"--{opt.long}"


def _shown(word: str) -> str:
    """A word from argv as an error shows it: as is if printable, else quoted."""
    return word if word.isprintable() else repr(word)


def _variable_source(opt: "Opt") -> "Callable[[str], str]":
    """How an error names a bad variable: `PYINIT_GRACE='abc'`."""
    return lambda value: f"{opt.variable}={value!r}"


def _environ() -> dict[str, str]:
    """The environment as os.environ has it, without importing os."""
    encoding = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {k.decode(*encoding): v.decode(*encoding) for k, v in posix.environ.items()}


def main(argv: list[str] | None = None) -> int:
    """The `pyinit` command. Returns the exit status."""
    import gc

    gc.disable()  # as in __main__: start-up is short and allocates only what it keeps
    from pyinit.core.logs import fatal

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ctl"]:  # reserved word: a program named ctl runs after `--`
        import os

        from pyinit.control.client import main_ctl

        return main_ctl(args[1:], os.environ)
    environ = _environ()
    try:
        options, flags = parse(args, environ)
    except UsageError as error:
        fatal(str(error))
        return EXIT_USAGE
    if "help" in flags:
        sys.stdout.write(HELP)
        return 0
    if "version" in flags:
        sys.stdout.write(f"pyinit {__version__}\n")
        return 0
    if "completion" in flags:
        from pyinit.completion import script

        sys.stdout.write(script(options.completion or "bash", OPTIONS, HELP))
        return 0
    if "check" in flags:
        from pyinit.services_entry import check

        return check(options)

    from pyinit.runner import run

    if not services_configured(options, environ):
        return run(options)
    # Services mode: its configuration layer is imported only here.
    from pyinit.services_entry import load_config

    config = load_config(options, verbose="verbose" in flags)
    if config is None:
        return EXIT_USAGE
    return run(options, config)
