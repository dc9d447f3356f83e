"""sd_notify upstream: pyinit as a client of whoever started it (systemd, podman).

Wire format (sd_notify(3)): one AF_UNIX datagram per message, UTF-8 text of
`KEY=VALUE` lines separated by `\\n` (`READY=1`, `STATUS=3/3 services ready`,
`RELOADING=1` + `MONOTONIC_USEC=...`, `STOPPING=1`, `WATCHDOG=1`). The address
is `$NOTIFY_SOCKET`: a filesystem path, or `@name` for the abstract namespace
(the `@` stands for a leading NUL byte).

This half stays in core because single-command mode uses it too. The other
half, the socket pyinit hands its own services, is services-only and lives in
pyinit/supervise/notify_socket.py.

Upstream (`Upstream`): pyinit tells systemd / podman `--sdnotify=container`
how it is doing. We send with our own unconnected socket, `sendto()` +
MSG_DONTWAIT, rather than through the `sdnotify` package. sdnotify 0.3.2
does handle `@` addresses, but its `notify()` is a blocking `sendall()` on a
socket connected once at construction: a listener that stops reading would
hang PID 1, and a listener that is re-created at the same path is never
reached again (libsystemd's sd_notify sends to the address each time, like
us). It also reads `os.environ` itself, encodes latin-1 (a non-latin-1
STATUS vanishes) and swallows every exception, even KeyboardInterrupt. The
raw datagram is a dozen lines and costs no import.
"""

from __future__ import annotations

import os
import socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyinit.core.logs import Log


class Upstream:
    """pyinit's sd_notify client, configured from the environment it started with.

    `address` is None when NOTIFY_SOCKET is unset (or a transport we do not
    speak, such as systemd 254's `vsock:`); every method is then a no-op
    returning False. Sending never raises and never blocks: a full or absent
    listener loses the message, as with libsystemd's sd_notify().
    """

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        log: Log | None = None,
    ) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid
        self._log = log
        self._socket: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], log: Log | None = None) -> Upstream:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (malformed values: None).

        The caller keeps these variables out of its children's environment
        (SPEC 4: children never see the upstream NOTIFY_SOCKET).
        """
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not (
            address[0] == "/" or (address[0] == "@" and len(address) > 1)
        ):
            address = None
        return cls(
            address,
            watchdog_usec=_positive_int(environ.get("WATCHDOG_USEC")),
            watchdog_pid=_positive_int(environ.get("WATCHDOG_PID")),
            log=log,
        )

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """STATUS=text, one line (a newline would start a new field)."""
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def reloading(self) -> bool:
        """RELOADING=1 with the CLOCK_MONOTONIC time systemd 253+ requires beside it."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC (sd_watchdog_enabled(3)).

        None when there is no socket, no WATCHDOG_USEC, or WATCHDOG_PID names
        another process (the watchdog was meant for someone else).
        """
        if self.address is None or self.watchdog_usec is None:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, *fields: str) -> bool:
        """Send `fields` as one datagram; True if the kernel took it."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address[0] == "@" else self.address
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(payload, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, target)
        except OSError as error:
            if self._log is not None:
                self._log.debug(f"sd_notify to {self.address}: {error.strerror or error}")
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if value > 0 else None
