"""What a service is to the server: a factory of per-connection sessions.

The server decodes bytes into messages (``socklab.wire``) and hands each one to the
connection's ``Session`` through the method for its dialect. A handler returns the reply
(a dict for json, text for lab and line) or an awaitable of it, and raises
``RequestRejected`` for a refused request; the server encodes either. A session never sees
bytes or sockets, so plain values test it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

JsonReply: TypeAlias = dict[str, Any]
MaybeAwaitable: TypeAlias = Any  # T | Awaitable[T]; kept loose so sync handlers stay cheap

DISCONNECT_MESSAGE = "!DISCONNECT"


def _no_stop() -> None:
    return None


def peer_host(peername: Any) -> str:
    """The host of a socket's peer name (``('::1', 5, 0, 0)`` -> ``::1``); ``""`` if none
    (a Unix socket, a closed transport)."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return ""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a session may know of its connection."""

    peer: str
    """The peer's address as the seeds log it, e.g. ``('127.0.0.1', 48528)``."""
    request_stop: Callable[[], None] = field(default=_no_stop)
    """Ask the server to stop this service's listener once in-flight replies are sent."""
    host: str = ""
    """The peer's address without the port (``127.0.0.1``), for per-address limits; empty
    when unknown (then ``peer`` stands in)."""

    @property
    def client(self) -> str:
        """The key of per-address limits: ``host``, else ``peer``."""
        return self.host or self.peer


class Session:
    """One connection's conversation with a service. Subclasses override what they speak."""

    def handle_json(self, request: dict[str, Any]) -> JsonReply | Awaitable[JsonReply]:
        """Answer one json request (``op`` and fields; ``id`` is echoed by the server)."""
        raise NotImplementedError

    def handle_line(self, line: str) -> str | Awaitable[str]:
        """Answer one line of text typed into ``nc``; the server appends the newline."""
        raise NotImplementedError

    def handle_lab(self, payload: str) -> str | Awaitable[str]:
        """Answer one lab frame; the reply is sent raw. Defaults to the line answer."""
        return self.handle_line(payload)

    def farewell(self) -> str:
        """The raw reply to the lab's ``!DISCONNECT``, after which the server closes."""
        return "[DISCONNECTED]"

    def close(self) -> None:
        """The connection is gone; drop any per-connection state."""


class Service:
    """A named service with a default port; ``open_session`` is called once per connection."""

    name: str = "service"
    default_port: int = 0
    display_name: str = ""
    """How the start-up line names the server: ``<display_name> started and listening on ...``."""

    def open_session(self, conn: ConnectionInfo) -> Session:
        raise NotImplementedError

    async def start(self) -> None:
        """Acquire resources (open the ledger) before the listener accepts connections."""

    async def stop(self) -> None:
        """Release resources after the last connection has closed."""
