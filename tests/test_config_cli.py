"""PYINIT_SERVICES through the real command: malformed input is exit 2 and one line.

The parser's own property tests (test_config.py) feed it text directly; this
one goes through `pyinit --check` as a user would, so the whole path from the
environment to the error line is covered, including that nothing prints a
traceback.
"""

from __future__ import annotations

import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import base_env

GRAMMAR_PIECES = st.sampled_from(
    [
        "web", "w-1", "x.y", "[", "]", "[2]", "[workers=", "oneshot", "every=1h", "cron=",
        '"0 3 * * *"', "after=", "+", ":", ";", "\n", " ", "py:", "mod:Cls", "sleep 1",
        "'", '"', "=", ",", "grace=-1", "restart=sometimes", "ready=tcp:", "user=nobody",
        "\\", "\x00", "é",
    ]
)  # fmt: skip


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(GRAMMAR_PIECES, min_size=1, max_size=12).map("".join))
def test_any_services_text_is_a_plan_or_one_error_line(text):
    if "\x00" in text:
        return  # an environment variable cannot hold NUL: nothing to test
    done = subprocess.run(
        [sys.executable, "-m", "pyinit", "--check"],
        env=base_env({"PYINIT_SERVICES": text}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Traceback" not in done.stderr
    if done.returncode == 0:
        assert done.stdout.strip(), "a valid configuration prints its plan"
    else:
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyinit: error: "), lines
