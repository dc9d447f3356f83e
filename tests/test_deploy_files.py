"""Keep docker/kubernetes.yaml and docker/pyinit.container true to the code.

Why: no cluster and no podman run here, so what can rot is what these files
say about pyinit. The manifest is checked by the field's own validator
(kubernetes-validate, strict schema), then against pyinit itself: the TOML in
the ConfigMap loads with pyinit.config and passes `pyinit --check` with the
pod's environment, every PYINIT_* variable is in `pyinit --help`, the probes
and the command run the file the image's Dockerfile copies the pyz to, the
volume is a directory mount (a subPath mount never sees a ConfigMap update),
and terminationGracePeriodSeconds is above the longest stop pyinit can take.
The Quadlet unit gets the same checks against its image.

Parsing helpers come from test_docker_files (Dockerfile reader, --help fixtures).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from support.oci_bundle import CONTAINER_PYTHON
from test_docker_files import (
    CHILD_SIDE_VARIABLES,
    DOCKER_DIR,
    LONG_FLAG,
    VARIABLE,
    parse_dockerfile,
    pyz_destinations,
)
from test_docker_files import help_flags as help_flags  # noqa: F401  (a fixture)
from test_docker_files import help_text as help_text  # noqa: F401  (a fixture)

from pyinit.config import load_toml, parse_config
from pyinit.config.model import DEFAULT_GRACE, Config

MANIFEST = DOCKER_DIR / "kubernetes.yaml"
QUADLET = DOCKER_DIR / "pyinit.container"
# Versions the manifest must be valid for: the oldest the validator ships and its newest.
KUBERNETES_VERSIONS = ("1.27.0", "latest")
# Being implemented by another helper (SPEC 1, 4 and 6): checked in their own tests below.
CTL_VARIABLES = {"PYINIT_HEALTH_PORT", "PYINIT_CTL_SOCKET"}
BUILD_LINE = re.compile(r"(?:docker|podman) build -f (\S+) -t ([\w./:-]+)")


# -- reading the files -----------------------------------------------------------


@pytest.fixture(scope="module")
def manifest() -> list[dict[str, Any]]:
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML not installed (comes with kubernetes-validate)"
    )
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"{MANIFEST.name}: expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1, "the example pod has one container, pyinit's"
    found: dict[str, Any] = containers[0]
    return found


def container_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container(docs).get("env", []) if "value" in e}


def configmap_toml(docs: list[dict[str, Any]]) -> tuple[str, str]:
    """(the in-container path of the config, the TOML text the ConfigMap gives it)."""
    path = container_env(docs)["PYINIT_CONFIG"]
    mount_dir, key = str(PurePosixPath(path).parent), PurePosixPath(path).name
    mounts = {m["name"]: m for m in container(docs).get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(docs).get("volumes", [])}
    for name, mount in mounts.items():
        if mount["mountPath"].rstrip("/") == mount_dir and "configMap" in volumes.get(name, {}):
            configmap = volumes[name]["configMap"]["name"]
            data = only(docs, "ConfigMap")
            assert data["metadata"]["name"] == configmap, "the volume names another ConfigMap"
            assert key in data["data"], f"ConfigMap has no key {key!r} for PYINIT_CONFIG={path}"
            return path, data["data"][key]
    raise AssertionError(f"no ConfigMap volume mounted at {mount_dir} (PYINIT_CONFIG={path})")


def built_images() -> dict[str, Path]:
    """Image name -> Dockerfile, from the `docker build -f FILE -t NAME .` lines of docker/."""
    images = {}
    for path in sorted(DOCKER_DIR.iterdir()):
        if path.is_file():
            for file, tag in BUILD_LINE.findall(path.read_text()):
                images[tag.split(":")[0]] = DOCKER_DIR.parent / file
    return images


def image_dockerfile(image: str) -> Path:
    name = image.removeprefix("localhost/").split(":")[0]
    images = built_images()
    assert name in images, f"image {image!r} is not built by any `docker build ... -t` in docker/"
    return images[name]


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd/Quadlet unit file: section -> [(key, value)] (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_env(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env = {}
    for key, value in unit.get("Container", []):
        if key == "Environment":
            for word in value.split():
                name, _, val = word.partition("=")
                env[name] = val
    return env


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    values = [v for k, v in unit.get(section, []) if k == key]
    assert len(values) == 1, f"{QUADLET.name}: [{section}] {key}= appears {len(values)} times"
    return values[0]


def longest_stop(config: Config, env: dict[str, str]) -> float:
    """Seconds pyinit may take to stop `config` before it SIGKILLs what is left.

    SPEC 3: services stop in reverse order, each with SIGKILL after its grace,
    and the whole shutdown is bounded by the largest grace (supervisor.py sets
    one deadline). The default grace is PYINIT_GRACE, else [pyinit] grace,
    else 10 s (supervisor.py's order). A grace of 0 means "wait forever".
    """
    default = DEFAULT_GRACE
    if config.settings.grace is not None:
        default = config.settings.grace
    if "PYINIT_GRACE" in env:
        default = float(env["PYINIT_GRACE"])
    graces = [default if s.grace is None else s.grace for s in config.services.values()]
    graces = graces or [default]
    return float("inf") if 0 in graces else max(graces)


def run_check(
    pyz_path: Path, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """`pyinit --check` with exactly `env` (plus PATH), as the container's Python runs it."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        [CONTAINER_PYTHON, str(pyz_path), "--check"],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- the Kubernetes manifest -----------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_passes_kubernetes_validate_strict(version):
    """The schema of the Kubernetes API (strict: no unknown field) accepts every resource."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip(
            "kubernetes-validate not installed (python3 -m pip install kubernetes-validate)"
        )
    args = [sys.executable, "-m", "kubernetes_validate", "--strict"]
    if version != "latest":
        args += ["-k", version]
    result = subprocess.run(
        [*args, str(MANIFEST)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource deployment/" in result.stdout + result.stderr
    assert "passed for resource configmap/" in result.stdout + result.stderr


def test_manifest_is_a_deployment_and_a_configmap(manifest):
    assert sorted(d["kind"] for d in manifest) == ["ConfigMap", "Deployment"]


def test_config_volume_is_a_directory_mount_without_subpath(manifest):
    """subPath mounts are copied once and never updated: reload would read the old file forever."""
    path, _ = configmap_toml(manifest)
    for mount in container(manifest).get("volumeMounts", []):
        assert "subPath" not in mount and "subPathExpr" not in mount, mount
    assert path.startswith("/"), "PYINIT_CONFIG is an absolute path in the container"


def test_configmap_toml_loads_with_pyinit_config(manifest):
    """The file the pod reads is valid for pyinit.config, with a ready-checked web and a worker."""
    path, text = configmap_toml(manifest)
    settings, services = load_toml(text, path)
    assert len(services) >= 2
    assert any(s.ready.kind.value == "tcp" for s in services.values()), "a tcp readiness check"
    assert any(s.workers > 1 for s in services.values()), "a service with several workers"
    config = parse_config("", text, path)
    assert set(config.services) == set(services)


def test_configmap_config_passes_pyinit_check_with_the_pods_environment(
    manifest, pyz_path, tmp_path
):
    """`pyinit --check` with the image's ENV overridden by the container's (as Kubernetes does)."""
    _, text = configmap_toml(manifest)
    dockerfile = parse_dockerfile(image_dockerfile(container(manifest)["image"]))
    env = {**dockerfile.env, **container_env(manifest)}
    config_file = tmp_path / "pyinit.toml"
    config_file.write_text(text)
    env["PYINIT_CONFIG"] = str(config_file)
    result = run_check(pyz_path, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in load_toml(text, str(config_file))[1]:
        assert re.search(rf"^{re.escape(name)}:", result.stdout, re.M), result.stdout


def test_command_and_exec_probe_run_the_pyz_the_image_copies(manifest):
    """command and the readinessProbe name the COPY destination of the image's Dockerfile."""
    spec = container(manifest)
    destinations = pyz_destinations(parse_dockerfile(image_dockerfile(spec["image"])))
    assert destinations, "the image's Dockerfile copies no pyz"
    assert spec["command"][0] in destinations
    assert "args" not in spec, "args would become COMMAND, the main service"
    probe = spec["readinessProbe"]["exec"]["command"]
    assert probe[0] in destinations, f"{probe[0]} is not where the image puts the pyz"
    assert probe[1:] == ["ctl", "ready"]


def test_liveness_probe_asks_pyinits_health_port(manifest):
    """httpGet /healthz on the port PYINIT_HEALTH_PORT serves, declared as a containerPort."""
    spec = container(manifest)
    port_value = container_env(manifest)["PYINIT_HEALTH_PORT"]
    health_port = int(port_value.rpartition(":")[2])
    probe = spec["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p.get("name"): p["containerPort"] for p in spec.get("ports", [])}
    port = ports[probe["port"]] if isinstance(probe["port"], str) else probe["port"]
    assert port == health_port


def test_termination_grace_is_above_pyinits_longest_stop(manifest):
    """Kubernetes SIGKILLs after terminationGracePeriodSeconds: pyinit must be done first."""
    path, text = configmap_toml(manifest)
    dockerfile = parse_dockerfile(image_dockerfile(container(manifest)["image"]))
    env = {**dockerfile.env, **container_env(manifest)}
    bound = longest_stop(parse_config("", text, path), env)
    period = pod_spec(manifest)["terminationGracePeriodSeconds"]
    assert period > bound, f"terminationGracePeriodSeconds {period} <= pyinit's {bound} s"


def test_manifest_variables_are_in_help(manifest, help_text):
    """Every PYINIT_* the pod sets is one pyinit documents."""
    documented = set(VARIABLE.findall(help_text))
    used = set(container_env(manifest)) | set(VARIABLE.findall(MANIFEST.read_text()))
    unknown = used - documented - CHILD_SIDE_VARIABLES
    assert not unknown, f"not in pyinit --help: {sorted(unknown)}"
    assert "PYINIT_CONFIG" in used and "PYINIT_CONFIG" in documented


def test_reload_instructions_use_pyinit_ctl(manifest):
    """The manifest says how to reload: kubectl exec into the Deployment, `pyinit ctl reload`."""
    name = only(manifest, "Deployment")["metadata"]["name"]
    assert f"kubectl exec deploy/{name} -- pyinit ctl reload" in MANIFEST.read_text()


# -- the podman Quadlet unit -----------------------------------------------------


def test_quadlet_unit_runs_an_image_of_docker_dir_with_notify():
    """Image= is built by a docker/ Dockerfile that installs pyinit; Notify=true (Type=notify)."""
    unit = read_unit(QUADLET)
    assert {"Unit", "Container", "Service", "Install"} <= set(unit)
    assert one(unit, "Container", "Notify") == "true"
    dockerfile = parse_dockerfile(image_dockerfile(one(unit, "Container", "Image")))
    destinations = pyz_destinations(dockerfile)
    assert destinations and dockerfile.entrypoint and dockerfile.entrypoint[0] in destinations


def test_quadlet_environment_passes_pyinit_check(pyz_path, tmp_path, help_text):
    """The unit's Environment= over the image's ENV: known to --help, and `pyinit --check` is ok."""
    unit = read_unit(QUADLET)
    dockerfile = parse_dockerfile(image_dockerfile(one(unit, "Container", "Image")))
    env = {**dockerfile.env, **unit_env(unit)}
    documented = set(VARIABLE.findall(help_text))
    unknown = {n for n in unit_env(unit) if n.startswith("PYINIT_")} - documented
    assert not unknown, f"not in pyinit --help: {sorted(unknown)}"
    result = run_check(pyz_path, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_quadlet_flags_are_pyinit_flags(help_flags):
    """Options given to pyinit through Exec= (if any) exist in --help."""
    unit = read_unit(QUADLET)
    execs = [v for k, v in unit.get("Container", []) if k == "Exec"]
    used = {f for v in execs for f in LONG_FLAG.findall(v.split(" -- ")[0])}
    assert used <= help_flags, f"not in pyinit --help: {sorted(used - help_flags)}"


def test_quadlet_stop_timeouts_are_above_pyinits_longest_stop():
    """podman SIGKILLs after StopTimeout=, systemd after TimeoutStopSec=: both after pyinit."""
    unit = read_unit(QUADLET)
    dockerfile = parse_dockerfile(image_dockerfile(one(unit, "Container", "Image")))
    env = {**dockerfile.env, **unit_env(unit)}
    config = parse_config(env.get("PYINIT_SERVICES", ""), None, None)
    assert config.services, "the unit's image configures services"
    bound = longest_stop(config, env)
    stop_timeout = float(one(unit, "Container", "StopTimeout"))
    assert stop_timeout > bound, f"StopTimeout={stop_timeout} <= pyinit's {bound} s"
    assert float(one(unit, "Service", "TimeoutStopSec")) > stop_timeout


# -- the pod, run here: ConfigMap layout, probes, reload, stop ---------------------


def _unshare_net_problem() -> str:
    """Why a private network + PID namespace cannot be made here ("" if it can)."""
    try:
        done = subprocess.run(
            [*NETNS_PREFIX, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return repr(error)
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


NETNS_PREFIX = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]


def test_the_pod_runs_here_probes_answer_and_a_configmap_update_reloads(
    manifest, pyz_path, tmp_path
):
    """The pod's env and ConfigMap, run by the pyz as PID 1 in its own network namespace.

    The config is laid out as the kubelet mounts it (..data symlink). The exec
    readinessProbe command succeeds once web listens; /healthz and /readyz
    answer 200 on PYINIT_HEALTH_PORT; after a kubelet-style swap of the
    ConfigMap (worker: 2 -> 3 workers), `pyinit ctl reload` from the
    manifest's instructions scales it; SIGTERM (pod deletion) stops all
    within terminationGracePeriodSeconds.
    """
    problem = _unshare_net_problem()
    if problem:
        pytest.skip(f"cannot make a network namespace here: {problem}")
    from support.helpers import InitProcess, wait_until
    from test_reload_plan import KubeletVolume

    path, text = configmap_toml(manifest)
    assert "workers = 2" in text, "the test scales the worker from 2 to 3"
    dockerfile = parse_dockerfile(image_dockerfile(container(manifest)["image"]))
    env = {"PATH": "/usr/bin:/bin", **dockerfile.env, **container_env(manifest)}
    volume = KubeletVolume(tmp_path / "etc-pyinit", key=PurePosixPath(path).name)
    volume.create(text)
    socket_dir = tmp_path / "run"
    socket_dir.mkdir(mode=0o700)
    env["PYINIT_CONFIG"] = str(volume.path)
    env["PYINIT_CTL_SOCKET"] = str(socket_dir / "ctl.sock")  # the pod's default is /run/pyinit
    health_port = int(env["PYINIT_HEALTH_PORT"].rpartition(":")[2])
    probe = container(manifest)["readinessProbe"]["exec"]["command"]
    period = pod_spec(manifest)["terminationGracePeriodSeconds"]

    def pyinit_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONTAINER_PYTHON, str(pyz_path), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    argv = ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", CONTAINER_PYTHON, str(pyz_path)]
    with InitProcess(argv, prefix=NETNS_PREFIX, depth=1, env=env) as init:

        def http_status(url_path: str) -> int:
            code = (
                "import urllib.request, urllib.error, sys\n"
                "try: r = urllib.request.urlopen(sys.argv[1], timeout=3); print(r.status)\n"
                "except urllib.error.HTTPError as e: print(e.code)\n"
            )
            done = subprocess.run(
                ["nsenter", "-t", str(init.pid), "-n", CONTAINER_PYTHON, "-c", code,
                 f"http://127.0.0.1:{health_port}{url_path}"],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
            return int(done.stdout.strip() or 0)

        wait_until(
            lambda: init.poll() is not None or pyinit_cli(*probe[1:]).returncode == 0,
            15,
            lambda: f"readinessProbe {probe} to succeed ({init.describe()})",
        )
        assert init.poll() is None, f"pyinit exited: {init.describe()}"
        assert http_status("/healthz") == 200
        assert http_status("/readyz") == 200

        def status() -> list[dict[str, Any]]:
            done = pyinit_cli("ctl", "status", "--json")
            assert done.returncode in (0, 3), done.stderr  # 3: a worker is not ok right now
            rows: list[dict[str, Any]] = json.loads(done.stdout)
            return rows

        def running(service: str) -> dict[int, int]:
            """worker id -> pid of the running workers of `service`."""
            return {
                r["worker"]: r["pid"]
                for r in status()
                if r["service"] == service and r["state"] == "running"
            }

        workers_before = running("worker")
        web_before = running("web")
        assert sorted(workers_before) == [0, 1] and len(web_before) == 1
        old = volume.commit(volume.prepare(text.replace("workers = 2", "workers = 3")))
        volume.clean(old)
        reload = pyinit_cli("ctl", "reload")
        assert reload.returncode == 0, reload.stderr
        wait_until(
            lambda: sorted(running("worker")) == [0, 1, 2],
            10,
            lambda: f"3 workers ({init.describe()})",
        )
        # Scaling up keeps the running workers; web (unchanged, reload = "none") keeps its pid.
        after = running("worker")
        assert {i: after[i] for i in (0, 1)} == workers_before
        assert running("web") == web_before
        assert all(r["restarts"] == 0 for r in status()), status()

        init.send(signal.SIGTERM)
        status = init.wait(period)
        assert status == 0, init.describe()
        assert "Traceback" not in "\n".join(init.stderr_lines())


# -- `pyinit ctl` and --health-port (SPEC 1, 4, 6) -----------------------------------


def test_health_and_ctl_variables_and_flags_are_in_help(help_text, help_flags):
    """PYINIT_HEALTH_PORT (set by the manifest), --health-port, --ctl-socket, `pyinit ctl`."""
    documented = set(VARIABLE.findall(help_text))
    used = set(VARIABLE.findall(MANIFEST.read_text() + QUADLET.read_text()))
    assert "PYINIT_HEALTH_PORT" in used
    assert used & CTL_VARIABLES <= documented
    assert {"--health-port", "--ctl-socket"} <= help_flags
    assert re.search(r"\bpyinit ctl\b", help_text), "usage does not show `pyinit ctl`"


def test_ctl_verbs_the_files_use_are_understood(pyz_path, tmp_path):
    """`pyinit ctl ready|reload|status` with no pyinit running: 'is it running?', not 'unknown'."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYINIT_CTL_SOCKET": str(tmp_path / "none" / "ctl.sock"),
    }
    for verb in ("ready", "reload", "status"):
        result = subprocess.run(
            [CONTAINER_PYTHON, str(pyz_path), "ctl", verb],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode not in (0, 126, 127), (verb, result.returncode, result.stderr)
        assert result.stderr.startswith("pyinit"), result.stderr
        assert "Traceback" not in result.stderr
        assert "unknown verb" not in result.stderr and "usage" not in result.stderr.lower(), (
            f"`ctl {verb}` not understood: {result.stderr}"
        )
        assert str(tmp_path / "none" / "ctl.sock") in result.stderr, result.stderr
