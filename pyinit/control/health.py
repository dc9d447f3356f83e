"""The health port: just enough HTTP/1.0 for a kubelet's httpGet probe.

`GET /healthz` answers 200 while the loop answers; `GET /readyz` answers 200
once every service is ready, else 503; `GET /metrics` is the Prometheus page
(metrics.py), when the supervisor gives a source for it. It is a `Listener`
like the ctl socket (listener.py: non-blocking, one request per connection,
a deadline per client); `http.server` would cost more to import than this
whole module.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pyinit.control import metrics
from pyinit.control.listener import REQUEST_TIMEOUT, ControlError, Listener
from pyinit.control.usage import process_usage

if TYPE_CHECKING:
    from pyinit.control.listener import Controlled
    from pyinit.control.metrics import MetricsSource
    from pyinit.core.logs import Log
    from pyinit.core.loop import Loop

HTTP_LIMIT = 8 * 1024  # bytes of one health request (line + headers)


def parse_health_port(text: str) -> tuple[str, int]:
    """`8080`, `127.0.0.1:8080`, `[::]:8080` -> (address, port); ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]:")
        family = socket.AF_INET6
        if not bracket:
            raise ValueError(f"expected [ADDRESS]:PORT, got {text!r}")
    elif ":" in text:
        address, _, port = text.rpartition(":")
        family = socket.AF_INET
        if ":" in address:
            raise ValueError(f"an IPv6 address goes in brackets, as in [::]:8080; got {text!r}")
    else:
        address, port, family = "", text, socket.AF_INET
    address = address or "0.0.0.0"
    try:
        socket.inet_pton(family, address)
    except OSError:
        raise ValueError(f"not a numeric IP address: {address!r}") from None
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"expected a port from 1 to 65535, got {port!r}")
    return address, int(port)


_HTTP_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _http(
    code: int,
    body: str | bytes,
    head_only: bool = False,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    allow = "Allow: GET, HEAD\r\n" if code == 405 else ""
    head = (
        f"HTTP/1.0 {code} {_HTTP_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\n{allow}Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else data)


class HealthServer(Listener):
    """`GET /healthz` (200 while the loop answers), `/readyz` (200 ready, else 503),
    and `/metrics` when given a `metrics` source (else 404)."""

    what = "health port"
    limit = HTTP_LIMIT

    def __init__(
        self,
        loop: Loop,
        address: str,
        port: int,
        controlled: Controlled,
        log: Log,
        timeout: float = REQUEST_TIMEOUT,
        metrics: MetricsSource | None = None,
    ) -> None:
        self.controlled = controlled
        self.metrics = metrics
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
            sock.bind((address, port))
        except OSError as error:
            sock.close()
            raise ControlError(f"cannot listen on {address}:{port}: {error.strerror}") from None
        self.port: int = sock.getsockname()[1]
        super().__init__(loop, sock, log, timeout)
        log.debug(f"health port listening on {address}:{self.port}")

    def complete(self, data: bytearray) -> bool:
        return b"\r\n\r\n" in data or b"\n\n" in data

    def too_large(self) -> bytes:
        return _http(400, "request too large\n")

    def internal_error(self) -> bytes:
        return _http(503, "internal error\n")

    def respond(self, request: bytes, peer: str) -> bytes:
        words = request.split(b"\n", 1)[0].split()
        if len(words) != 3 or not words[2].startswith(b"HTTP/"):
            return _http(400, "bad request\n")
        method, path = words[0], words[1].split(b"?", 1)[0]
        head = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            return _http(405, "only GET and HEAD\n")
        if path == b"/healthz":
            return _http(200, "ok\n", head)
        if path == b"/readyz":
            ready = self.controlled.is_ready()
            return _http(200 if ready else 503, "ready\n" if ready else "not ready\n", head)
        if path == b"/metrics" and self.metrics is not None:
            return self._metrics(self.metrics, head)
        paths = "/healthz, /readyz or /metrics" if self.metrics else "/healthz or /readyz"
        return _http(404, f"not found: try {paths}\n", head)

    def _metrics(self, source: MetricsSource, head: bool) -> bytes:
        """The Prometheus page, from the supervisor's state as it is now."""
        page = metrics.render(source, lambda pid: process_usage(pid, self.log))
        return _http(200, page, head, metrics.CONTENT_TYPE)
