"""Starting children: `posix_spawn`, and the 126/127 errors users expect.

Why not `subprocess.Popen`: importing `subprocess` costs about 9 ms (it
pulls in `locale`, `re`, `enum`), close to what the whole Python start-up
costs, and pyinit never uses what it adds: it waits for children in one
place of its own (`reaper`). `posix_spawnp` runs no Python between fork and
exec, starts the new session (`setsid`) in C, and reports an exec failure as
an OSError in the parent, so "command not found" is an error here and not a
child that exits 127.

Every descriptor pyinit opens is close-on-exec (Python's default), and
`cli` marks inherited ones close-on-exec at start, so children get stdin,
stdout and stderr only.
"""

from __future__ import annotations

import errno
import os

from pyinit.signals import catchable_signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: Exit statuses for a command that could not be started, as shells and
#: tini report them: 127 "not found", 126 "found but cannot run".
EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126


class SpawnError(Exception):
    """COMMAND could not be started; `status` is what pyinit exits with."""

    def __init__(self, command: str, error: OSError) -> None:
        self.status = EXIT_NOT_FOUND if error.errno == errno.ENOENT else EXIT_CANNOT_RUN
        reason = error.strerror or str(error)
        super().__init__(f"{command}: {reason}")


def spawn(argv: list[str], *, new_session: bool, env: Mapping[str, str] | None = None) -> int:
    """Start `argv` (looked up on PATH) and return its pid.

    With `new_session` the child calls setsid(): it leads a new session and
    process group whose id is its pid, so the group can be signalled as one.
    Signal dispositions are reset to the default and the mask cleared, so a
    child never inherits anything of pyinit's signal set-up.
    """
    try:
        return os.posix_spawnp(
            argv[0],
            argv,
            os.environ if env is None else env,
            setsid=new_session,
            setsigmask=(),
            setsigdef=catchable_signals(),
        )
    except OSError as error:
        raise SpawnError(argv[0], error) from None
