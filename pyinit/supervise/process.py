"""How one worker process of a service is started: its argv, environment,
credentials and output, and the `subprocess.Popen` call itself.

Popen, not posix_spawn (spawn.py), because `user`, `group` and the
supplementary groups need it; its child runs no Python before exec. The
supervisor never waits on the Popen object (see supervisor.py): the one
reaper collects every child.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from typing import TYPE_CHECKING

from pyinit.config.model import ReadinessKind, ServiceSpec
from pyinit.python.command import command_line

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyinit.core.model import Options


#: Variables of pyinit's own environment that children must not see; so are
#: all `PYINIT_*` ones (pyinit's configuration: a pyinit or a ServiceManager
#: started inside a service must not start the same services again).
PRIVATE_VARIABLES = (
    "NOTIFY_SOCKET",  # upstream's: a service may get pyinit's own instead
    "WATCHDOG_USEC",  # likewise: a service with `watchdog` gets its own
    "WATCHDOG_PID",
)


def child_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """pyinit's environment as its services see it (see PRIVATE_VARIABLES)."""
    return {
        k: v
        for k, v in environ.items()
        if k not in PRIVATE_VARIABLES and not k.startswith("PYINIT_")
    }


def worker_command(
    spec: ServiceSpec,
    worker_id: int,
    base_env: Mapping[str, str],
    notify_path: str | None,
    options: Options,
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of worker `worker_id` of `spec`."""
    env = dict(base_env)
    env.update(spec.env)
    env["PYINIT_WORKER_ID"] = str(worker_id)
    if notify_path is not None and wants_notify(spec):
        env["NOTIFY_SOCKET"] = notify_path
        if spec.watchdog:  # as systemd's WatchdogSec: sd_watchdog_enabled() reads it
            env["WATCHDOG_USEC"] = str(int(spec.watchdog * 1_000_000))
    if spec.py_class is None:
        assert spec.command is not None
        return list(spec.command), env
    argv, extra_env = command_line(spec.py_class, spec.name, worker_id, spec.args, spec.kwargs)
    env.update(extra_env)
    # The worker logs as pyinit does (pyinit's own PYINIT_* are not passed on).
    env["PYINIT_LOG_LEVEL"] = options.log_level
    env["PYINIT_LOG_FORMAT"] = options.log_format
    return argv, env


def start_process(
    spec: ServiceSpec, argv: list[str], env: dict[str, str], pipes: tuple[int, int] | None
) -> subprocess.Popen[bytes]:
    """Start it in a session of its own; `pipes` are its (stdout, stderr), if relayed.

    Raises OSError, ValueError, KeyError or SubprocessError when it cannot start.
    """
    user, group, extra_groups = credentials(spec)
    return subprocess.Popen(
        argv,
        env=env,
        cwd=spec.cwd,
        start_new_session=True,
        stdout=pipes[0] if pipes else None,
        stderr=pipes[1] if pipes else None,
        user=user,
        group=group,
        extra_groups=extra_groups,
    )


def credentials(spec: ServiceSpec) -> tuple[int | None, int | None, list[int] | None]:
    """(user, group, extra_groups) for Popen, from a service's `user`/`group`.

    The group defaults to the user's primary group and the supplementary
    groups to the user's own, as login(1) and systemd set them; a numeric
    user with no passwd entry keeps no supplementary groups.
    """
    if spec.user is None and spec.group is None:
        return None, None, None
    uid = gid = None
    extra: list[int] | None = None
    if spec.user is not None:
        try:
            entry = pwd.getpwuid(int(spec.user)) if spec.user.isdigit() else pwd.getpwnam(spec.user)
        except KeyError:
            entry = None  # numeric, no passwd entry (config checked names exist)
        uid = entry.pw_uid if entry else int(spec.user)
        gid = entry.pw_gid if entry else None
        if os.geteuid() == 0:
            extra = os.getgrouplist(entry.pw_name, entry.pw_gid) if entry else []
    if spec.group is not None:
        gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
    return uid, gid, extra


def wants_notify(spec: ServiceSpec) -> bool:
    """Does this service get pyinit's NOTIFY_SOCKET? (SPEC 4: notify services and
    every Python worker, which may call notify_ready().)"""
    return spec.ready.kind is ReadinessKind.NOTIFY or spec.py_class is not None
