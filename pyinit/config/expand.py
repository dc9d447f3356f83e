"""`${VAR}`, `${VAR:-default}` and `$$` in configuration values (issue 11).

Expanded from pyinit's own environment, in every string value of the TOML
file and in the values and commands of PYINIT_SERVICES, before they are
parsed: `grace = "${GRACE:-10}"` is then checked as a duration. At reload
(SIGHUP) the file is read and expanded again, from the environment pyinit
has (its own: a running process's environment does not change from outside).

The grammar is the shell's, cut down to what a configuration needs, as
docker compose does it:

    ${VAR}            VAR's value; VAR unset is an error that names it
    ${VAR:-default}   VAR's value, or `default` when VAR is unset or empty
    $$                one literal `$`
    $ anything else   left as it is: `sh -c 'echo $1'` keeps its `$1`, and
                      the shell's other forms (`${VAR-x}`, `${#VAR}`,
                      `${1}`, `${VAR%.*}`) are left to the shell

VAR is a shell name (letters, digits, `_`, not starting with a digit). A
default is literal text up to the first `}` (no nesting). The result is
parsed as if it had been written in place: a command string is split into
words after expansion (as compose does), so a value with spaces makes
several words unless quoted. Keys, service names and the PYINIT_SERVICES
structure (`;`, `[...]`, `:`) are not expanded, so a value cannot add an
entry or an option.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyinit.config.errors import Invalid


class ExpandError(ValueError):
    """A `${...}` that cannot be expanded; the message says which and why."""


def expand(text: str, environ: Mapping[str, str]) -> str:
    """`text` with its `${VAR}`, `${VAR:-default}` and `$$` replaced."""
    if "$" not in text:
        return text
    out: list[str] = []
    index = 0
    while (dollar := text.find("$", index)) >= 0:
        out.append(text[index:dollar])
        after = text[dollar + 1 : dollar + 2]
        if after == "$":
            out.append("$")
            index = dollar + 2
        elif (
            after == "{"
            and (close := text.find("}", dollar + 2)) >= 0
            and _ours(inner := text[dollar + 2 : close])
        ):
            out.append(_value(inner, environ))
            index = close + 1
        else:
            out.append("$")
            index = dollar + 1
    out.append(text[index:])
    return "".join(out)


def _ours(inner: str) -> bool:
    """Is `${inner}` one of our two forms (else it is the shell's, left alone)?"""
    name, _, _ = inner.partition(":-")
    return bool(name) and name.isascii() and name.isidentifier()


def _value(inner: str, environ: Mapping[str, str]) -> str:
    """What `${inner}` (one of our forms) stands for."""
    name, has_default, default = inner.partition(":-")
    value = environ.get(name)
    if has_default and not value:
        return default
    if value is None:
        raise ExpandError(
            f"${{{name}}}: environment variable {name} is not set"
            f" (give a default with ${{{name}:-...}}, or write $$ for a literal $)"
        )
    return value


def expand_tree(value: object, environ: Mapping[str, str], path: tuple[str, ...] = ()) -> object:
    """Every string in a tomllib document (tables, arrays) expanded; keys are not.

    Raises Invalid(path, message) with the key path of the value, so the
    file's error names file:line and the key.
    """
    if isinstance(value, str):
        try:
            return expand(value, environ)
        except ExpandError as error:
            raise Invalid(path, str(error)) from None
    if isinstance(value, dict):
        return {key: expand_tree(item, environ, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_tree(item, environ, path) for item in value]
    return value
