"""What `pyinit --check` prints: the start order, then each service and how it runs.

Presentation only, apart from the model (model.py) it describes: every
line is derived from a checked `Config`, and nothing here is read back.
Never prints environment values (SPEC 9: the environment is never
logged), only their names.
"""

from __future__ import annotations

from pyinit.config.listen import describe_listen
from pyinit.config.model import (
    DEFAULT_GRACE,
    Config,
    ReadinessKind,
    ReloadMode,
    ReloadTarget,
    RestartPolicy,
    ServiceSpec,
    Strategy,
    format_duration,
    start_order,
)
from pyinit.core.signals import signal_name


def format_plan(config: Config) -> str:
    """What `pyinit --check` prints: the order, then each service and how it runs.

    Never prints environment values (SPEC 9: the environment is never
    logged), only their names. A service's grace of None is shown as
    pyinit's: put the effective grace in `config.settings` to show it.
    """
    specs = config.services
    if not specs:
        return "no services configured\n"
    workers = sum(s.workers for s in specs.values())
    lines = [f"{_plural(len(specs), 'service')}, {_plural(workers, 'worker')}"]
    lines.append("start order (stop runs it backwards):")
    for number, layer in enumerate(start_order(config), 1):
        lines.append(f"  {number}. {', '.join(layer)}")
    default_grace = config.settings.grace if config.settings.grace is not None else DEFAULT_GRACE
    for spec in specs.values():
        lines.append("")
        lines.extend(_describe(spec, default_grace))
    return "\n".join(lines) + "\n"


def _describe(spec: ServiceSpec, default_grace: float) -> list[str]:
    origin = f"  ({spec.origin})" if spec.origin else ""
    out = [f"{spec.name}: {spec.kind}, {_plural(spec.workers, 'worker')}{origin}"]
    out.append(f"  runs     {spec.runs()}")
    if spec.py_class is not None and (spec.args or spec.kwargs):
        out.append(f"  with     args={list(spec.args)!r} kwargs={dict(spec.kwargs)!r}")
    who = ", ".join(f"{k} {v}" for k, v in (("user", spec.user), ("group", spec.group)) if v)
    who = who or "pyinit's user"
    out.append(f"  as       {who}" + (f", in {spec.cwd}" if spec.cwd else ""))
    if spec.env:
        out.append(f"  env      {', '.join(sorted(spec.env))}")
    if spec.after:
        out.append(f"  after    {', '.join(spec.after)}")
    if spec.listen:
        out.append(f"  listen   {describe_listen(spec.listen)}")
    if spec.schedule is not None:
        out.append(f"  when     {spec.schedule.describe()}")
    ready = spec.ready.describe()
    if spec.ready.kind is not ReadinessKind.NONE:
        limit = format_duration(spec.ready_timeout) if spec.ready_timeout else "no limit"
        ready += f", within {limit}"
    if spec.watchdog is not None:
        ready += f", watchdog {format_duration(spec.watchdog)}"
    out.append(f"  ready    {ready}")
    out.append(f"  restart  {_restart_text(spec)}")
    if spec.strategy is Strategy.ROLLING:
        settle = format_duration(spec.settle)
        out.append(f"  deploy   rolling, {spec.max_surge} at a time, settle {settle}")
    grace = spec.grace if spec.grace is not None else default_grace
    grace_text = "forever" if grace == 0 else format_duration(grace)
    out.append(f"  stop     {signal_name(spec.stop_signal)}, SIGKILL after {grace_text}")
    reload = spec.reload.value
    if spec.reload is ReloadMode.SIGNAL:
        reload += f" {signal_name(spec.reload_signal)}"
        if spec.reload_to is ReloadTarget.GROUP:
            reload += " to its process group"
    out.append(f"  reload   {reload}; output {spec.output.value}")
    return out


def _restart_text(spec: ServiceSpec) -> str:
    text = spec.restart.value
    if spec.restart is not RestartPolicy.NEVER:
        b = spec.backoff
        text += (
            f" (backoff {format_duration(b.min_delay)}..{format_duration(b.max_delay)}"
            f" after runs under {format_duration(b.threshold)})"
        )
        if spec.max_restarts:
            text += f", failed after {spec.max_restarts} in {format_duration(spec.restart_window)}"
    if spec.critical:
        text += "; critical: its failure stops pyinit"
    return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
