"""`pyinit ctl reload` and `ctl restart` wait for the rolling replacement they started.

pyinit answers a reload at once (the server never blocks its loop), with
a reply that names the rollout it began: `...; replacing web (rollout 7)`.
Its outcome comes later, when the new workers are ready or one of them
failed, so the client follows it through `status`, whose rows carry each
service's latest rollout (number, state, detail), until every service of
that number is done or failed. Failed means exit status 1, as a refused
reload already does: the old workers kept serving, and a script or a
Kubernetes hook must hear that the deploy did not happen.

A newer reload may take a service over before this one finished; that
service then no longer reports this number and counts as superseded.
Polling is fine here: this is the client, not PID 1.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

ROLLOUT = re.compile(r"\(rollout (\d+)\)")
POLL_SECONDS = 0.1
WAIT_LIMIT = 300.0  # seconds; past this the client stops waiting (pyinit goes on)


def rollout_number(reply: object) -> int | None:
    """The rollout a reload/restart reply announced, if any."""
    found = ROLLOUT.search(reply) if isinstance(reply, str) else None
    return int(found.group(1)) if found else None


def follow(
    number: int,
    verb: str,
    status: Callable[[], object],
    limit: float = WAIT_LIMIT,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, list[str]]:
    """Wait for rollout `number` that `verb` began: (every service done, one line each)."""
    deadline = time.monotonic() + limit
    while True:
        states = _states(status(), number)
        pending = [name for name, (state, _) in states.items() if state in ("waiting", "rolling")]
        if not states:  # every service it touched was taken over by a newer rollout
            return True, [f"rollout {number} was superseded by a newer reload or restart"]
        if not pending:
            failed = [name for name, (state, _) in states.items() if state == "failed"]
            lines = [
                f"{verb} failed: {name}: {detail}" if state == "failed" else f"{name}: {detail}"
                for name, (state, detail) in states.items()
            ]
            return not failed, lines
        if time.monotonic() >= deadline:
            return False, [
                f"still replacing {', '.join(pending)} after {limit:g} s"
                " (pyinit goes on; see pyinit ctl status)"
            ]
        sleep(POLL_SECONDS)


def _states(rows: object, number: int) -> dict[str, tuple[str, str]]:
    """{service: (state, detail)} of the services whose latest rollout is `number`."""
    found: dict[str, tuple[str, str]] = {}
    for row in rows if isinstance(rows, list) else []:
        rollout = row.get("rollout") if isinstance(row, dict) else None
        if isinstance(rollout, dict) and rollout.get("number") == number:
            found[str(row.get("service"))] = (str(rollout.get("state")), str(rollout.get("detail")))
    return found
