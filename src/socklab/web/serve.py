"""Running the web server beside the TCP listeners, on the same event loop."""

from __future__ import annotations

import asyncio
import ssl

from socklab.server.runtime import Listener, serve_until
from socklab.web.app import WebServer


async def serve_with_web(
    listeners: list[Listener],
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve ``listeners`` and the web UI until ``stop`` is set (or, with listeners, until
    they have all stopped by themselves). Raises ``OSError`` when a port is taken."""
    web = WebServer(listeners, host, port, tls=tls, reuse_port=reuse_port)
    await web.start()
    for listener in listeners:
        listener.web_port = web.port
    try:
        if listeners:
            await serve_until(listeners, stop)
        else:
            await stop.wait()
    finally:
        await web.stop()
