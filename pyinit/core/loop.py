"""The one event loop: file descriptors and timers, nothing else.

Every return from `epoll.poll()` has a cause: a ready fd (the signal wakeup
pipe today; child output, the notify and control sockets later) or a due
timer. With no timer pending the poll blocks with no timeout at all, so an
idle pyinit makes zero wakeups (tini wakes once a second).

Callbacks run one at a time in this thread. An exception in one is logged and
the loop goes on: PID 1 must not die of one bad callback.

`selectors` would do the same job but costs ~2 ms of imports at start-up;
epoll is what it would pick on Linux anyway.
"""

from __future__ import annotations

import heapq
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyinit.core.logs import Log


MAX_TIMEOUT = 2_000_000.0  # seconds, below epoll's INT_MAX milliseconds


class Timer:
    """A pending `call_at`; `cancel()` makes it a no-op (lazy deletion)."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class Loop:
    """One thread, one epoll, one timer heap. Times are `time.monotonic()`."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._epoll = select.epoll()
        self._readers: dict[int, Callable[[], None]] = {}
        self._writers: dict[int, Callable[[], None]] = {}
        self._timers: list[Timer] = []
        self.stopped = False

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` when `fd` is writable (a non-blocking connect done,
        or room again on a full stdout: output relays wait this way, never in
        a blocking write)."""
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def _update(self, fd: int) -> None:
        """Tell epoll what we now want of `fd` (nothing: forget it)."""
        mask = (select.EPOLLIN if fd in self._readers else 0) | (
            select.EPOLLOUT if fd in self._writers else 0
        )
        try:
            if mask:
                try:
                    self._epoll.modify(fd, mask)
                except FileNotFoundError:
                    self._epoll.register(fd, mask)
            else:
                self._epoll.unregister(fd)
        except (FileNotFoundError, OSError):
            pass  # already closed (epoll forgets closed fds by itself)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def stop(self) -> None:
        self.stopped = True

    def close_after_fork(self) -> None:
        """In a forked child: drop the parent's epoll fd, callbacks and timers.

        The epoll instance is shared with the parent across fork(); the child
        must never wait on it or change what it watches.
        """
        self._epoll.close()
        self._readers.clear()
        self._writers.clear()
        self._timers.clear()
        self.stopped = True

    def run(self) -> None:
        """Dispatch events until `stop()` is called."""
        while not self.stopped:
            self._run_once()

    def _timeout(self) -> float:
        """Seconds until the next live timer; -1 (block forever) if none."""
        timers = self._timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
        if not timers:
            return -1
        # epoll takes at most INT_MAX milliseconds (~24.8 days); a timer
        # further away just costs one early wakeup and a fresh wait.
        return min(max(0.0, timers[0].when - time.monotonic()), MAX_TIMEOUT)

    def _run_once(self) -> None:
        # epoll rounds the timeout up to whole milliseconds, so a timer is
        # never woken for early and then spun on.
        for fd, events in self._epoll.poll(self._timeout()):
            # A hang-up or error is reported to both sides, so each can see it.
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                reader = self._readers.get(fd)
                if reader is not None:
                    self._guarded(reader)
            if events & (select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR):
                writer = self._writers.get(fd)
                if writer is not None:
                    self._guarded(writer)
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0].when <= now and not self.stopped:
            timer = heapq.heappop(timers)
            if not timer.cancelled:
                self._guarded(timer.callback)

    def _guarded(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self._log.exception("internal error in the event loop; carrying on")
