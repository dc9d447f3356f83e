"""`pyinit ctl`: the client of the control socket (the server is server.py).

One request per run, in the wire format of protocol.py; the result is
printed for a person (the status table) or, with `status --json`, as JSON.
Usage errors are found before connecting, so they never depend on whether
pyinit runs.

Exit statuses: 0 done (`ready`: ready; `status`: every worker ok); 1 pyinit
not reachable, not ready, or it refused the request (no such service, ...);
2 usage error; 3 `status` found a worker failed, backing off, stopped or not
ready (3 as in LSB's and systemctl's `status`: "not running", distinct from
"cannot ask").

Whom the client trusts (issue 7.18): before it sends a byte, the socket's
directory must belong to us or root and be closed to writes by others, and
the listening process (SO_PEERCRED) must run as us or root, just as the
server admits only those peers. Anything else is refused in one line: a
socket another user planted would otherwise read our requests and could
answer `ready` for a pyinit that is not.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
import time
from typing import TYPE_CHECKING

from pyinit.control.protocol import (
    ALL_SERVICES,
    RUN_DIR,
    TMP_DIR,
    USAGE,
    VerbError,
    abstract_address,
    check_arguments,
    socket_candidates,
    synopsis,
    unix_address,
)
from pyinit.core.logs import fatal
from pyinit.core.signals import parse_signal

if TYPE_CHECKING:
    from collections.abc import Mapping

CLIENT_TIMEOUT = 5.0  # seconds `pyinit ctl` waits for connect + reply
NOT_OK = 3  # `ctl status`: a worker is failed, backing off, stopped or not ready (LSB's 3)


class ClientError(Exception):
    """`pyinit ctl` could not get an answer, or pyinit refused: exit status 1."""


class NotReachable(ClientError):
    """Nobody listens at that address (the next place to look may have pyinit)."""


class NotPermitted(ClientError):
    """A socket is there but we may not use it (a root pyinit's, seen by a user)."""


def find_socket(environ: Mapping[str, str], run_dir: str = RUN_DIR, tmp_dir: str = TMP_DIR) -> str:
    """Where the client looks: $PYINIT_CTL_SOCKET, else the first candidate
    that exists (or hides in a directory we may not enter), else the abstract
    address a pyinit without a writable file system listens on (protocol.py)."""
    given = environ.get("PYINIT_CTL_SOCKET", "").strip()
    if given:
        return given
    blocked = ""
    for path in socket_candidates(environ, run_dir, tmp_dir):
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return path
        except PermissionError:
            # A directory we may not enter (/run/pyinit of a root pyinit). A
            # pyinit of ours may still be at a later candidate (a non-root
            # pyinit cannot use /run): only if none is, connect() says why
            # this one is not for us.
            blocked = blocked or path
        except OSError:
            continue
    return blocked or abstract_address()


def _check_directory(path: str) -> None:
    """The socket's directory is ours or root's, and nobody else may write to it."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        info = os.stat(directory)
    except OSError:
        return  # connect() says what is wrong with the path
    me = os.geteuid()
    if info.st_uid not in (0, me):
        raise ClientError(
            f"refusing {path}: its directory {directory} belongs to uid {info.st_uid},"
            f" not to you (uid {me}) or root"
        )
    if info.st_mode & 0o022:
        raise ClientError(
            f"refusing {path}: its directory {directory} is writable by other users"
            f" (mode {stat.S_IMODE(info.st_mode):04o})"
        )


def _check_peer(sock: socket.socket, path: str) -> None:
    """The listening process runs as us or root (SO_PEERCRED: its credentials at listen())."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    me = os.geteuid()
    if uid not in (0, me):
        raise ClientError(
            f"refusing {path}: it is served by uid {uid} (pid {pid}), not by you (uid {me}) or root"
        )


def _who(uid: int) -> str:
    """`uid 0 (root)`, or `uid 1234` for a uid without a name."""
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def permission_message(path: str) -> str:
    """Why connect() said EACCES, in one line: the socket is there, but not for us.

    The directory (no search permission for us) is what usually stops us;
    else the socket file (no write permission). Either way the fix is to run
    ctl as the user pyinit runs as, or as root, and the line says who that is.
    """
    directory = os.path.dirname(os.path.abspath(path))
    blocker, what = directory, "its directory"
    if os.access(directory, os.X_OK):
        blocker, what = path, "the socket"
    try:
        info = os.stat(blocker)
        where = (
            f"{what} {blocker} has mode {stat.S_IMODE(info.st_mode):04o}"
            f" and belongs to {_who(info.st_uid)}"
        )
    except OSError as error:
        where = f"{what} {blocker} cannot be examined ({error.strerror})"
        info = None
    if info is None:
        owner = "its owner or root"
    else:
        owner = "root" if info.st_uid == 0 else f"{_who(info.st_uid)} or root"
    return (
        f"cannot use the control socket {path}: permission denied: {where}, and you are"
        f" {_who(os.geteuid())}; run pyinit ctl as {owner}"
    )


def request(path: str, verb: str, args: list[str], timeout: float = CLIENT_TIMEOUT) -> object:
    """Send one request to the pyinit at `path`; return its result or raise ClientError."""
    deadline = time.monotonic() + timeout
    if not path.startswith("@"):
        _check_directory(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(unix_address(path))
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise NotReachable(
                f"cannot reach pyinit at {path}: {error.strerror} (is pyinit running?)"
            ) from None
        except PermissionError:
            raise NotPermitted(permission_message(path)) from None
        _check_peer(sock, path)
        try:
            sock.sendall(json.dumps({"verb": verb, "args": args}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have refused us and hung up first: its reply is still to be read
        data = bytearray()
        while b"\n" not in data:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise ClientError(f"pyinit at {path} did not answer within {timeout:g} s") from None
    except OSError as error:
        raise ClientError(f"cannot reach pyinit at {path}: {error.strerror or error}") from None
    finally:
        sock.close()
    if not data:
        raise ClientError(f"pyinit at {path} closed the connection without answering")
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
        ok = reply["ok"]
    except (ValueError, TypeError, KeyError):
        raise ClientError(f"pyinit at {path} sent a malformed reply") from None
    if not ok:
        raise ClientError(str(reply.get("error")))
    return reply.get("result")


def _request_somewhere(path: str, environ: Mapping[str, str], verb: str, args: list[str]) -> object:
    """`request` at the given path, else where find_socket looks; a socket
    file left by a pyinit that died must not hide one listening on the
    abstract address."""
    if path or environ.get("PYINIT_CTL_SOCKET", "").strip():
        return request(path or find_socket(environ), verb, args)
    found = find_socket(environ)
    try:
        return request(found, verb, args)
    except NotPermitted:
        try:  # a pyinit of ours without a writable file system, beside a root one's socket
            return request(abstract_address(), verb, args)
        except NotReachable:
            pass
        raise
    except NotReachable:
        if found == abstract_address():
            files = ", ".join(socket_candidates(environ))
            raise NotReachable(
                f"cannot reach pyinit: no socket at {files}, and none listens on {found}"
                " (is pyinit running?)"
            ) from None
        try:
            return request(abstract_address(), verb, args)
        except NotReachable:
            pass
        raise


def _usage_text() -> str:
    import textwrap  # --help only: `ctl ready`, a probe run every few seconds, never pays it

    lines = ["usage: pyinit ctl [--ctl-socket PATH] VERB [ARG...]", "", "verbs:"]
    for usage, help_text in USAGE.values():
        lines.append(f"  {usage}")
        lines += textwrap.wrap(help_text, 80, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += [
        "",
        "The socket: --ctl-socket, else $PYINIT_CTL_SOCKET, else the first that exists of",
        "/run/pyinit/ctl.sock, $XDG_RUNTIME_DIR/pyinit/ctl.sock, /tmp/pyinit-UID/ctl.sock.",
        "Exit status: 0 done (ready; status: all ok), 1 not running, not ready or refused",
        "(an unknown NAME too), 2 usage error, 3 (status) a worker failed, backing off,",
        "stopped or not ready.",
    ]
    return "\n".join(lines) + "\n"


def main_ctl(argv: list[str], environ: Mapping[str, str]) -> int:
    """`pyinit ctl [--ctl-socket PATH] VERB [ARG...]`; `argv` is what follows `ctl`."""
    path = ""
    words = list(argv)
    while words and words[0].startswith("-"):
        word = words.pop(0)
        if word in ("-h", "--help"):
            sys.stdout.write(_usage_text())
            return 0
        if word == "--ctl-socket" and words:
            path = words.pop(0)
        elif word.startswith("--ctl-socket="):
            path = word.partition("=")[2]
        else:
            fatal(f"ctl: unknown option {word!r} (see pyinit ctl --help)")
            return 2
    if not words:
        fatal("ctl: a verb is needed: " + ", ".join(USAGE) + " (see pyinit ctl --help)")
        return 2
    verb, args = words[0], words[1:]
    if verb == "help":
        sys.stdout.write(_usage_text())
        return 0
    if verb not in USAGE:
        fatal(f"ctl: unknown verb {verb!r}; known: {', '.join(USAGE)}")
        return 2
    as_json = verb == "status" and "--json" in args
    if as_json:
        args = [arg for arg in args if arg != "--json"]
    wait = verb in ("reload", "restart") and "--no-wait" not in args
    args = [arg for arg in args if arg != "--no-wait"] if verb in ("reload", "restart") else args
    if verb == "restart" and args == ["--all"]:
        args = [ALL_SERVICES]
    try:
        if verb == "status" and any(arg.startswith("-") for arg in args):
            raise VerbError(f"usage: pyinit ctl {synopsis('status')}")
        check_arguments(verb, args)
        if verb == "signal":
            args = [args[0], str(parse_signal(args[1]))]
    except (VerbError, ValueError) as error:
        fatal(f"ctl: {error}")
        return 2
    try:
        result = _request_somewhere(path, environ, verb, args)
    except ClientError as error:
        fatal(str(error))
        return 1
    if verb == "status":
        rows = result if isinstance(result, list) else []
        sys.stdout.write(json.dumps(rows, indent=2) + "\n" if as_json else format_status(rows))
        # `ok` is the server's verdict: it knows a oneshot from a periodic job.
        return NOT_OK if any(row.get("ok") is False for row in rows) else 0
    if verb == "ready":
        ready = isinstance(result, dict) and result.get("ready") is True
        detail = result.get("detail", "") if isinstance(result, dict) else ""
        sys.stdout.write("ready\n" if ready else f"not ready: {detail or 'unknown'}\n")
        return 0 if ready else 1
    sys.stdout.write(f"{result}\n")
    return _follow(verb, result, path, environ) if wait else 0


def _follow(verb: str, reply: object, path: str, environ: Mapping[str, str]) -> int:
    """A rolling replacement was started: wait for its outcome (control/follow.py)."""
    from pyinit.control.follow import follow, rollout_number
    from pyinit.core.logs import fatal

    number = rollout_number(reply)
    if number is None:
        return 0
    sys.stdout.flush()
    try:
        ok, lines = follow(number, verb, lambda: _request_somewhere(path, environ, "status", []))
    except ClientError as error:
        fatal(str(error))
        return 1
    for line in lines:
        if ok:
            sys.stdout.write(line + "\n")
        else:
            fatal(line)
    return 0 if ok else 1


def format_status(rows: list[dict[str, object]]) -> str:
    """The `pyinit ctl status` table."""
    header = ("SERVICE", "WORKER", "PID", "STATE", "READY", "UPTIME", "RESTARTS", "LAST EXIT")
    table = [(*header, "RSS", "CPU")]
    for row in rows:
        pid, cpu = row.get("pid"), row.get("cpu")
        table.append(
            (
                str(row.get("service", "?")),
                str(row.get("worker", "?")),
                str(pid) if pid else "-",
                str(row.get("state", "?")),
                "yes" if row.get("ready") else "no",
                _duration(row.get("uptime")),
                str(row.get("restarts", 0)),
                str(row.get("last_exit") or "-"),
                _size(row.get("rss")),
                f"{cpu:.2f}s" if isinstance(cpu, int | float) else "-",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in table
    )


def _duration(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    s = int(value)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _size(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return "-"
