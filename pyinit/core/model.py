"""Plain values shared by the parser and the policy: options and exit statuses.

No I/O here, and no imports beyond the interpreter's built-ins: this module is
on the start-up path, where `dataclasses` (which pulls in `inspect` and `re`)
would cost more than the rest of pyinit together. Classes with `__slots__`
give the same safety against typos.
"""

import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py

DEFAULT_GRACE = 10.0
#: After SIGKILL, how long to wait for the kernel before giving up on a
#: process (one in uninterruptible sleep cannot die sooner).
KILL_SETTLE_SECONDS = 5.0


class Options:
    """What the user asked for on the command line and in PYINIT_* variables."""

    __slots__ = (
        "command",
        "single_child",
        "rewrite",
        "remap_exit",
        "pdeathsig",
        "grace",
        "log_format",
        "log_level",
        "config",
        "explicit",
        "ctl_socket",
        "health_port",
        "warnings",
        "completion",
    )

    def __init__(self) -> None:
        self.warnings: list[str] = []  # said once the log exists (runner.run)
        self.command: list[str] = []
        self.single_child = False
        # received signal -> signal to forward; 0 means "drop it"
        self.rewrite: dict[int, int] = {}
        self.remap_exit: frozenset[int] = frozenset()
        self.pdeathsig: int | None = None
        # seconds from a stop signal to SIGKILL; 0 waits forever
        self.grace = DEFAULT_GRACE
        self.log_format = "text"
        self.log_level = "info"
        self.config: str | None = None  # TOML services file
        # Options set by a flag or variable: these win over the file's [pyinit].
        self.explicit: set[str] = set()
        self.ctl_socket: str | None = None  # services mode's control socket
        self.health_port: tuple[str, int] | None = None  # (address, port) for /healthz
        self.completion: str | None = None  # --completion SHELL: print the script, exit


class ExitStatus:
    """How a process ended, decoded once from a wait status (see wait(2)).

    `shell_code` is what a shell (and pyinit) reports: the exit code, or 128+N
    for a process killed by signal N.
    """

    __slots__ = ("code", "signal", "core_dumped")

    def __init__(self, code: int | None, signal: int | None, core_dumped: bool = False) -> None:
        self.code = code
        self.signal = signal
        self.core_dumped = core_dumped

    @classmethod
    def from_wait_status(cls, status: int) -> "ExitStatus":
        if posix.WIFSIGNALED(status):
            return cls(None, posix.WTERMSIG(status), posix.WCOREDUMP(status))
        # WIFEXITED is the only other case waitpid() reports without WUNTRACED.
        return cls(posix.WEXITSTATUS(status), None)

    @property
    def shell_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return self.code if self.code is not None else 0

    def describe(self) -> str:
        if self.signal is not None:
            from pyinit.core.signals import signal_name

            core = " (core dumped)" if self.core_dumped else ""
            return f"killed by {signal_name(self.signal)}{core}"
        return f"exit status {self.code}"

    def __repr__(self) -> str:
        return f"ExitStatus({self.describe()})"
