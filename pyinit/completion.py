"""`pyinit --completion bash|zsh`: the shell completion script, generated.

Generated from what `--help` and `pyinit ctl --help` are generated from: the
option table `cli.OPTIONS` (flags, and what each value is: fixed words, a
signal, a file) and the ctl verb table `control.protocol.USAGE`, so a new
option or verb completes without anyone editing a script. The descriptions
zsh shows are the gist of each option's text in `cli.HELP`. cli passes its
table and help in (this module does not import cli: no import cycle).

Why `--completion SHELL` and not a `completion` sub-command (uv's
`generate-shell-completion`, pip's `completion --bash`): the first word
that is not an option is the COMMAND pyinit runs (tini, dumb-init), and a
program named `completion` must still run; only `ctl` is reserved.

What completes: options and their fixed values (log formats and levels,
signals, shells), files for paths, then either `ctl` and its verbs, the
verbs' own options and signals, or COMMAND (a command name, then whatever
the shell completes for that command). Imported only when asked for.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from pyinit.control.protocol import USAGE

#: The kinds of value cli.Opt.complete names (cli.FILE, cli.SIGNAL, cli.SIGNAL_PAIR).
FILE, SIGNAL, SIGNAL_PAIR = "file", "signal", "signal:signal"


class Option(Protocol):
    """What completion reads of a cli.Opt."""

    @property
    def short(self) -> str | None: ...
    @property
    def long(self) -> str: ...
    @property
    def parse(self) -> Callable[[str], object] | None: ...
    @property
    def repeat(self) -> bool: ...
    @property
    def complete(self) -> str | tuple[str, ...]: ...


def script(shell: str, options: Sequence[Option], help_text: str) -> str:
    """The completion script for `shell` ("bash" or "zsh") of `options`
    (cli.OPTIONS), with descriptions from `help_text` (cli.HELP)."""
    return _zsh(options, help_text) if shell == "zsh" else _bash(options)


# -- what the tables say --------------------------------------------------------------


def signal_names() -> list[str]:
    """Signal names as users type them for pyinit (TERM, HUP, USR1...)."""
    return [s.name[3:] for s in signal.Signals if not s.name.startswith("SIG_")]


def flags(opt: Option) -> list[str]:
    return [f"-{opt.short}", f"--{opt.long}"] if opt.short else [f"--{opt.long}"]


def ctl_verbs() -> dict[str, tuple[list[str], list[str]]]:
    """verb -> (its --options, its argument words) from the synopses of USAGE."""
    verbs = {}
    for verb, (synopsis, _help) in USAGE.items():
        words = synopsis.split()[1:]
        options = [w.strip("[]") for w in words if w.strip("[]").startswith("--")]
        arguments = [w for w in words if not w.startswith("[")]
        verbs[verb] = (options, arguments)
    return verbs


_HELP_LINE = re.compile(r"^ {2}(?:-\w, | {4})--(?P<long>[\w-]+)(?: \S+)?(?: {2,}(?P<text>.*))?$")
_VARIABLE = re.compile(r"\s+PYINIT_\w+=\S*$")


def descriptions(help_text: str) -> dict[str, str]:
    """long option -> the gist of its description in `--help` (up to `;` or `(`)."""
    found: dict[str, str] = {}
    lines = help_text.splitlines()
    for index, line in enumerate(lines):
        match = _HELP_LINE.match(line)
        if not match:
            continue
        parts = [match["text"] or ""]
        for following in lines[index + 1 :]:
            if not following.startswith(" " * 27):  # the description column
                break
            parts.append(following.strip())
        text = " ".join(_VARIABLE.sub("", part).strip() for part in parts if part)
        found[match["long"]] = re.split(r";|: | \(", text)[0].strip().rstrip(":,.")
    return found


# -- bash -------------------------------------------------------------------------------


def _bash(options: Sequence[Option]) -> str:
    signals = " ".join(signal_names())
    takes_value = " ".join(f for opt in options if opt.parse for f in flags(opt))
    all_flags = " ".join(f for opt in options for f in flags(opt))
    pair_flags = " ".join(f for opt in options if opt.complete == SIGNAL_PAIR for f in flags(opt))
    cases = []
    for opt in options:
        if opt.parse is None:
            continue
        pattern = "|".join(flags(opt))
        cases.append(f"        {pattern}) {_bash_value(opt.complete)} ;;")
    verb_cases = []
    for verb, (verb_options, arguments) in ctl_verbs().items():
        words = " ".join(verb_options)
        signal_at = arguments.index("SIG") + 1 if "SIG" in arguments else 0
        verb_cases.append(f"        {verb}) _pyinit_ctl_args '{words}' {signal_at} ;;")
    return _BASH_TEMPLATE.format(
        signals=signals,
        takes_value=takes_value,
        pair_flags=pair_flags,
        flags=all_flags,
        value_cases="\n".join(cases),
        verbs=" ".join(USAGE),
        verb_cases="\n".join(verb_cases),
    )


def _bash_value(complete: str | tuple[str, ...]) -> str:
    """The bash that fills COMPREPLY for an option's value."""
    if complete == FILE:
        return 'COMPREPLY=($(compgen -f -- "$cur"))'
    if complete == SIGNAL:
        return 'COMPREPLY=($(compgen -W "$_pyinit_signals" -- "$cur"))'
    if complete == SIGNAL_PAIR:
        return "_pyinit_signal_pair"
    if isinstance(complete, tuple) and complete:
        return f'COMPREPLY=($(compgen -W "{" ".join(complete)}" -- "$cur"))'
    return "COMPREPLY=()"


_BASH_TEMPLATE = """\
# bash completion for pyinit; generated by `pyinit --completion bash`.
# In ~/.bashrc:   eval "$(pyinit --completion bash)"
# In an image:    RUN pyinit --completion bash > /etc/bash_completion.d/pyinit

_pyinit_signals="{signals}"

_pyinit_signal_pair() {{
    # SRC:DST. With ':' in COMP_WORDBREAKS (the default) bash splits at it.
    if [[ $prev == : || $cur == *:* ]]; then
        local dst=${{cur#*:}} head=${{cur%%:*}}
        [[ $cur == *:* ]] || head=""
        COMPREPLY=($(compgen -W "0 $_pyinit_signals" -P "${{head:+$head:}}" -- "$dst"))
    else
        compopt -o nospace 2>/dev/null
        COMPREPLY=($(compgen -W "$_pyinit_signals" -S : -- "$cur"))
    fi
}}

_pyinit_ctl_args() {{
    # $1: the verb's options; $2: position of a SIG argument (0: none)
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$1" -- "$cur"))
    elif (( $2 > 0 && COMP_CWORD - verb_at == $2 )); then
        COMPREPLY=($(compgen -W "$_pyinit_signals" -- "$cur"))
    fi
}}

_pyinit_ctl() {{
    local i=$1 verb_at=0
    for (( ; i < COMP_CWORD; i++ )); do
        case ${{COMP_WORDS[i]}} in
            --ctl-socket) (( i++ )) ;;
            -*) ;;
            *) verb_at=$i; break ;;
        esac
    done
    if (( verb_at == 0 )); then
        if [[ $prev == --ctl-socket ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        elif [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--ctl-socket --help" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "{verbs}" -- "$cur"))
        fi
        return
    fi
    case ${{COMP_WORDS[verb_at]}} in
{verb_cases}
    esac
}}

_pyinit() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} i word
    COMPREPLY=()
    if [[ $prev == = ]]; then  # --opt=value: bash split at '='
        prev=${{COMP_WORDS[COMP_CWORD-2]}}
    elif [[ $prev == : ]] && (( COMP_CWORD > 2 )); then  # SRC:DST, split at ':'
        case " {pair_flags} " in
            *" ${{COMP_WORDS[COMP_CWORD-3]}} "*) _pyinit_signal_pair; return ;;
        esac
    fi
    if (( COMP_CWORD > 1 )) && [[ ${{COMP_WORDS[1]}} == ctl ]]; then
        _pyinit_ctl 2
        return
    fi
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word=${{COMP_WORDS[i]}}
        case " {takes_value} " in  # skip its value too (`--opt value`, `--opt=value`)
            *" $word "*) [[ ${{COMP_WORDS[i+1]}} == = ]] && (( i++ )); (( i++ )); continue ;;
        esac
        case $word in
            --) (( i++ )); break ;;
            :) (( i++ )) ;;  # the DST of SRC:DST, split off by bash
            -*) ;;
            *) break ;;
        esac
    done
    if (( i < COMP_CWORD )); then  # COMMAND is at i: what follows is its own
        if declare -F _command_offset >/dev/null; then
            _command_offset $i
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return
    fi
    case $prev in
{value_cases}
        *)
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "{flags}" -- "$cur"))
            elif (( COMP_CWORD == 1 )); then
                COMPREPLY=($(compgen -W ctl -- "$cur") $(compgen -c -- "$cur"))
            else
                COMPREPLY=($(compgen -c -- "$cur"))
            fi
            ;;
    esac
}}

complete -F _pyinit pyinit
"""


# -- zsh --------------------------------------------------------------------------------


def _zsh(options: Sequence[Option], help_text: str) -> str:
    described = descriptions(help_text)
    specs = []
    for opt in options:
        text = _zsh_text(described.get(opt.long, opt.long.replace("-", " ")))
        value = ""
        if opt.parse is not None:
            value = f":{opt.long.replace('-', ' ')}:{_zsh_value(opt.complete)}"
        names = flags(opt)
        if len(names) == 2:
            repeat = "*" if opt.repeat else f"({' '.join(names)})"
            specs.append(f"    '{repeat}'{{{','.join(names)}}}'[{text}]{value}' \\")
        else:
            repeat = "*" if opt.repeat else ""
            specs.append(f"    '{repeat}{names[0]}[{text}]{value}' \\")
    verbs = " ".join(f"'{v}:{_zsh_text(h)}'" for v, (_s, h) in USAGE.items())
    verb_cases = []
    for verb, (verb_options, arguments) in ctl_verbs().items():
        parts = [f"'{o}[{o[2:]}]'" for o in verb_options]
        for position, word in enumerate(arguments, 1):
            action = "_pyinit_signals" if word == "SIG" else " "
            parts.append(f"'{position}:{word.lower()}:{action}'")
        action = f"_arguments {' '.join(parts)}" if parts else "_message 'no more arguments'"
        verb_cases.append(f"                ({verb}) {action} ;;")
    return _ZSH_TEMPLATE.format(
        signals=" ".join(signal_names()),
        specs="\n".join(specs),
        verbs=verbs,
        verb_cases="\n".join(verb_cases),
    )


def _zsh_text(text: str) -> str:
    """Help text safe inside a single-quoted `[...]` spec of _arguments."""
    for old, new in (("'", "'\\''"), ("`", ""), ("[", "("), ("]", ")"), (":", "\\:")):
        text = text.replace(old, new)
    return text


def _zsh_value(complete: str | tuple[str, ...]) -> str:
    if complete == FILE:
        return "_files"
    if complete == SIGNAL:
        return "_pyinit_signals"
    if complete == SIGNAL_PAIR:
        return "_pyinit_signal_pair"
    if isinstance(complete, tuple) and complete:
        return f"({' '.join(complete)})"
    return " "


_ZSH_TEMPLATE = """\
#compdef pyinit
# zsh completion for pyinit; generated by `pyinit --completion zsh`.
# In ~/.zshrc (after compinit):  eval "$(pyinit --completion zsh)"
# Or save it as _pyinit in a directory of $fpath.

_pyinit_signals() {{
    local -a names
    names=({signals})
    compadd -a names
}}

_pyinit_signal_pair() {{
    local -a names
    names=({signals})
    if compset -P '*:'; then
        names=(0 $names)
        compadd -a names
    else
        compadd -S : -a names
    fi
}}

_pyinit_ctl() {{
    local -a verbs
    verbs=({verbs})
    _arguments -C \\
        '--ctl-socket[control socket]:socket:_files' \\
        '(- *)'{{-h,--help}}'[show the verbs]' \\
        '1:verb:->verb' \\
        '*::argument:->argument'
    case $state in
        (verb) _describe -t verbs 'ctl verb' verbs ;;
        (argument)
            case ${{words[1]}} in
{verb_cases}
            esac
            ;;
    esac
}}

_pyinit() {{
    if (( CURRENT > 2 )) && [[ ${{words[2]}} == ctl ]]; then
        shift words
        (( CURRENT-- ))
        _pyinit_ctl
        return
    fi
    local context state state_descr line
    typeset -A opt_args
    _arguments -s -S \\
{specs}
    '1:command:->command' \\
    '*::argument:_normal'
    if [[ $state == command ]]; then
        _alternative 'ctl:pyinit ctl:(ctl)' 'commands:command:_command_names -e'
    fi
}}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _pyinit "$@"
else
    compdef _pyinit pyinit
fi
"""
