"""Shell completion: `pyinit --completion bash|zsh` prints a script that loads
and completes what the option table and the ctl verbs say (issue 11).

bash: the script passes `bash -n`, `source` registers it (`complete -p
pyinit`), and calling its function the way bash does (COMP_WORDS,
COMP_CWORD) offers the right words. zsh (skipped when not installed): `zsh
-n`, then a real interactive zsh in a pseudo-terminal types a line and TAB
(tests/support/zsh_complete.zsh) and reports what it offered.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from support.helpers import INSTALLED_ONLY, SUPPORT_DIR, base_env

from pyinit import cli, completion
from pyinit.cli import OPTIONS

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")
needs_zsh = pytest.mark.skipif(ZSH is None, reason="zsh is not installed")


def completion_script(pyinit_argv: list[str], shell: str, tmp_path: Path) -> Path:
    result = subprocess.run(
        [*pyinit_argv, "--completion", shell],
        capture_output=True,
        text=True,
        timeout=30,
        env=base_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    path = tmp_path / f"pyinit.{shell}"
    path.write_text(result.stdout)
    return path


def bash_offers(script: Path, *words: str) -> list[str]:
    """What the bash completion function puts in COMPREPLY for `words` (the last
    one being completed), split the way bash splits (at `=` and `:` too)."""
    line = " ".join(shlex.quote(w) for w in words)
    driver = (
        f"source {shlex.quote(str(script))}\n"
        f"COMP_WORDS=({line}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n"
        "_pyinit; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    result = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", driver], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not result.stderr, result
    return sorted(set(result.stdout.split()))


def zsh_offers(script: Path, line: str, tmp_path: Path) -> list[str]:
    assert ZSH is not None
    result = subprocess.run(
        [ZSH, "-f", str(SUPPORT_DIR / "zsh_complete.zsh"), str(script), line],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**base_env(), "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result
    return sorted(set(result.stdout.split()))


@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_bash_script_loads_and_registers(pyinit_argv: list[str], tmp_path: Path) -> None:
    script = completion_script(pyinit_argv, "bash", tmp_path)
    syntax = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    loaded = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", f"source {script} && complete -p pyinit"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "complete -F _pyinit pyinit"


@INSTALLED_ONLY
def test_bash_completes_every_option_of_the_table(pyinit_argv: list[str], tmp_path: Path) -> None:
    script = completion_script(pyinit_argv, "bash", tmp_path)
    offered = bash_offers(script, "pyinit", "-")
    for opt in OPTIONS:
        assert f"--{opt.long}" in offered, opt.long
        if opt.short:
            assert f"-{opt.short}" in offered, opt.short


@INSTALLED_ONLY
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["pyinit", "--log-format", ""], ["json", "logfmt", "text"]),
        (["pyinit", "--log-format", "=", "l"], ["logfmt"]),
        (["pyinit", "--log-level", "w"], ["warning"]),
        (["pyinit", "--completion", ""], ["bash", "zsh"]),
        (["pyinit", "-p", "US"], ["USR1", "USR2"]),
        (["pyinit", "-r", "TE"], ["TERM:"]),
        (["pyinit", "--rewrite", "TERM", ":", "QU"], ["QUIT"]),
        (["pyinit", "ctl", "re"], ["ready", "reload", "restart"]),
        (["pyinit", "ctl", "--ctl-socket", "/run/x.sock", "st"], ["start", "status", "stop"]),
        (["pyinit", "ctl", "status", "--"], ["--json"]),
        (["pyinit", "ctl", "signal", "web", "HU"], ["HUP"]),
    ],
)
def test_bash_completes_values_and_ctl_verbs(
    pyinit_argv: list[str], tmp_path: Path, words: list[str], expected: list[str]
) -> None:
    script = completion_script(pyinit_argv, "bash", tmp_path)
    assert bash_offers(script, *words) == expected


@INSTALLED_ONLY
def test_bash_hands_over_to_the_command(pyinit_argv: list[str], tmp_path: Path) -> None:
    """After COMMAND, pyinit's options are not offered: the words are the command's."""
    script = completion_script(pyinit_argv, "bash", tmp_path)
    assert "ctl" in bash_offers(script, "pyinit", "ct")
    assert "sleep" in bash_offers(script, "pyinit", "-t", "5", "--", "sle")
    assert "sleep" in bash_offers(script, "pyinit", "-r", "TERM", ":", "QUIT", "sle")
    after_command = bash_offers(script, "pyinit", "sleep", "--log")
    assert "--log-format" not in after_command, after_command


@needs_zsh
@pytest.mark.parametrize("pyinit_argv", ["installed", "pyz"], indirect=True)
def test_zsh_script_loads_and_registers(pyinit_argv: list[str], tmp_path: Path) -> None:
    assert ZSH is not None
    script = completion_script(pyinit_argv, "zsh", tmp_path)
    assert script.read_text().startswith("#compdef pyinit\n")
    syntax = subprocess.run([ZSH, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    loaded = subprocess.run(
        [ZSH, "-f", "-c", f"autoload -U compinit; compinit -u -D; source {script};"
         " print -r -- $_comps[pyinit]"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout.strip() == "_pyinit", loaded


@needs_zsh
@INSTALLED_ONLY
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pyinit --log-format ", ["json", "logfmt", "text"]),
        ("pyinit --log-l", ["--log-level"]),
        ("pyinit -r TERM:QU", ["QUIT"]),
        ("pyinit ctl re", ["ready", "reload", "restart"]),
        ("pyinit ctl status --", ["--json"]),
        ("pyinit ctl signal web HU", ["HUP"]),
    ],
)
def test_zsh_completes_options_values_and_ctl_verbs(
    pyinit_argv: list[str], tmp_path: Path, line: str, expected: list[str]
) -> None:
    script = completion_script(pyinit_argv, "zsh", tmp_path)
    assert zsh_offers(script, line, tmp_path) == expected


@INSTALLED_ONLY
@pytest.mark.parametrize("args", [["--completion", "fish"], ["--completion"]])
def test_an_unknown_shell_is_a_usage_error(pyinit_argv: list[str], args: list[str]) -> None:
    result = subprocess.run(
        [*pyinit_argv, *args], capture_output=True, text=True, timeout=30, env=base_env()
    )
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyinit: error: --completion"), lines


def test_cli_and_completion_name_the_value_kinds_alike() -> None:
    """completion.py does not import cli (no cycle): the kind names must agree."""
    assert (cli.FILE, cli.SIGNAL, cli.SIGNAL_PAIR) == (
        completion.FILE,
        completion.SIGNAL,
        completion.SIGNAL_PAIR,
    )
    kinds = {opt.complete for opt in OPTIONS if isinstance(opt.complete, str)}
    assert kinds <= {completion.FILE, completion.SIGNAL, completion.SIGNAL_PAIR}, kinds
