"""The WSGI twin of http_app.py, for gunicorn: answers `$APP_VERSION <pid>`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable


def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    body = f"{os.environ.get('APP_VERSION', 'v0')} {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
