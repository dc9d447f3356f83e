"""The `pyinit ctl` protocol: what the server (server.py) and the client (client.py) share.

Wire format (after gunicorn's ctl/protocol.py), over a SOCK_STREAM Unix
socket, one request per connection:

    client -> pyinit   one line of UTF-8 JSON ended by "\\n" (or by the client
                       shutting down its side): {"verb": "restart", "args": ["web"]}
                       `args` is a list of strings and may be left out.
    pyinit -> client   one line of JSON, then pyinit closes the connection:
                       {"ok": true, "result": ...}
                       {"ok": false, "error": "no such service: 'webb'"}

    verb     args          result
    status   [NAME...]     [{service, worker, pid, state, ready, ok, uptime, restarts,
                             starts, last_exit, last_exit_code, last_exit_time,
                             next_run, status, rss, cpu}, ...]: one row per worker
                             of the named services (none named: of all); pid 0
                             when it has no process; uptime in seconds or null;
                             last_exit "exit status 3"/"killed by SIGKILL" or null,
                             last_exit_code its shell code (128+N for signal N);
                             last_exit_time and next_run (periodic jobs: the next
                             run) in Unix seconds or null; ok false when the worker
                             is failed, backing off, stopped or not (yet) ready (a
                             oneshot that exited 0 and a periodic job between runs
                             are ok); status the last STATUS= it sent; rss in bytes
                             and cpu in CPU seconds (user + system) of the worker's
                             own process, or null. An unknown NAME is an error
                             reply naming it.
    ready    -             {"ready": bool, "detail": "web[1], db[0]"}: who is not
                           ready (or why not: "shutting down")
    start, stop, restart   NAME        a message (str); `restart *` restarts every service.
                           A rolling replacement's message ends "(rollout N)"; its
                           outcome is the `rollout` field of the status rows:
                           {number, state (waiting|rolling|done|failed), replaced,
                           total, detail}, or null; `role` is "new" for a rollout's
                           worker not yet in its slot, "old" for one it replaced
    signal   NAME SIG      a message; SIG is a name (TERM, SIGHUP) or a number
    reload   -             a message; a refused reload (invalid file, the old
                           configuration still running) is an error reply
                           {"ok": false, "error": "reload failed: FILE:LINE: ..."}

A request over 64 KiB, one that is not such JSON, or one that does not
arrive within 5 s gets an error reply or a closed connection; it never costs
pyinit more than that connection. Only peers whose uid (SO_PEERCRED) is
pyinit's own or root are answered; the client, in turn, talks only to a
server whose uid is its own or root, in a directory only they can write to.

Where the socket lives: `--ctl-socket`/$PYINIT_CTL_SOCKET, else the first
of /run/pyinit/ctl.sock, $XDG_RUNTIME_DIR/pyinit/ctl.sock and
/tmp/pyinit-UID/ctl.sock whose directory pyinit can use. With none (a
read-only root file system: a Kubernetes readOnlyRootFilesystem pod) the
server listens on the abstract address `@pyinit-ctl-UID` instead, and the
client that finds no socket file tries that last. Abstract sockets live per
network namespace and carry no permissions: the peer-uid checks on both
sides are what guards them. `@NAME` means the abstract NAME everywhere.

Why a module of its own: `pyinit ctl ready` is a Kubernetes exec probe that
runs every few seconds, so the client imports only this (pure: no sockets,
nothing beyond `os`) and not the server. Both sides check a request's
arguments against the same synopses, so the client can report a usage error
without connecting, and the server refuses the same requests.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

REQUEST_LIMIT = 64 * 1024  # bytes of one ctl request
ALL_SERVICES = "*"  # `restart --all` on the wire: no service can be named "*"
RUN_DIR = "/run"
TMP_DIR = "/tmp"
SOCKET_NAME = "ctl.sock"


class VerbError(Exception):
    """A request pyinit refuses: the message goes back as the reply's `error`."""


# -- verbs -----------------------------------------------------------------------------
# verb -> (synopsis, help), in the order `pyinit ctl --help` lists them. The
# synopsis is also the argument check (check_arguments). The server's
# handler for each verb is control.VERBS[verb].

USAGE: dict[str, tuple[str, str]] = {
    "status": (
        "status [--json] [NAME...]",
        "Each worker (of NAMEs): pid, state, ready, uptime, restarts, last exit, RSS, CPU."
        " Exit 3 if one is failed, backing off, stopped or not ready.",
    ),
    "ready": (
        "ready",
        "Print `ready` (exit 0) or `not ready: WHO` (exit 1): a Kubernetes exec probe.",
    ),
    "start": ("start NAME", "Start the service's workers that are not running."),
    "stop": (
        "stop NAME",
        "Stop the service gracefully (its stop signal, SIGKILL after its grace).",
    ),
    "restart": (
        "restart NAME|--all [--no-wait]",
        "Replace its workers (rolling: new ones ready first), then wait for the outcome.",
    ),
    "signal": (
        "signal NAME SIG",
        "Send SIG (TERM, SIGHUP, 10, ...) to each worker's process group.",
    ),
    "reload": (
        "reload [--no-wait]",
        "Re-read the configuration and apply it, as SIGHUP does; wait for rolling services.",
    ),
}


def synopsis(verb: str) -> str:
    return USAGE[verb][0]


def check_arguments(verb: str, args: list[str]) -> list[str]:
    """`args` if their number matches the synopsis, else VerbError.

    Its words after the verb, less the [optional] ones, must be there; a
    `[NAME...]` word takes any number more. `[--flags]` are the client's own
    and never sent.
    """
    words = synopsis(verb).split()[1:]
    wanted = [word for word in words if not word.startswith("[")]
    more = any(word.rstrip("]").endswith("...") for word in words)
    if len(args) < len(wanted) or (len(args) > len(wanted) and not more):
        raise VerbError(f"usage: pyinit ctl {synopsis(verb)}")
    return args


# -- where the socket lives ----------------------------------------------------------


def abstract_address() -> str:
    """The abstract-namespace fallback, for the server and the client (see above)."""
    return f"@pyinit-ctl-{os.geteuid()}"


def unix_address(path: str) -> str:
    """What bind()/connect() take: `@name` becomes the abstract "\\0name"."""
    return "\0" + path[1:] if path.startswith("@") else path


def socket_candidates(
    environ: Mapping[str, str], run_dir: str = RUN_DIR, tmp_dir: str = TMP_DIR
) -> list[str]:
    """The default socket paths, in SPEC order: /run, $XDG_RUNTIME_DIR, /tmp/pyinit-UID."""
    paths = [os.path.join(run_dir, "pyinit", SOCKET_NAME)]
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        paths.append(os.path.join(xdg, "pyinit", SOCKET_NAME))
    paths.append(os.path.join(tmp_dir, f"pyinit-{os.geteuid()}", SOCKET_NAME))
    return paths


def default_socket_path(
    environ: Mapping[str, str], run_dir: str = RUN_DIR, tmp_dir: str = TMP_DIR
) -> str:
    """Where the server puts its socket: the first candidate whose directory we may write.

    /run counts as writable when /run itself is, or when an image prepared a
    /run/pyinit for a non-root pyinit.
    """
    first, *others = socket_candidates(environ, run_dir, tmp_dir)
    if os.access(run_dir, os.W_OK) or os.access(os.path.dirname(first), os.W_OK):
        return first
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if len(others) == 2 and os.access(xdg, os.W_OK):
        return others[0]
    return others[-1]
