"""`listen` addresses: the sockets pyinit binds for a service and holds (issue 9).

Text in, frozen data out, no I/O: `parse_listen("tcp:8000")` gives a
`ListenAddress`, or raises ValueError saying what is wrong. The forms:

    tcp:8000                 every IPv4 address, port 8000
    tcp:127.0.0.1:8000       one address
    tcp:[::]:8443            IPv6 (with Linux's default bindv6only=0, IPv4 too)
    udp:5353, udp:[::1]:53   the same for datagrams (bound, no listen())
    unix:/run/app.sock       a socket file (absolute path), with mode and owner
    unix:@name               the abstract namespace: no file, no mode

Addresses are numeric: resolving a name at load would make `--check` and a
reload depend on DNS. `key` is what makes two entries "the same socket": a
reload that keeps a key keeps the socket, whatever else changed (mode and
owner are applied to the file in place).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

KINDS = ("tcp", "udp", "unix")
#: sun_path is 108 bytes with its NUL: a longer path cannot be bound at all.
MAX_UNIX_PATH = 107
#: systemd's SocketMode default: anyone may connect, the directory decides.
DEFAULT_MODE = 0o666


@dataclass(frozen=True)
class ListenAddress:
    """One socket a service serves on. `host`/`port` for tcp and udp, `path` for unix."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    # A unix socket file's permission bits and owner (names or ids; None: pyinit's).
    mode: int = DEFAULT_MODE
    owner: str | None = None
    group: str | None = None

    @property
    def key(self) -> str:
        """The socket's identity: the same key across a reload is the same socket."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"

    @property
    def is_file(self) -> bool:
        """A unix socket with a path on disk (not the abstract namespace)."""
        return self.kind == "unix" and not self.path.startswith("@")

    def details(self) -> str:
        """A socket file's mode and owner, for --check: 'mode 0660, owner app' ('' otherwise)."""
        if not self.is_file:
            return ""
        parts = [f"mode {self.mode:04o}"]
        for label, who in (("owner", self.owner), ("group", self.group)):
            if who is not None:
                parts.append(f"{label} {who}")
        return ", ".join(parts)


def describe_listen(addresses: tuple[ListenAddress, ...]) -> str:
    """'tcp:0.0.0.0:8000 (fd 3), unix:/run/a.sock (fd 4, mode 0660)': what --check shows."""
    parts = []
    for fd, address in enumerate(addresses, 3):
        details = address.details()
        parts.append(f"{address.key} (fd {fd}{', ' + details if details else ''})")
    return ", ".join(parts)


def parse_listen(text: str) -> ListenAddress:
    """'tcp:8000' -> ListenAddress('tcp', '0.0.0.0', 8000); ValueError naming the problem."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(
            f'expected "tcp:[HOST:]PORT", "udp:[HOST:]PORT" or "unix:PATH", got {text[:60]!r}'
        )
    if kind == "unix":
        return ListenAddress(kind, path=_unix_path(rest))
    host, _, port = rest.rpartition(":")
    return ListenAddress(kind, host=_host(host), port=_port(port))


def _unix_path(path: str) -> str:
    if not path.startswith(("/", "@")) or path in ("/", "@"):
        raise ValueError(f"a unix socket needs an absolute path or @name, got {path[:60]!r}")
    if len(path.encode()) > MAX_UNIX_PATH:
        raise ValueError(f"unix socket path longer than {MAX_UNIX_PATH} bytes: {path[:60]!r}...")
    return path


def _host(text: str) -> str:
    if not text:
        return "0.0.0.0"
    bracketed = text.startswith("[") and text.endswith("]")
    inner = text[1:-1] if bracketed else text
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        raise ValueError(
            f"expected a numeric address (0.0.0.0, [::], 127.0.0.1), got {text[:60]!r}"
        ) from None
    if address.version == 6 and not bracketed:
        raise ValueError(f"write an IPv6 address in brackets: [{inner}]")
    return str(address)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {text[:20]!r}")
    return int(text)


def listen_entries(value: object) -> tuple[ListenAddress, ...]:
    """The `listen` value (a string or an array of strings) -> addresses, each once."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError('expected an array of addresses, like ["tcp:8000", "unix:/run/a.sock"]')
    addresses: list[ListenAddress] = []
    for item in items:
        address = parse_listen(item)
        if any(other.key == address.key for other in addresses):
            raise ValueError(f"{address.key} is listed twice")
        addresses.append(address)
    return tuple(addresses)


def parse_mode(value: object) -> int:
    """'0660' or '660' -> 0o660: the permission bits of a socket file.

    A string only: a TOML integer 660 is decimal, and 0o660 cannot be told
    from 432, so a number would be read wrong one way or the other.
    """
    if not isinstance(value, str):
        raise ValueError(f'expected octal permission bits as a string, like "0660", got {value!r}')
    text = value
    if not text or len(text) > 4 or any(c not in "01234567" for c in text):
        raise ValueError(f'expected octal permission bits like "0660", got {text[:20]!r}')
    return int(text, 8)
