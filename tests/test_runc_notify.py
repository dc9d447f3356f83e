"""pyinit as a runc container's PID 1 telling its manager it is ready (SPEC 4, upstream).

`podman run --sdnotify=container` binds a socket on the host, bind-mounts its
directory into the container at /run/notify and sets
NOTIFY_SOCKET=/run/notify/notify.sock for the container's PID 1, then relays
READY=1 to systemd. Here the test is podman: it binds the socket
(support.notify_listener), adds the same bind mount to the bundle of
tests/test_runc_e2e.py, and expects READY=1 only once the service inside is
ready, then STOPPING=1 when the container is stopped the way `docker stop` does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.notify_listener import NotifyListener
from support.oci_bundle import CONTAINER_PYTHON, new_container, require_runc

PYZ_IN_CONTAINER = "/pyinit.pyz"
NOTIFY_DIR_IN_CONTAINER = "/run/notify"
START_TIMEOUT = 15.0  # a fresh container: runc, then the pyz unpacking itself


def test_pyinit_as_container_pid1_sends_ready_through_a_bind_mounted_socket(
    tmp_path: Path, pyz_path: Path
) -> None:
    require_runc(tmp_path / "probe")
    base = tmp_path / "c"
    base.mkdir()
    # Ready once /tmp/ready exists, which the service creates 0.5 s after it starts.
    services = (
        "app[ready=file:/tmp/ready]: sh -c 'sleep 0.5; touch /tmp/ready; exec sleep 1000';"
        " side: sleep 1000"
    )
    with NotifyListener() as upstream:
        container = new_container(
            base,
            [CONTAINER_PYTHON, PYZ_IN_CONTAINER],
            files={PYZ_IN_CONTAINER: pyz_path},
            env=[
                f"PYINIT_SERVICES={services}",
                f"NOTIFY_SOCKET={NOTIFY_DIR_IN_CONTAINER}/notify.sock",
                "PYINIT_GRACE=2",
            ],
        )
        config_path = container.bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["mounts"].append(
            {
                "destination": NOTIFY_DIR_IN_CONTAINER,
                "type": "bind",
                "source": upstream.directory,
                "options": ["bind", "rw"],
            }
        )
        config_path.write_text(json.dumps(config, indent=2))

        def describe() -> str:
            out = container.stdout.text if container.stdout else ""
            err = container.stderr.text if container.stderr else ""
            return f"stdout={out!r} stderr={err!r}"

        try:
            started = time.monotonic()
            container.start()
            ready = upstream.wait_for("READY", "1", timeout=START_TIMEOUT, context=describe)
            statuses = upstream.statuses()
            assert statuses and statuses[-1] == "2/2 services ready", statuses
            assert any(s.startswith("1/2") for s in statuses), (
                f"READY=1 waited for nothing: {statuses}"
            )
            not_ready = [
                m for m in upstream.messages if m.fields.get("STATUS", "").startswith("1/")
            ]
            assert ready.time - not_ready[0].time >= 0.4, "READY=1 came before app's file"
            assert ready.time - started < START_TIMEOUT

            stop_at = time.monotonic()
            container.kill("TERM")
            upstream.wait_for("STOPPING", "1", after=stop_at, context=describe)
            status = container.wait(10)
            assert status == 0, f"container exit {status}; {describe()}"
            assert len(upstream.with_field("READY")) == 1
        finally:
            container.destroy()
