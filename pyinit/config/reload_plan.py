"""What a reload must do: the difference between the running Config and the new one.

Pure: two `Config`s in, a `ReloadPlan` out, no I/O. The supervisor applies it
(SPEC section 5): start `added`, stop `removed` gracefully, restart `changed`,
scale `scaled`, and give each of `unchanged` its `reload` mode (signal,
`Service.reload()`, restart or nothing).

Every name of either config lands in exactly one category. Decisions:

- A service is compared as a whole `ServiceSpec`. Equality ignores `origin`,
  so a service moved between PYINIT_SERVICES and the file (or to another line
  of the file) with the same definition is `unchanged`.
- A difference in `workers` alone is `scaled`: the workers that stay keep
  running (and their ids); only the extra ids start or the highest ids stop.
  A change of `workers` together with anything else is `changed`: the
  service restarts with the new count.
- A change of `after` alone counts as `changed`. `after` is part of the
  definition the supervisor runs against (it orders starts and stops, and a
  service waits for its new dependencies before it is started); restarting
  the service re-enters it through that order instead of leaving a running
  process whose recorded dependencies never held. Dependents of a changed
  service are not restarted: each is judged by its own spec only.
- `settings_changed` says the `[pyinit]` table differs; the plan does not say
  which key (the supervisor decides what it can apply live).
- An `output` written in neither config is kept (`keep_default_outputs`):
  the default depends on how many services there are (config/load.py), and
  adding one must not restart the others only to prefix their lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pyinit.config.model import Config, start_order


@dataclass(frozen=True)
class ReloadPlan:
    """What to do to go from the old config to the new one; tuples are in execution order."""

    added: tuple[str, ...] = ()  # in the new config's start order
    removed: tuple[str, ...] = ()  # reverse of the old config's start order: the order to stop them
    changed: tuple[str, ...] = ()  # restart: stop with the old spec, start with the new (new order)
    scaled: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # name -> (old workers, new workers); only `workers` differs
    unchanged: tuple[str, ...] = ()  # equal specs: each gets its `reload` mode (new order)
    settings_changed: bool = False

    @property
    def is_noop(self) -> bool:
        """True when nothing but the unchanged services' reload modes is left to do."""
        return not (
            self.added or self.removed or self.changed or self.scaled or self.settings_changed
        )


def plan(old: Config, new: Config) -> ReloadPlan:
    """Compare two checked configs (both have a start order) and say what a reload does."""
    new = keep_default_outputs(old, new)
    new_order = _flat_order(new)
    old_order = _flat_order(old)
    added = tuple(name for name in new_order if name not in old.services)
    removed = tuple(name for name in reversed(old_order) if name not in new.services)
    changed: list[str] = []
    scaled: dict[str, tuple[int, int]] = {}
    unchanged: list[str] = []
    for name in new_order:
        before = old.services.get(name)
        if before is None:
            continue
        after = new.services[name]
        if before == after:
            unchanged.append(name)
        elif dataclasses.replace(before, workers=after.workers) == after:
            scaled[name] = (before.workers, after.workers)
        else:
            changed.append(name)
    return ReloadPlan(
        added=added,
        removed=removed,
        changed=tuple(changed),
        scaled=MappingProxyType(scaled),
        unchanged=tuple(unchanged),
        settings_changed=old.settings != new.settings,
    )


def keep_default_outputs(old: Config, new: Config) -> Config:
    """At reload, a service whose `output` is written in neither configuration
    keeps the output it runs with: adding a second service must not restart
    the first only to prefix its lines (SPEC 5: unchanged services are not
    restarted). Its next start after pyinit's own restart applies the rule."""
    kept = dict(new.services)
    for name, spec in new.services.items():
        before = old.services.get(name)
        if before is not None and before.output_default and spec.output_default:
            kept[name] = dataclasses.replace(spec, output=before.output)
    return dataclasses.replace(new, services=MappingProxyType(kept))


def describe(reload_plan: ReloadPlan) -> str:
    """One log line: 'reload: 1 added (x), 1 removed (y), 1 scaled (w 2->4), 3 unchanged'.

    Empty categories are left out, except `unchanged` when nothing else is
    there to say ('reload: 3 unchanged', 'reload: 0 unchanged').
    """
    parts = []
    for label, names in (
        ("added", reload_plan.added),
        ("removed", reload_plan.removed),
        ("changed", reload_plan.changed),
    ):
        if names:
            parts.append(f"{len(names)} {label} ({', '.join(names)})")
    if reload_plan.scaled:
        counts = ", ".join(f"{n} {a}->{b}" for n, (a, b) in reload_plan.scaled.items())
        parts.append(f"{len(reload_plan.scaled)} scaled ({counts})")
    if reload_plan.unchanged or not parts:
        parts.append(f"{len(reload_plan.unchanged)} unchanged")
    if reload_plan.settings_changed:
        parts.append("[pyinit] settings changed")
    return "reload: " + ", ".join(parts)


def _flat_order(config: Config) -> list[str]:
    return [name for layer in start_order(config) for name in layer]
