"""Kernel timestamps of the forks, execs and exits below a process (proc connector).

The proc connector (a netlink socket, root, initial network namespace)
multicasts every fork, exec and exit on the machine, each stamped with
ktime_get_ns(), the clock of time.monotonic_ns(). `ExecClock` keeps the
events of the processes below the pids it is told to watch: a fork whose
parent is watched makes the child watched too, so a whole tree is followed
(unshare -> the init -> its command) without racing its forks.

Used by bench_core.py's launch stage: from the init's exec to its
command's exec, as PID 1, measured by the kernel and not by the child.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_EXIT = 0x80000000
SO_RCVBUFFORCE = 33
NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
EVENT_HEADER = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
FORK_DATA = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
PID_DATA = struct.Struct("=ii")  # pid, tgid (exec and exit start with these)


class ExecClock:
    """fork/exec/exit times (ns) of every process below the watched pids."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.watched: set[int] = set()
        self.parent: dict[int, int] = {}  # child pid -> parent pid, for watched forks
        self.children: dict[int, list[int]] = {}  # parent -> children, in fork order
        self.execs: dict[int, list[int]] = {}  # pid -> its exec times, in order
        self.exits: dict[int, int] = {}
        self.overflowed = False

    @classmethod
    def open(cls) -> ExecClock | None:
        """A listening clock, or None where the connector is not available."""
        sock = open_connector()
        return None if sock is None else cls(sock)

    def watch(self, pid: int) -> None:
        self.watched.add(pid)

    def forget(self) -> None:
        """Drop what was recorded (between two measurements)."""
        self.drain()
        self.watched.clear()
        self.parent.clear()
        self.children.clear()
        self.execs.clear()
        self.exits.clear()

    def drain(self) -> None:
        """Read every queued event (never blocks)."""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno == errno.ENOBUFS:  # the kernel dropped events
                    self.overflowed = True
                    continue
                raise
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length = NLMSG_HEADER.unpack_from(data, offset)[0]
                if length < NLMSG_HEADER.size:
                    break
                self._parse(data, offset + NLMSG_HEADER.size + CN_MSG.size)
                offset += (length + 3) & ~3

    def _parse(self, data: bytes, at: int) -> None:
        if at + EVENT_HEADER.size + PID_DATA.size > len(data):
            return
        what, _, stamp = EVENT_HEADER.unpack_from(data, at)
        at += EVENT_HEADER.size
        if what == PROC_EVENT_FORK and at + FORK_DATA.size <= len(data):
            _, parent, child, child_tgid = FORK_DATA.unpack_from(data, at)
            if parent in self.watched and child == child_tgid:
                self.watched.add(child)
                self.parent[child] = parent
                self.children.setdefault(parent, []).append(child)
                self.execs.setdefault(child, [])
        elif what in (PROC_EVENT_EXEC, PROC_EVENT_EXIT):
            pid, tgid = PID_DATA.unpack_from(data, at)
            if pid == tgid and pid in self.watched:
                if what == PROC_EVENT_EXEC:
                    self.execs.setdefault(pid, []).append(stamp)
                else:
                    self.exits[pid] = stamp

    def first_child(self, pid: int) -> int | None:
        kids = self.children.get(pid)
        return kids[0] if kids else None

    def close(self) -> None:
        self.sock.close()


def self_test(clock: ExecClock) -> bool:
    """Does the connector report our own fork and exec here?"""
    clock.watch(os.getpid())
    pid = os.posix_spawn("/bin/true", ["true"], dict(os.environ))
    os.waitpid(pid, 0)
    clock.drain()
    ok = bool(clock.execs.get(pid))
    clock.forget()
    return ok


def open_connector() -> socket.socket | None:
    """A non-blocking socket subscribed to the kernel's proc connector (root), or None."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except (OSError, AttributeError):
        return None
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        sock.bind((0, CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        body = CN_MSG.pack(CN_IDX_PROC, 1, 0, 0, len(op), 0) + op
        sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), 3, 0, 0, 0) + body)
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock
