"""The smallest WSGI app: answers its worker's pid (tests/test_listen.py, gunicorn)."""

import os


def app(environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
