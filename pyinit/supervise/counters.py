"""What pyinit counts about itself, for `GET /metrics` (control/metrics.py).

Everything else a scrape shows is read from the units and workers when it is
asked for; these few events leave no other trace, so the supervisor counts
them where it handles them: plain ints, no cost worth the name on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Counters:
    orphans_reaped: int = 0  # reaped pids that were no worker, probe or check of ours
    reloads_ok: int = 0  # SIGHUP or `ctl reload` applied
    reloads_failed: int = 0  # refused: invalid file, the old configuration kept
    signals_forwarded: dict[str, int] = field(default_factory=dict)  # "SIGUSR1" -> count

    def forwarded(self, name: str) -> None:
        self.signals_forwarded[name] = self.signals_forwarded.get(name, 0) + 1
