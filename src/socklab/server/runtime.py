"""The asyncio server runtime every service runs on.

How this works: one ``Listener`` per service owns a listening socket and the set of its
live ``Connection``s. A ``Connection`` is an ``asyncio.Protocol`` (callbacks, no task per
connection, which is what keeps it fast): it detects the dialect from the first bytes,
feeds every later chunk to that dialect's sans-I/O decoder, and pumps complete messages
through the service's session. Replies produced synchronously are gathered and written
once per chunk; the first reply that must be awaited (a ledger call) parks the pump in a
task, so replies always leave in request order (json pipelining).

Limits: a maximum message size (in the decoders), an idle timeout, a partial-message
timeout (a watchdog timer per connection), a maximum number of connections in all and
per client address, and a bound on the input bytes a service buffers in all (past it,
the connection holding the most is closed with ``server_busy``). The partial-message
timeout bounds the output side too: a connection that does not read its replies for that
long is aborted, and so is a closing connection whose last replies do not drain in that
time; only time spent waiting for the client counts (not an awaited reply, nor a pause
in reading that the server chose), so a pipelined backlog is never "incomplete".

Fairness: all services share one event loop, so one connection may answer at most
``messages_per_turn`` of its messages, or work for ``turn_budget_s``, in one call of
``_pump``; then it yields (``loop.call_soon``) and every other ready connection runs
before its next slice. Reading from a connection pauses while it does not read its
replies (``pause_writing``) or while its buffered input passes ``input_pause_bytes``, and
resumes once that is answered.

Shutdown, step by step (``Listener.stop``): stop accepting (a connection accepted at that
moment is closed unserved by ``connection_made``); ask every connection to finish the
complete requests it has received and close; wait up to the grace period; abort the rest;
let the replies still in flight on the aborted connections finish, up to
``settle_timeout_s``, and cancel what is left; stop the service (close the ledger) only
then, after the last request that reached it.

Errors: ``_dispatch`` never raises but ``DropConnection``. A failure while producing or
encoding a reply becomes an error reply on its connection, logged once; an awaited reply's
task catches everything, so no bug can leave a connection busy (and its slot taken). The
listener keeps every reply task until it ends: the loop holds tasks only weakly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from socklab.errors import DropConnection, PeerProtocolError, RequestRejected
from socklab.logs import fn, host_port
from socklab.protocol import DEFAULT_PORTS
from socklab.protocol.envelope import check_request_id, error_reply, ok_reply
from socklab.server.counters import ServiceCounters
from socklab.server.http_probe import http_reply, is_http_request
from socklab.server.tls import first_byte_error, start_server_tls
from socklab.services.base import DISCONNECT_MESSAGE, ConnectionInfo, Service, Session, peer_host
from socklab.wire.framing import (
    Dialect,
    JsonDecoder,
    LabDecoder,
    LineDecoder,
    detect_dialect,
    encode_json,
    whole_lab_frame,
)

log = logging.getLogger(__name__)

_PLAIN_REPLIES = frozenset({str, dict})
"""Reply types a session returns synchronously; anything else is awaited."""

INTERNAL_ERROR_MESSAGE = "the server failed to handle this"


_clock = time.perf_counter

TRIM_AFTER_BYTES = 8 << 20
"""A fall of a service's buffered input from its peak past which the heap is trimmed."""


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, which hands free heap pages back to the system (after a
    thousand half-messages are freed, the process would otherwise keep their pages);
    ``None`` on other C libraries."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _find_malloc_trim()


def _is_request(message: Any) -> bool:
    """Whether ``message`` counts as activity for the idle timeout: any json object, a
    line or lab payload with something besides white space in it."""
    return type(message) is dict or (bool(message) and not message.isspace())


def _utf8(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise PeerProtocolError("bad_encoding", "the message is not valid UTF-8") from None


Decoder = JsonDecoder | LabDecoder | LineDecoder


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit of a listener; all configurable from the command line."""

    max_message_bytes: int = 64 * 1024
    idle_timeout_s: float = 300.0
    partial_timeout_s: float = 10.0
    max_connections: int = 10_000
    shutdown_grace_s: float = 10.0
    max_connections_per_ip: int = 512
    """Connections from one client address; a lab behind one NAT shares one address."""
    max_buffered_bytes: int = 32 * 1024 * 1024
    """Input bytes buffered by all the connections of one service together."""
    messages_per_turn: int = 32
    """Messages one connection may answer before the others get a turn."""
    turn_budget_s: float = 0.00025
    """Time one connection may spend answering before the others get a turn."""
    settle_timeout_s: float = 5.0
    """At shutdown, after the grace period: how long the replies still in flight on the
    aborted connections may take to finish before they are cancelled."""

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for limits that cannot work together."""
        if self.max_buffered_bytes < 2 * self.max_message_bytes:
            raise ValueError(
                f"the buffered-bytes bound ({self.max_buffered_bytes}) must be at least twice "
                f"the largest message ({self.max_message_bytes} bytes)"
            )
        if self.max_connections_per_ip < 1 or self.messages_per_turn < 1:
            raise ValueError("connection and message counts must be at least 1")

    @property
    def input_pause_bytes(self) -> int:
        """Buffered input past which reading from one connection pauses: room for at least
        one whole message, so a connection never waits for bytes it stopped reading."""
        return 2 * self.max_message_bytes


def peer_address(peer: Any) -> str:
    """The client address that per-address limits count: the host part of ``peer``."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


def format_peer(peer: Any) -> str:
    """The peer as the seeds log it: ``('127.0.0.1', 48528)``."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str((peer[0], peer[1]))
    return str(peer)


class Listener:
    """One service on one address: accepts connections and owns them until they close."""

    def __init__(
        self,
        service: Service,
        host: str = "127.0.0.1",
        port: int | None = None,
        limits: Limits | None = None,
        *,
        reuse_port: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = service.default_port if port is None else port
        self.limits = limits or Limits()
        self.reuse_port = reuse_port
        self.tls = tls
        """Serve TLS (and only TLS) on this port; see ``socklab.server.tls``."""
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._is_stopping = False
        self._drained = asyncio.Event()
        self.stopped = asyncio.Event()
        self.per_address: dict[str, int] = {}
        self.buffered_bytes = 0
        """Input bytes held by every connection's decoder (see ``Connection._account``)."""
        self._warned: dict[str, tuple[float, int]] = {}
        self._peak_buffered_bytes = 0
        self._trim_handle: asyncio.TimerHandle | None = None
        self.reply_tasks: set[asyncio.Task[None]] = set()
        """Every awaited reply in flight; kept here because the loop keeps tasks only weakly."""
        self.counters = ServiceCounters()
        """Requests, errors and latencies, for ``/metrics`` and the dashboard."""
        self.web_port: int | None = DEFAULT_PORTS.get("web")
        """The web UI's port, named to a browser that opens this TCP port."""

    async def start(self) -> None:
        """Start the service, then listen. ``port=0`` picks a free port, reported in ``port``."""
        await self.service.start()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: Connection(self),
                self.host,
                self.port,
                backlog=4096,
                reuse_port=self.reuse_port or None,
            )
        except BaseException:
            await self.service.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        name = self.service.display_name or f"{self.service.name} server"
        log.info(
            "%s started and listening on %s%s",
            name,
            host_port(self.host, self.port),
            " (TLS)" if self.tls is not None else "",
            extra=fn("start_server"),
        )

    def forget(self, conn: Connection) -> None:
        """``conn`` has closed."""
        if conn in self.connections:
            self.connections.discard(conn)
            left = self.per_address.get(conn.address, 1) - 1
            if left > 0:
                self.per_address[conn.address] = left
            else:
                self.per_address.pop(conn.address, None)
        if self._is_stopping and not self.connections:
            self._drained.set()

    def admit(self, conn: Connection) -> str | None:
        """Count ``conn`` in, or say why it is refused (a limit reached)."""
        if len(self.connections) >= self.limits.max_connections:
            return f"{self.limits.max_connections} connections is the limit"
        count = self.per_address.get(conn.address, 0)
        if count >= self.limits.max_connections_per_ip:
            return (
                f"{self.limits.max_connections_per_ip} connections from {conn.address} "
                "is the limit per address"
            )
        self.connections.add(conn)
        self.per_address[conn.address] = count + 1
        return None

    def warn_rate_limited(self, kind: str, function: str, message: str) -> None:
        """Log ``message`` as a WARNING, at most one of each ``kind`` per second: a flood
        of refused or shed connections must not flood the log too."""
        now = asyncio.get_running_loop().time()
        logged_at, unlogged = self._warned.get(kind, (float("-inf"), 0))
        if now - logged_at < 1.0:
            self._warned[kind] = (logged_at, unlogged + 1)
            return
        self._warned[kind] = (now, 0)
        more = f" ({unlogged} more like it since the last such warning)" if unlogged else ""
        log.warning("%s%s", message, more, extra=fn(function))

    def change_buffered(self, delta: int) -> None:
        """Input buffers grew or shrank by ``delta`` bytes. Once the total has fallen
        ``TRIM_AFTER_BYTES`` below its peak (a burst of half-messages freed), the heap is
        trimmed a second later, once for the whole burst, so the memory returns to the
        system; steady traffic never trims."""
        level = self.buffered_bytes = self.buffered_bytes + delta
        if level > self._peak_buffered_bytes:
            self._peak_buffered_bytes = level
        elif (
            self._peak_buffered_bytes - level >= TRIM_AFTER_BYTES
            and self._trim_handle is None
            and _malloc_trim is not None
        ):
            self._trim_handle = asyncio.get_running_loop().call_later(1.0, self._trim)

    def _trim(self) -> None:
        self._trim_handle = None
        self._peak_buffered_bytes = self.buffered_bytes
        if _malloc_trim is not None:
            _malloc_trim(0)

    def shed_input(self) -> None:
        """Over ``max_buffered_bytes``: close the connections holding the most input bytes
        (each with a ``server_busy`` error) until the service is under its bound."""
        while self.buffered_bytes > self.limits.max_buffered_bytes and self.connections:
            largest = max(self.connections, key=lambda conn: conn.held_bytes)
            if largest.held_bytes == 0:
                return
            largest.refuse_overload()

    def spawn_reply(self, reply: Coroutine[Any, Any, None]) -> None:
        """Run ``reply`` (a connection's awaited reply) in a task kept until it ends."""
        task = asyncio.get_running_loop().create_task(reply)
        self.reply_tasks.add(task)
        task.add_done_callback(self.reply_tasks.discard)

    async def _settle_replies(self) -> None:
        """Wait up to ``settle_timeout_s`` for the replies in flight (a ledger call that
        began finishes, and its outcome is stored), then cancel the rest and wait for them
        as long again: the service is stopped after the last of them."""
        current = asyncio.current_task()
        tasks = {task for task in self.reply_tasks if task is not current}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.limits.settle_timeout_s)
        if not pending:
            return
        log.warning(
            "Cancelling replies still in flight at shutdown: %d",
            len(pending),
            extra=fn("stop_server"),
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=self.limits.settle_timeout_s)

    def request_stop(self) -> None:
        """Stop soon, from inside a request handler: replies in flight are still sent."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self.stop())

    @property
    def is_stopping(self) -> bool:
        """``stop()`` has begun: a connection that arrives now is closed unserved."""
        return self._is_stopping

    async def stop(self) -> None:
        """Graceful stop; safe to call more than once."""
        if self.stopped.is_set():
            return
        if self._stopping is not None and self._stopping is not asyncio.current_task():
            await asyncio.shield(self._stopping)
            return
        # 1. Stop accepting. A connection the loop accepted just before, whose
        # connection_made has not run yet, sees is_stopping and closes unserved.
        self._is_stopping = True
        if self._server is not None:
            self._server.close()
        # 2. Every connection finishes what it has fully received, then closes.
        for conn in list(self.connections):
            conn.begin_close()
        # 3. Wait up to the grace period, 4. then abort the stragglers.
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.limits.shutdown_grace_s)
        for conn in list(self.connections):
            log.warning("Aborting connection %s at shutdown", conn.peer, extra=fn("stop_server"))
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
        # 5. The requests in flight on aborted connections finish (or are cancelled), so
        # a ledger call that began is not cut off by the ledger's closing.
        await self._settle_replies()
        # 6. Release the service's resources (close the ledger): every reply has been
        # written, or its connection aborted and its request finished.
        await self.service.stop()
        log.debug("%s server stopped", self.service.name, extra=fn("stop_server"))
        self.stopped.set()


class Connection(asyncio.Protocol):
    """One client connection: detect, decode, dispatch, encode, write."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.address = "?"
        self.held_bytes = 0
        """Input bytes this connection holds, as counted in ``listener.buffered_bytes``."""
        self.dialect: Dialect | None = None
        self.decoder: Decoder | None = None
        self.session: Session | None = None
        self._is_json = False
        self._is_lab = False
        self._call: Callable[[Any], Any] = self._call_line
        self._encode: Callable[[Any, Any], bytes] = self._encode_line
        self._prefix = b""
        self._is_first_chunk = True  # its first byte says TLS or not
        self._busy = False
        self._write_paused = False
        self._read_paused = False
        self._closing = False
        self._finished = False  # the peer said goodbye: answer nothing more
        self._closed = False
        self._last_request = self.loop.time()
        self._partial_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._pump_handle: asyncio.Handle | None = None
        self._write_paused_at = 0.0  # or when the client last took some of its replies
        self._unsent_bytes = 0

    # -- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peername = transport.get_extra_info("peername")
        self.peer = format_peer(peername)
        self.address = peer_address(peername)
        if self.listener.is_stopping:  # accepted as the listener began to stop: not served
            log.debug(
                "Connection from %s closed: shutting down", self.peer, extra=fn("stop_server")
            )
            self._closed = True
            self.transport.close()
            return
        refusal = self.listener.admit(self)
        if refusal is not None:
            self.listener.warn_rate_limited(
                "refused", "start_server", f"Connection refused from {self.peer}: {refusal}"
            )
            self._closed = True
            self.transport.abort()
            return
        log.debug("Connection accepted from %s", self.peer, extra=fn("start_server"))
        self._arm_watchdog()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.listener.forget(self)
        self._release_input()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        if self.session is not None:
            self.session.close()
        log.debug("Client connection closed", extra=fn("handle_client"))

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        decoder = self.decoder
        if decoder is None:
            if self._is_first_chunk and self._screen_tls(data):
                return
            decoder = self._detect(data)
            if decoder is None:
                self._account()
                return
        elif self._is_lab and not (self._busy or decoder.has_partial):
            # The lab client's usual write is exactly one frame: answer it without buffering.
            payload = whole_lab_frame(data, self.limits.max_message_bytes)
            if payload is not None:
                if _is_request(payload):
                    self._last_request = self.loop.time()
                self._answer_one(payload)
                return
            decoder.feed(data)
        else:
            decoder.feed(data)
        if decoder.buffered_bytes > self.limits.input_pause_bytes:
            self._pause_reading()  # until the slices below bring it under the bound again
        if self._pump_handle is None:  # else a slice is due already: no extra turn
            self._pump()
        if self._closed:
            return
        self._account()
        if self.listener.buffered_bytes > self.limits.max_buffered_bytes:
            self.listener.shed_input()

    def eof_received(self) -> bool:
        if self.decoder is None:
            self._close()
            return False
        self.decoder.feed(b"")
        self._closing = True
        self._pump()
        return True  # keep the transport open to write the last replies; _pump closes it

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_paused_at = self.loop.time()
        self._unsent_bytes = self.transport.get_write_buffer_size() if self.transport else 0
        self._pause_reading()  # resumed only once writing has resumed (see _pump)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()

    # -- detection and pumping ------------------------------------------------------------

    def _screen_tls(self, data: bytes) -> bool:
        """Upgrade to TLS or refuse a client speaking the other way, from the first byte;
        whether ``data`` was dealt with here."""
        self._is_first_chunk = False
        context = self.listener.tls
        refusal = first_byte_error(data[0], is_tls_port=context is not None)
        if refusal is not None:
            self._reject_stream(refusal)
            return True
        if context is None or self.transport is None:
            return False
        self.transport = start_server_tls(
            self,
            self.transport,
            context,
            data,
            timeout_s=self.limits.partial_timeout_s,
            peer=self.peer,
        )
        return True

    def _detect(self, data: bytes) -> Decoder | None:
        prefix = self._prefix + data
        if is_http_request(prefix):  # a browser: say what this port speaks, then close
            self._answer_http(prefix)
            return None
        try:
            dialect = detect_dialect(prefix)
        except PeerProtocolError as exc:
            self._reject_stream(exc)
            return None
        if dialect is None:
            self._prefix = prefix
            self._partial_since = self._partial_since or self.loop.time()
            return None
        self._prefix = b""
        self.dialect = dialect
        limit = self.limits.max_message_bytes
        decoder: Decoder
        # Choose the dialect's functions once, not on every message.
        if dialect is Dialect.JSON:
            decoder = JsonDecoder(limit)
            self._is_json = True
            self._call, self._encode = self._call_json, self._encode_json
        elif dialect is Dialect.LAB:
            decoder = LabDecoder(limit)
            self._is_lab = True
            self._call, self._encode = self._call_lab, self._encode_lab
        else:
            decoder = LineDecoder(limit)
        decoder.feed(prefix)
        self.decoder = decoder
        info = ConnectionInfo(
            peer=self.peer,
            request_stop=self.listener.request_stop,
            host=peer_host(self.transport.get_extra_info("peername") if self.transport else None),
        )
        self.session = self.listener.service.open_session(info)
        log.debug("%s dialect on %s", dialect.value, self.peer, extra=fn("handle_client"))
        return decoder

    def _answer_http(self, prefix: bytes) -> None:
        self._prefix = b""
        if self.transport is None:
            return
        local = self.transport.get_extra_info("sockname")
        host = peer_address(local) if local else self.listener.host
        log.debug("HTTP request from %s answered", self.peer, extra=fn("handle_client"))
        self.transport.write(
            http_reply(
                prefix, self.listener.service.name, host, self.listener.port, self.listener.web_port
            )
        )
        self._close()

    def _pump(self) -> None:
        """Answer the complete messages buffered, unless a reply is being awaited; after a
        turn's budget (``messages_per_turn``, ``turn_budget_s``) the rest waits for the next
        loop turn, so the other connections run in between."""
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        decoder = self.decoder
        if decoder is None or self._closed:
            return
        out: list[bytes] = []
        progressed = False
        is_request = False
        budget = self.limits.messages_per_turn
        deadline = _clock() + self.limits.turn_budget_s
        while not (self._busy or self._write_paused or self._finished):
            if budget <= 0 or _clock() > deadline:
                # Budget spent: the rest next turn, after every other ready callback.
                self._pump_handle = self.loop.call_soon(self._pump)
                break
            budget -= 1
            try:
                message = decoder.next_frame()
            except PeerProtocolError as exc:
                self._log_bad_input(exc)
                out.append(self._error_bytes(None, exc.code, exc.message))
                if exc.fatal:
                    self._flush(out)
                    self._close()
                    return
                continue
            if message is None:
                break
            progressed = True
            if not is_request:
                is_request = _is_request(message)
            try:
                reply = self._dispatch(message)
            except DropConnection:
                self._flush(out)
                self.abort()
                return
            if isinstance(reply, bytes):
                out.append(reply)
            else:
                self._busy = True
                self.listener.spawn_reply(self._finish(reply))
        self._flush(out)
        if is_request:
            self._last_request = self.loop.time()
        if decoder.has_partial:
            if progressed or self._partial_since is None:
                self._partial_since = self.loop.time()
        else:
            self._partial_since = None
        self._account()
        idle = not (self._busy or self._write_paused)
        if self._read_paused and idle and decoder.buffered_bytes <= self.limits.input_pause_bytes:
            self._resume_reading()
        if self._closing and idle and self._pump_handle is None:
            self._close()

    def _answer_one(self, message: Any) -> None:
        """Answer a single message that bypassed the decoder (the lab fast path)."""
        try:
            reply = self._dispatch(message)
        except DropConnection:
            self.abort()
            return
        if type(reply) is bytes:
            self._flush([reply])
        else:
            self._busy = True
            self.listener.spawn_reply(self._finish(reply))  # type: ignore[arg-type]
        if self._closing and not self._busy:
            self._close()

    def _dispatch(self, message: Any) -> bytes | Awaitable[bytes]:
        """Hand one message to the session; the reply as bytes, or an awaitable of them.

        Never raises but ``DropConnection``: a failure while producing or encoding the reply
        becomes an error reply (``_exception_bytes``).
        """
        counters = self.listener.counters
        counters.requests += 1
        started = _clock()
        request_id = None
        if self._is_json:
            try:
                request_id = check_request_id(message.get("id"))
            except PeerProtocolError as exc:
                self._log_bad_input(exc)
                return self._error_bytes(None, exc.code, exc.message)
        try:
            result = self._call(message)
            if type(result) in _PLAIN_REPLIES:
                encoded = self._encode(request_id, result)
                counters.observe(_clock() - started)
                return encoded
        except DropConnection:
            raise
        except Exception as exc:
            return self._exception_bytes(request_id, exc)
        return self._await_reply(request_id, result, started)

    def _call_json(self, message: dict[str, Any]) -> Any:
        assert self.session is not None
        return self.session.handle_json(message)

    def _call_lab(self, message: bytes) -> Any:
        assert self.session is not None
        text = _utf8(message)
        if text == DISCONNECT_MESSAGE:
            self._closing = self._finished = True
            return self.session.farewell()
        return self.session.handle_lab(text)

    def _call_line(self, message: bytes) -> Any:
        assert self.session is not None
        return self.session.handle_line(_utf8(message))

    async def _await_reply(self, request_id: Any, pending: Awaitable[Any], started: float) -> bytes:
        try:
            encoded = self._encode(request_id, await pending)
            self.listener.counters.observe(_clock() - started)
            return encoded
        except DropConnection:
            raise
        except Exception as exc:
            return self._exception_bytes(request_id, exc)

    async def _finish(self, pending: Awaitable[bytes]) -> None:
        """Write an awaited reply, then go on with the messages buffered behind it.

        Whatever happens, the connection is not left busy: a failure here is a bug, logged
        once; the connection, whose state is then unknown, is cut.
        """
        try:
            try:
                reply = await pending
            except DropConnection:
                self.abort()
                return
            self._busy = False
            if not self._closed:
                self._flush([reply])
                self._pump()
        except asyncio.CancelledError:
            self.abort()  # the reply is lost: later replies would come out of order
            raise
        except Exception as exc:
            self._busy = False
            log.error(
                "Internal error while answering %s; closing its connection",
                self.peer,
                exc_info=exc,
                extra=fn("handle_client"),
            )
            self.abort()

    # -- encoding -------------------------------------------------------------------------

    @staticmethod
    def _encode_json(request_id: Any, result: dict[str, Any]) -> bytes:
        return encode_json(ok_reply(request_id, result))  # one dict, one encode

    @staticmethod
    def _encode_lab(request_id: Any, result: str) -> bytes:
        return result.encode("utf-8")

    @staticmethod
    def _encode_line(request_id: Any, result: str) -> bytes:
        return (result + "\n").encode("utf-8")

    def _exception_bytes(self, request_id: Any, exc: Exception) -> bytes:
        if isinstance(exc, RequestRejected):
            return self._error_bytes(request_id, exc.code, exc.message, replayed=exc.replayed)
        if isinstance(exc, PeerProtocolError):
            self._log_bad_input(exc)
            return self._error_bytes(request_id, exc.code, exc.message)
        log.error(
            "Internal error while serving %s", self.peer, exc_info=exc, extra=fn("handle_client")
        )
        return self._error_bytes(request_id, "internal_error", INTERNAL_ERROR_MESSAGE)

    def _error_bytes(
        self, request_id: Any, code: str, message: str, *, replayed: bool = False
    ) -> bytes:
        self.listener.counters.count_error(code)
        try:
            return self._encode_error(request_id, code, message, replayed=replayed)
        except Exception as exc:  # a message a service built from something unsendable
            log.error(
                "Cannot encode the %s error reply to %s",
                code,
                self.peer,
                exc_info=exc,
                extra=fn("handle_client"),
            )
        with contextlib.suppress(Exception):
            return self._encode_error(request_id, "internal_error", INTERNAL_ERROR_MESSAGE)
        return self._encode_error(None, "internal_error", INTERNAL_ERROR_MESSAGE)

    def _encode_error(
        self, request_id: Any, code: str, message: str, *, replayed: bool = False
    ) -> bytes:
        if self._is_json:
            return encode_json(error_reply(request_id, code, message, replayed=replayed))
        return f"ERROR {code}: {message}\n".encode()

    def _log_bad_input(self, exc: PeerProtocolError) -> None:
        log.warning(
            "Bad input from %s: %s (%s)",
            self.peer,
            exc.message,
            exc.code,
            extra=fn("handle_client"),
        )

    # -- writing, closing, timers ---------------------------------------------------------

    def _flush(self, out: list[bytes]) -> None:
        if out and self.transport is not None and not self._closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _reject_stream(self, exc: PeerProtocolError) -> None:
        self._log_bad_input(exc)
        if self.transport is not None:
            self.transport.write(f"ERROR {exc.code}: {exc.message}\n".encode())
        self._close()

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self._closed:
            self._read_paused = False
            self.transport.resume_reading()

    def begin_close(self) -> None:
        """Finish the complete requests received so far, then close (graceful shutdown)."""
        self._closing = True
        if self.decoder is None or (not self._busy and not self._write_paused):
            self._pump()
            if not self._busy and self._pump_handle is None:
                self._close()

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()  # flushes what is buffered, then connection_lost
            if self.transport.get_write_buffer_size():
                # A client that does not read would hold its slot for ever: bound the flush.
                self._drain_timer = self.loop.call_later(
                    self.limits.partial_timeout_s, self._abort_undrained
                )

    def _abort_undrained(self) -> None:
        self.listener.warn_rate_limited(
            "undrained",
            "handle_client",
            f"Aborting connection {self.peer}: its last replies were not read "
            f"within {self.limits.partial_timeout_s:g} s",
        )
        self.abort()

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    def _account(self) -> None:
        """Bring this connection's share of ``listener.buffered_bytes`` up to date."""
        held = len(self._prefix) + (self.decoder.buffered_bytes if self.decoder else 0)
        if held != self.held_bytes:
            self.listener.change_buffered(held - self.held_bytes)
            self.held_bytes = held

    def _release_input(self) -> None:
        """Forget the buffered input (the connection is closing): its memory is freed."""
        if self.held_bytes:
            self.listener.change_buffered(-self.held_bytes)
            self.held_bytes = 0
        self._prefix = b""
        self.decoder = None

    def refuse_overload(self) -> None:
        """Close this connection, which holds the most buffered input of a service over
        its bound, with a ``server_busy`` error."""
        exc = PeerProtocolError(
            "server_busy",
            f"the server's input buffers are full ({self.listener.buffered_bytes} bytes); "
            f"this connection held the most unanswered input ({self.held_bytes} bytes)",
            fatal=True,
        )
        self.listener.warn_rate_limited(
            "shed", "handle_client", f"Bad input from {self.peer}: {exc.message} ({exc.code})"
        )
        if self.transport is not None and not self._closed:
            self.transport.write(self._error_bytes(None, exc.code, exc.message))
        self._close()
        self._release_input()

    def _arm_watchdog(self) -> None:
        interval = max(0.05, min(self.limits.idle_timeout_s, self.limits.partial_timeout_s) / 4)
        self._watchdog = self.loop.call_later(interval, self._watch)

    def _watch(self) -> None:
        if self._closed:
            return
        now = self.loop.time()
        if self._write_paused and self.transport is not None:
            unsent = self.transport.get_write_buffer_size()
            if unsent < self._unsent_bytes:  # it reads, if slowly
                self._write_paused_at = now
            self._unsent_bytes = unsent
        if self._write_paused and now - self._write_paused_at > self.limits.partial_timeout_s:
            # Its replies back up and nothing more is read from it: nothing to wait for.
            self.listener.warn_rate_limited(
                "stalled",
                "handle_client",
                f"Closing connection {self.peer}: it has not read its replies "
                f"for over {self.limits.partial_timeout_s:g} s",
            )
            self.abort()
            return
        if self._partial_since is not None and (
            self._busy or self._read_paused or self._pump_handle is not None
        ):
            # The server holds this connection, not the client: the clock starts again
            # once the server reads and answers again.
            self._partial_since = now
        if (
            self._partial_since is not None
            and now - self._partial_since > self.limits.partial_timeout_s
        ):
            exc = PeerProtocolError(
                "timeout",
                f"incomplete message for over {self.limits.partial_timeout_s:g} s",
                fatal=True,
            )
            self._log_bad_input(exc)
            if self.transport is not None:
                self.transport.write(self._error_bytes(None, exc.code, exc.message))
            self._close()
            return
        if (
            not self._busy
            and self._pump_handle is None
            and now - self._last_request > self.limits.idle_timeout_s
        ):
            log.debug("Closing idle connection %s", self.peer, extra=fn("handle_client"))
            self._close()
            return
        self._arm_watchdog()


async def serve_until(listeners: list[Listener], stop: asyncio.Event) -> None:
    """Run ``listeners`` until ``stop`` is set or every one of them has stopped by itself."""
    started: list[Listener] = []
    try:
        for listener in listeners:
            await listener.start()
            started.append(listener)
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        all_stopped = asyncio.ensure_future(
            asyncio.gather(*(listener.stopped.wait() for listener in listeners))
        )
        waiters.append(all_stopped)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        await asyncio.gather(*(listener.stop() for listener in started))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (``socklab[fast]``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` on a fresh (uv)loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())  # type: ignore[arg-type]
