"""The reload diff (pyinit.config.reload_plan) and reading a Kubernetes ConfigMap mount.

The diff is pure, so it is replayed on configs built from real config text
(parse_config) and, with hypothesis, on random pairs of small configs: the
categories must partition the union of the names exactly.

The ConfigMap test builds, in tmp, the very layout the kubelet's AtomicWriter
makes for a volume mount and swaps it the way the kubelet does, calling the
real `pyinit.config.load` at each step a SIGHUP could arrive.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyinit.config import ConfigError, load, parse_config
from pyinit.config.model import Config, ServiceSpec, Settings
from pyinit.config.reload_plan import ReloadPlan, describe, plan

OLD_TOML = """
[services.migrate]
cmd = "python manage.py migrate"
oneshot = true

[services.web]
cmd = ["gunicorn", "-b", ":8000", "app:app"]
after = ["migrate"]
ready = "tcp:8000"

[services.worker]
cmd = "python -m app.worker"
workers = 2

[services.mailer]
cmd = "python -m app.mailer"

[services.cron]
cmd = "python -m app.cleanup"
every = "1h"
"""


def config(toml: str | None, services: str = "", path: str = "/etc/pyinit.toml") -> Config:
    return parse_config(services, toml, path if toml is not None else None)


# -- each category ---------------------------------------------------------------


def test_identical_configs_leave_everything_unchanged():
    """Re-reading the same file: every service gets its reload mode, nothing else happens."""
    old = config(OLD_TOML)
    result = plan(old, config(OLD_TOML))
    assert result == ReloadPlan(unchanged=("migrate", "worker", "mailer", "cron", "web"))
    assert result.is_noop
    assert describe(result) == "reload: 5 unchanged"


def test_added_in_new_start_order():
    """New services are started in the new config's dependency order, not the file's."""
    new = config(
        OLD_TOML
        + """
[services.api]
cmd = "api"
after = ["cache"]

[services.cache]
cmd = "redis-server"
"""
    )
    result = plan(config(OLD_TOML), new)
    assert result.added == ("cache", "api")  # api waits for cache although written first
    assert "cache" not in result.unchanged and "api" not in result.unchanged
    assert not result.is_noop


def test_removed_in_reverse_old_start_order():
    """Removed services are stopped dependents first: web before migrate."""
    new = config(
        """
[services.worker]
cmd = "python -m app.worker"
workers = 2
"""
    )
    result = plan(config(OLD_TOML), new)
    # old start order: [migrate, worker, mailer, cron], [web]; stopping walks it backwards
    assert result.removed == ("web", "cron", "mailer", "migrate")
    assert result.unchanged == ("worker",)
    assert describe(result) == "reload: 4 removed (web, cron, mailer, migrate), 1 unchanged"


def test_changed_command_and_option():
    """Any difference but workers is a restart: the command, a grace, an env value."""
    new_toml = (
        OLD_TOML.replace('"python -m app.mailer"', '"python -m app.mailer --fast"')
        .replace('every = "1h"', 'every = "2h"')
        .replace('ready = "tcp:8000"', 'ready = "tcp:8000"\ngrace = 30')
    )
    result = plan(config(OLD_TOML), config(new_toml))
    assert result.changed == ("mailer", "cron", "web")
    assert result.unchanged == ("migrate", "worker")
    assert not result.scaled and not result.added and not result.removed


def test_after_only_counts_as_changed():
    """Decision: a new `after` alone restarts the service (it re-enters through the new order)."""
    new_toml = OLD_TOML.replace('after = ["migrate"]', 'after = ["migrate", "mailer"]')
    result = plan(config(OLD_TOML), config(new_toml))
    assert result.changed == ("web",)
    assert "web" not in result.unchanged
    # A dependent is judged by its own spec only: changing migrate does not restart web.
    new_toml = OLD_TOML.replace("python manage.py migrate", "python manage.py migrate --noinput")
    result = plan(config(OLD_TOML), config(new_toml))
    assert result.changed == ("migrate",)
    assert "web" in result.unchanged


def test_workers_only_is_scaled():
    """Only `workers` differs: scale (keep the running workers), in both directions."""
    up = plan(config(OLD_TOML), config(OLD_TOML.replace("workers = 2", "workers = 4")))
    assert dict(up.scaled) == {"worker": (2, 4)}
    assert "worker" not in up.changed and "worker" not in up.unchanged
    down = plan(config(OLD_TOML), config(OLD_TOML.replace("workers = 2", "workers = 0")))
    assert dict(down.scaled) == {"worker": (2, 0)}
    assert describe(up) == "reload: 1 scaled (worker 2->4), 4 unchanged"


def test_workers_and_something_else_is_changed():
    """workers and the command differ: a restart with the new count, not a scale."""
    new_toml = OLD_TOML.replace("workers = 2", "workers = 3").replace(
        "python -m app.worker", "python -m app.worker2"
    )
    result = plan(config(OLD_TOML), config(new_toml))
    assert result.changed == ("worker",)
    assert not result.scaled


def test_moving_between_variable_and_file_is_unchanged():
    """Decision: same spec, other origin (PYINIT_SERVICES <-> file) is not a change."""
    in_file = config(
        """
[services.web]
cmd = "gunicorn app:app"
workers = 2
"""
    )
    in_variable = config("", services="web[2]: gunicorn app:app")
    assert in_file.services["web"].origin != in_variable.services["web"].origin
    assert plan(in_file, in_variable).unchanged == ("web",)
    assert plan(in_variable, in_file).unchanged == ("web",)
    # ...and no file at all on one side changes nothing either.
    only_variable = config(None, services="web[2]: gunicorn app:app")
    assert plan(in_file, only_variable) == ReloadPlan(unchanged=("web",))


def test_settings_changed():
    """[pyinit] differs: flagged, whatever happens to the services."""
    new_toml = "[pyinit]\ngrace = 20\n" + OLD_TOML
    result = plan(config(OLD_TOML), config(new_toml))
    assert result.settings_changed
    assert not result.is_noop
    assert len(result.unchanged) == 5
    assert describe(result) == "reload: 5 unchanged, [pyinit] settings changed"
    assert not plan(config(new_toml), config(new_toml)).settings_changed


def test_describe_every_category():
    """The log line of SPEC 7 ('reload applied'), all categories present, in a fixed order."""
    old = config(
        None,
        "y: a; a: b; b: c; w[2]: d; u1: e; u2: f; u3: g",
    )
    new = config(
        None,
        "x: x; a: b2; b: c2; w[4]: d; u1: e; u2: f; u3: g",
    )
    text = describe(plan(old, new))
    assert text == (
        "reload: 1 added (x), 1 removed (y), 2 changed (a, b), 1 scaled (w 2->4), 3 unchanged"
    )
    assert "\n" not in text


def test_plan_is_frozen():
    result = plan(config(OLD_TOML), config(OLD_TOML.replace("workers = 2", "workers = 3")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.added = ("x",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.scaled["x"] = (1, 2)  # type: ignore[index]


# -- property: the categories partition the names ---------------------------------

NAMES = ("a", "b", "c", "d", "e")


@st.composite
def small_configs(draw: st.DrawFn) -> Config:
    """Up to 5 services from a shared name pool; `after` only names earlier ones (no cycle)."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    specs: dict[str, ServiceSpec] = {}
    for index, name in enumerate(names):
        specs[name] = ServiceSpec(
            name=name,
            command=(draw(st.sampled_from(["run", "serve"])),),
            workers=draw(st.integers(0, 2)),
            after=tuple(draw(st.lists(st.sampled_from(names[:index]), unique=True)))
            if index
            else (),
            grace=draw(st.sampled_from([None, 5.0])),
            origin=draw(st.sampled_from(["PYINIT_SERVICES entry 1", "/etc/pyinit.toml:3"])),
        )
    grace = draw(st.sampled_from([None, 10.0]))
    return Config(settings=Settings(grace=grace), services=MappingProxyType(specs))


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(old=small_configs(), new=small_configs())
def test_categories_partition_the_union_of_names(old: Config, new: Config):
    result = plan(old, new)
    buckets = [
        result.added,
        result.removed,
        result.changed,
        tuple(result.scaled),
        result.unchanged,
    ]
    every = [name for bucket in buckets for name in bucket]
    assert len(every) == len(set(every)), f"a name in two categories: {result}"
    assert set(every) == set(old.services) | set(new.services)
    # ...and each name is in the right one.
    assert set(result.added) == set(new.services) - set(old.services)
    assert set(result.removed) == set(old.services) - set(new.services)
    for name in result.unchanged:
        assert old.services[name] == new.services[name]
    for name, (was, now) in result.scaled.items():
        assert (was, now) == (old.services[name].workers, new.services[name].workers)
        assert was != now
    for name in result.changed:
        assert dataclasses.replace(old.services[name], workers=0) != dataclasses.replace(
            new.services[name], workers=0
        )
    assert result.settings_changed == (old.settings != new.settings)
    # Reversing the reload swaps added and removed and inverts every scale.
    back = plan(new, old)
    assert set(back.added) == set(result.removed) and set(back.removed) == set(result.added)
    assert set(back.changed) == set(result.changed)
    assert dict(back.scaled) == {n: (b, a) for n, (a, b) in result.scaled.items()}
    same = plan(new, new)
    assert set(same.unchanged) == set(new.services) and same.is_noop


# -- the Kubernetes ConfigMap volume, swapped as the kubelet swaps it --------------

CONFIGMAP_V1 = """
[services.web]
cmd = "python3 -m http.server 8000"
ready = "tcp:8000"

[services.worker]
cmd = "python3 -m app.worker"
workers = 2
"""

CONFIGMAP_V2 = """
[services.web]
cmd = "python3 -m http.server 8000"
ready = "tcp:8000"

[services.worker]
cmd = "python3 -m app.worker"
workers = 4

[services.mailer]
cmd = "python3 -m app.mailer"
"""

CONFIGMAP_V3 = """
[services.web]
cmd = "python3 -m http.server 8080"
ready = "tcp:8080"
"""


class KubeletVolume:
    """A ConfigMap volume laid out and updated like the kubelet's AtomicWriter does.

    dir/..2026_11_25_01_00_00.123/pyinit.toml   the payload, in a timestamped dir
    dir/..data -> ..2026_11_25_01_00_00.123     the one symlink that is swapped
    dir/pyinit.toml -> ..data/pyinit.toml       what the container is told to read
    An update writes a new timestamped dir, points a new `..data_tmp` symlink at
    it, renames that over `..data` (atomic) and only then removes the old dir.
    """

    def __init__(self, root: Path, key: str = "pyinit.toml") -> None:
        self.root = root
        self.key = key
        self.generation = 0
        self.current: str | None = None
        root.mkdir()

    @property
    def path(self) -> Path:
        return self.root / self.key

    def _write_payload(self, text: str) -> str:
        self.generation += 1
        name = f"..2026_11_25_01_00_0{self.generation}.{123 + self.generation}"
        payload = self.root / name
        payload.mkdir(mode=0o755)
        (payload / self.key).write_text(text)
        return name

    def create(self, text: str) -> None:
        self.current = self._write_payload(text)
        os.symlink(self.current, self.root / "..data")
        os.symlink(f"..data/{self.key}", self.path)

    def prepare(self, text: str) -> str:
        """Steps 1-2 of an update: new payload dir and a `..data_tmp` symlink to it."""
        name = self._write_payload(text)
        os.symlink(name, self.root / "..data_tmp")
        return name

    def commit(self, name: str) -> str | None:
        """Step 3: rename `..data_tmp` over `..data`; returns the old dir, still on disk."""
        os.rename(self.root / "..data_tmp", self.root / "..data")
        old, self.current = self.current, name
        return old

    def clean(self, old: str | None) -> None:
        """Step 4: remove the old payload dir."""
        if old is not None:
            for child in (self.root / old).iterdir():
                child.unlink()
            (self.root / old).rmdir()


def test_configmap_mount_is_reread_across_atomic_swaps(tmp_path):
    """load() after each kubelet step sees the content `..data` points to, never a stale one."""
    volume = KubeletVolume(tmp_path / "pyinit")
    volume.create(CONFIGMAP_V1)
    environ = {"PYINIT_CONFIG": str(volume.path)}
    assert volume.path.is_symlink() and (volume.root / "..data").is_symlink()

    first = load(environ)
    assert first.services["worker"].workers == 2
    assert first.path == str(volume.path), "the config keeps the path it was given, not a target"

    # The kubelet prepares the new payload: a SIGHUP now still reads the old content.
    new_dir = volume.prepare(CONFIGMAP_V2)
    assert load(environ) == first
    # rename(..data_tmp, ..data): from here on the new content, old dir still present.
    old_dir = volume.commit(new_dir)
    assert old_dir is not None and (volume.root / old_dir / "pyinit.toml").exists()
    between = load(environ)
    assert between.services["worker"].workers == 4 and "mailer" in between.services
    assert plan(first, between) == ReloadPlan(
        added=("mailer",),
        scaled=MappingProxyType({"worker": (2, 4)}),
        unchanged=("web",),
    )
    # The kubelet removes the old payload: the same path still reads the new content.
    volume.clean(old_dir)
    assert not (volume.root / old_dir).exists()
    after = load(environ)
    assert after == between

    # A second update, reading only after the old dir is gone (the usual timing of a
    # `kubectl exec ... pyinit ctl reload` a minute later).
    old_dir = volume.commit(volume.prepare(CONFIGMAP_V3))
    volume.clean(old_dir)
    third = load(environ)
    assert set(third.services) == {"web"}
    assert third.services["web"].command == ("python3", "-m", "http.server", "8080")
    assert describe(plan(after, third)) == "reload: 2 removed (mailer, worker), 1 changed (web)"

    # Same through the explicit config_path argument (--config) as through PYINIT_CONFIG.
    assert load({}, str(volume.path)) == third


def test_configmap_swap_to_invalid_content_is_a_config_error_naming_the_mount_path(tmp_path):
    """A bad ConfigMap update fails with the user's path (SPEC 5: log file:line, keep the old)."""
    volume = KubeletVolume(tmp_path / "pyinit")
    volume.create(CONFIGMAP_V1)
    good = load({}, str(volume.path))
    volume.clean(volume.commit(volume.prepare(CONFIGMAP_V1 + "\n[services.web]\ncmd = 'x'\n")))
    with pytest.raises(ConfigError) as caught:
        load({}, str(volume.path))
    assert str(caught.value).startswith(f"{volume.path}:"), str(caught.value)
    # ...and the running config it would have replaced is still a whole one.
    assert set(good.services) == {"web", "worker"}
