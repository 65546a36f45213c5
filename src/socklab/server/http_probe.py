"""A web browser (or curl) pointed at a TCP service port: recognise its request line and
answer with one short HTTP/1.1 page that says what the port speaks, then close.

Only a complete HTTP/1.x request line counts (``GET /path HTTP/1.1`` up to its newline),
or, for a request line longer than the 64 bytes dialect detection reads, a method, a
space and a path with no newline yet: a ``line``-dialect client typing ``get 5`` or
``GET`` is never taken for a browser.
"""

from __future__ import annotations

import re

HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ")
_REQUEST_LINE = re.compile(rb"(?:GET|HEAD|POST) /[\x21-\x7e]* HTTP/1\.[01]\r?\n")
_LONG_START = re.compile(rb"(?:GET|HEAD|POST) /[\x21-\x7e]*\Z")
DETECT_BYTES = 64

EXAMPLES: dict[str, tuple[str, str]] = {
    "exchange": ("json", '{"client_name": "Alice", "client_number": 25}'),
    "text": ("line", "upper hello"),
    "numbers": ("line", "prime 97"),
    "bank": ("line", "help"),
}


def is_http_request(prefix: bytes) -> bool:
    """Whether ``prefix`` (a connection's first bytes) is an HTTP/1.x request."""
    if not prefix.startswith(HTTP_METHODS):
        return False
    if _REQUEST_LINE.match(prefix):
        return True
    return len(prefix) >= DETECT_BYTES and bool(_LONG_START.match(prefix[:DETECT_BYTES]))


def http_reply(prefix: bytes, service: str, host: str, port: int, web_port: int | None) -> bytes:
    """The whole HTTP/1.1 response to the request starting ``prefix``: a plain-text page
    (no body for ``HEAD``), ``Connection: close``."""
    dialect, example = EXAMPLES.get(service, ("line", "help"))
    lines = [
        f"This is socklab's {service} service. Port {port} speaks plain TCP, not HTTP:",
        "json (one object per line), the lab's 64-byte header framing, or lines of text.",
        "",
        f"Try it with nc ({dialect}):",
        f"  nc {host} {port}",
        f"  {example}",
    ]
    if web_port is not None:
        url_host = f"[{host}]" if ":" in host else host
        lines += ["", f"The web UI (ATM, playground, dashboard): http://{url_host}:{web_port}/"]
    body = ("\n".join(lines) + "\n").encode("utf-8")
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if prefix.startswith(b"HEAD ") else head + body
