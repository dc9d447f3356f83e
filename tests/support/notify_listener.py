"""A fake sd_notify manager (systemd, podman `--sdnotify=container`) for the tests.

`NotifyListener` binds an AF_UNIX datagram socket at a short path of its own,
reads every datagram in a thread, and keeps each as a `Message`: the time
it arrived (time.monotonic(), the clock svc_child.py events use) and its
`KEY=VALUE` fields. Pass `listener.path` to pyinit as NOTIFY_SOCKET; wait
for messages with `wait_for`, which has a deadline like every wait here.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from support.helpers import wait_until


@dataclass(frozen=True)
class Message:
    """One datagram as received: arrival time and its fields (a later key wins)."""

    time: float
    fields: dict[str, str]
    raw: str

    def has(self, key: str, value: str | None = None) -> bool:
        return key in self.fields and (value is None or self.fields[key] == value)


class NotifyListener:
    """A bound datagram socket collecting sd_notify messages; close() removes it.

    The socket lives in a fresh directory under /tmp: AF_UNIX paths are
    limited to 107 bytes, more than some pytest tmp_path names leave room for.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="pit-notify-", dir="/tmp")
        self.path = os.path.join(self.directory, "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode("utf-8", errors="replace")
            fields = {}
            for line in text.split("\n"):
                key, sep, value = line.partition("=")
                if sep:
                    fields[key] = value
            with self._lock:
                self._messages.append(Message(now, fields, text))

    @property
    def messages(self) -> list[Message]:
        """Every message so far, in arrival order."""
        with self._lock:
            return list(self._messages)

    def with_field(self, key: str, value: str | None = None) -> list[Message]:
        """Messages carrying `key` (equal to `value` when given)."""
        return [m for m in self.messages if m.has(key, value)]

    def statuses(self) -> list[str]:
        """The STATUS= texts, in order."""
        return [m.fields["STATUS"] for m in self.messages if "STATUS" in m.fields]

    def wait_for(
        self,
        key: str,
        value: str | None = None,
        *,
        count: int = 1,
        after: float = 0.0,
        timeout: float = 10.0,
        context: Callable[[], str] = lambda: "",
    ) -> Message:
        """Wait until `count` messages with `key` (= `value`) arrived after `after`;
        return the count-th."""

        def found() -> Message | None:
            hits = [m for m in self.with_field(key, value) if m.time >= after]
            return hits[count - 1] if len(hits) >= count else None

        return wait_until(
            found,
            timeout,
            lambda: (
                f"{count} notify message(s) {key}={value or '*'} after {after:.3f}; "
                f"got {[m.raw for m in self.messages]}; {context()}"
            ),
        )

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2.0)
        self._sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
