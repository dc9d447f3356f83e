"""Text -> services model: the PYINIT_SERVICES compact form and the TOML file.

The public entry points (`load`, `parse_config`, `parse_services`,
`load_toml`, `ConfigError`) and the checks across services live here; the
rest is split by job:

    compact.py    the PYINIT_SERVICES grammar (entries, options, quoting)
    toml_file.py  the TOML file: reading, tomllib errors, key -> line
    build.py      one builder for both forms: a TOML-shaped table -> ServiceSpec
    convert.py    the value converters the builder uses (one value -> model value)
    errors.py     ConfigError, and where a service was written (its source)
    model.py      the frozen model itself; reload_plan.py diffs two of them

Both forms end in the same place. The compact form is lexed into the same
shape tomllib gives for a `[services.NAME]` table (strings, ints, bools,
lists), and one builder, `build_service`, turns such a table into a
`ServiceSpec`, so a rule is written once and holds in both forms.

Every error is a `ConfigError` whose one-line message names its source:

    PYINIT_SERVICES entry 2 (web): unknown option 'worker' (did you mean 'workers'?)
    /etc/pyinit.toml:14: services.web.grace: expected seconds (e.g. 10, 2.5, 500ms, 1m), ...

Nothing is skipped silently, apart from empty entries (`a: x;; b: y`, a
trailing `;`, blank lines), which are not counted when entries are numbered.

Decisions where SPEC.md is silent (README/--check users see them as errors):
- oneshot and periodic services run one process: `workers` must be 0 or 1.
- `oneshot` and `every`/`cron` exclude each other; `restart = "always"` is
  refused for both (a run would never finish); their default is `never`.
- `after` may name services and oneshots, not periodic jobs (a periodic job
  is never "ready" in a sense another service could wait for).
- `user`/`group` are names that must exist (pwd/grp), or numeric ids that
  need not (as `docker run --user 1001`).
- cron takes exactly the 5 classic fields (see services_model.check_cron).
- `args`/`kwargs` only with `class`, and only JSON-shaped values (no TOML
  dates): they travel to a fresh interpreter.
- `ready = "tcp:PORT"` probes 127.0.0.1; `tcp:HOST:PORT` names the host.
- `[pyinit]` holds grace, log_format, log_level, ctl_socket, health_port;
  signal rewriting and exit remapping stay with the flags/variables, since
  they are about COMMAND.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pyinit.config.build import SERVICE_KEYS, SETTINGS_KEYS
from pyinit.config.compact import parse_compact
from pyinit.config.convert import BACKOFF_KEYS, READY_TABLE_KEYS
from pyinit.config.errors import ConfigError, Parsed, did_you_mean
from pyinit.config.model import Config, ServiceSpec, Settings, find_cycle
from pyinit.config.toml_file import parse_toml, read_file
from pyinit.core.model import Options

__all__ = [
    "BACKOFF_KEYS",
    "READY_TABLE_KEYS",
    "SERVICE_KEYS",
    "SETTINGS_KEYS",
    "VARIABLE",
    "ConfigError",
    "load",
    "load_toml",
    "merge_settings",
    "parse_config",
    "parse_services",
]

VARIABLE = "PYINIT_SERVICES"


# -- public entry points --------------------------------------------------------


def load(
    environ: Mapping[str, str], config_path: str | None = None, *, allow_empty: bool = False
) -> Config:
    """PYINIT_SERVICES and the TOML file (`config_path`, else PYINIT_CONFIG), merged and checked.

    No service at all is a ConfigError unless `allow_empty` (a main COMMAND
    runs beside them): SPEC 1 makes "neither a COMMAND nor any service" a
    usage error, and at reload an emptied file would otherwise stop every
    service (issue 7.16).
    """
    path = config_path or environ.get("PYINIT_CONFIG") or None
    toml_text = read_file(path) if path else None
    config = parse_config(environ.get(VARIABLE, ""), toml_text, path)
    if not config.services and not allow_empty:
        raise ConfigError(_nothing_configured(environ.get(VARIABLE, ""), path))
    return config


def _nothing_configured(services_text: str, path: str | None) -> str:
    variable = f"{VARIABLE} has no entry" if services_text.strip() else f"{VARIABLE} is empty"
    file = f"{path} defines none and " if path else ""
    return f"no services configured: {file}{variable} (and no COMMAND given)"


def parse_config(services_text: str, toml_text: str | None, path: str | None) -> Config:
    """Pure form of `load`: both texts in, one checked Config out."""
    parsed = parse_compact(services_text, VARIABLE)
    settings = Settings()
    if toml_text is not None:
        settings, from_file = parse_toml(toml_text, path or "<config>")
        parsed = _merge(parsed, from_file)
    _check_dependencies(parsed)
    services = MappingProxyType({p.spec.name: p.spec for p in parsed})
    return Config(settings=settings, services=services, path=path)


def parse_services(text: str, origin: str = VARIABLE) -> dict[str, ServiceSpec]:
    """The compact form alone, with its `after` names checked among themselves."""
    parsed = parse_compact(text, origin)
    _check_dependencies(parsed)
    return {p.spec.name: p.spec for p in parsed}


def load_toml(text: str, path: str) -> tuple[Settings, dict[str, ServiceSpec]]:
    """The TOML form alone, with its `after` names checked among themselves."""
    settings, parsed = parse_toml(text, path)
    _check_dependencies(parsed)
    return settings, {p.spec.name: p.spec for p in parsed}


def merge_settings(options: Options, settings: Settings) -> None:
    """Fill `options` from the file's [pyinit] table where no flag or variable set them.

    Precedence is flag > variable > file > default (SPEC 1): `options.explicit`
    holds what a flag or variable set. Called at start, before the log and the
    sockets exist (issue 7.22: these were accepted by --check, then ignored).
    `grace` is left to the supervisor, which also re-reads it at reload.
    """
    for name in ("log_format", "log_level", "ctl_socket", "health_port"):
        value = getattr(settings, name)
        if value is not None and name not in options.explicit:
            setattr(options, name, value)


# -- across services: names in both forms, `after` ---------------------------------


def _merge(first: list[Parsed], second: list[Parsed]) -> list[Parsed]:
    """PYINIT_SERVICES entries, then the file's services; a name in both is an error."""
    where = {p.spec.name: p.source for p in first}
    for item in second:
        other = where.get(item.spec.name)
        if other is not None:
            message = f"service {item.spec.name!r} is also defined at {item.source.origin}"
            raise other.error((), message)
    return first + second


def _check_dependencies(parsed: list[Parsed]) -> None:
    """Every `after` name exists and is not periodic, and there is no cycle."""
    specs = {p.spec.name: p.spec for p in parsed}
    for item in parsed:
        for name in item.spec.after:
            target = specs.get(name)
            if target is None:
                hint = did_you_mean(name, frozenset(specs))
                raise item.source.error(("after",), f"unknown service {name!r}{hint}")
            if target.schedule is not None:
                message = f"{name!r} is a periodic job: only services and oneshots can be awaited"
                raise item.source.error(("after",), message)
    cycle = find_cycle({name: spec.after for name, spec in specs.items()})
    if cycle:
        source = next(p.source for p in parsed if p.spec.name == cycle[0])
        raise source.error(("after",), f"dependency cycle: {' -> '.join(cycle)}")
