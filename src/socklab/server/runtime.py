"""The asyncio server runtime every service runs on.

How this works: one ``Listener`` per service owns a listening socket and the set of its
live ``Connection``s. A ``Connection`` is an ``asyncio.Protocol`` (callbacks, no task per
connection, which is what keeps it fast): it detects the dialect from the first bytes,
feeds every later chunk to that dialect's sans-I/O decoder, and pumps complete messages
through the service's session. Replies produced synchronously are gathered and written
once per chunk; the first reply that must be awaited (a ledger call) parks the pump in a
task, so replies always leave in request order (json pipelining).

Limits: a maximum message size (in the decoders), an idle timeout, a partial-message
timeout (a watchdog timer per connection), a maximum number of connections, and reading
pauses while a client does not read its replies or floods a busy connection.

Shutdown, step by step (``Listener.stop``): stop accepting; ask every connection to finish
the complete requests it has received and close; wait up to the grace period; abort the
rest; stop the service (close the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from socklab.errors import DropConnection, PeerProtocolError, RequestRejected
from socklab.logs import fn
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
    ) -> None:
        self.service = service
        self.host = host
        self.port = service.default_port if port is None else port
        self.limits = limits or Limits()
        self.reuse_port = reuse_port
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._is_stopping = False
        self._drained = asyncio.Event()
        self.stopped = asyncio.Event()

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
            "%s started and listening on %s:%s",
            name,
            self.host,
            self.port,
            extra=fn("start_server"),
        )

    def forget(self, conn: Connection) -> None:
        """``conn`` has closed."""
        self.connections.discard(conn)
        if self._is_stopping and not self.connections:
            self._drained.set()

    def request_stop(self) -> None:
        """Stop soon, from inside a request handler: replies in flight are still sent."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self.stop())

    async def stop(self) -> None:
        """Graceful stop; safe to call more than once."""
        if self.stopped.is_set():
            return
        if self._stopping is not None and self._stopping is not asyncio.current_task():
            await asyncio.shield(self._stopping)
            return
        # 1. Stop accepting.
        if self._server is not None:
            self._server.close()
        # 2. Every connection finishes what it has fully received, then closes.
        self._is_stopping = True
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
        # 5. Release the service's resources.
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
        self.dialect: Dialect | None = None
        self.decoder: Decoder | None = None
        self.session: Session | None = None
        self._is_json = False
        self._is_lab = False
        self._call: Callable[[Any], Any] = self._call_line
        self._encode: Callable[[Any, Any], bytes] = self._encode_line
        self._prefix = b""
        self._busy = False
        self._write_paused = False
        self._read_paused = False
        self._closing = False
        self._finished = False  # the peer said goodbye: answer nothing more
        self._closed = False
        self._last_rx = self.loop.time()
        self._partial_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.peer = format_peer(transport.get_extra_info("peername"))
        listener = self.listener
        if len(listener.connections) >= self.limits.max_connections:
            log.warning(
                "Connection refused from %s: %d connections is the limit",
                self.peer,
                self.limits.max_connections,
                extra=fn("start_server"),
            )
            self._closed = True
            self.transport.abort()
            return
        listener.connections.add(self)
        log.debug("Connection accepted from %s", self.peer, extra=fn("start_server"))
        self._arm_watchdog()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.listener.forget(self)
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.session is not None:
            self.session.close()
        log.debug("Client connection closed", extra=fn("handle_client"))

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.loop.time()
        decoder = self.decoder
        if decoder is None:
            decoder = self._detect(data)
            if decoder is None:
                return
        elif self._is_lab and not (self._busy or self._closed or decoder.has_partial):
            # The lab client's usual write is exactly one frame: answer it without buffering.
            payload = whole_lab_frame(data, self.limits.max_message_bytes)
            if payload is not None:
                self._answer_one(payload)
                return
            decoder.feed(data)
        else:
            decoder.feed(data)
        if self._busy and decoder.buffered_bytes > 2 * self.limits.max_message_bytes:
            self._pause_reading()
        self._pump()

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
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()

    # -- detection and pumping ------------------------------------------------------------

    def _detect(self, data: bytes) -> Decoder | None:
        prefix = self._prefix + data
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

    def _pump(self) -> None:
        """Answer every complete message buffered, unless a reply is being awaited."""
        decoder = self.decoder
        if decoder is None or self._closed:
            return
        out: list[bytes] = []
        progressed = False
        while not (self._busy or self._write_paused or self._finished):
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
                self.loop.create_task(self._finish(reply))
        self._flush(out)
        if decoder.has_partial:
            if progressed or self._partial_since is None:
                self._partial_since = self.loop.time()
        else:
            self._partial_since = None
        if self._read_paused and not self._busy and not self._write_paused:
            self._resume_reading()
        if self._closing and not self._busy and not self._write_paused:
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
            self.loop.create_task(self._finish(reply))  # type: ignore[arg-type]
        if self._closing and not self._busy:
            self._close()

    def _dispatch(self, message: Any) -> bytes | Awaitable[bytes]:
        """Hand one message to the session; the reply as bytes, or an awaitable of them."""
        request_id = message.get("id") if self._is_json else None
        try:
            result = self._call(message)
        except DropConnection:
            raise
        except Exception as exc:
            return self._exception_bytes(request_id, exc)
        if type(result) in _PLAIN_REPLIES:
            return self._encode(request_id, result)
        return self._await_reply(request_id, result)

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

    async def _await_reply(self, request_id: Any, pending: Awaitable[Any]) -> bytes:
        try:
            result = await pending
        except DropConnection:
            raise
        except Exception as exc:
            return self._exception_bytes(request_id, exc)
        return self._encode(request_id, result)

    async def _finish(self, pending: Awaitable[bytes]) -> None:
        try:
            reply = await pending
        except DropConnection:
            self.abort()
            return
        self._busy = False
        if not self._closed:
            self._flush([reply])
            self._pump()

    # -- encoding -------------------------------------------------------------------------

    @staticmethod
    def _encode_json(request_id: Any, result: dict[str, Any]) -> bytes:
        reply = {"id": request_id, "ok": True} if request_id is not None else {"ok": True}
        reply.update(result)
        return encode_json(reply)

    @staticmethod
    def _encode_lab(request_id: Any, result: str) -> bytes:
        return result.encode("utf-8")

    @staticmethod
    def _encode_line(request_id: Any, result: str) -> bytes:
        return (result + "\n").encode("utf-8")

    def _exception_bytes(self, request_id: Any, exc: Exception) -> bytes:
        if isinstance(exc, RequestRejected):
            return self._error_bytes(request_id, exc.code, exc.message)
        if isinstance(exc, PeerProtocolError):
            self._log_bad_input(exc)
            return self._error_bytes(request_id, exc.code, exc.message)
        log.error(
            "Internal error while serving %s", self.peer, exc_info=exc, extra=fn("handle_client")
        )
        return self._error_bytes(request_id, "internal_error", "the server failed to handle this")

    def _error_bytes(self, request_id: Any, code: str, message: str) -> bytes:
        if self._is_json:
            error = {"ok": False, "error": {"code": code, "message": message}}
            if request_id is not None:
                error = {"id": request_id, **error}
            return encode_json(error)
        text = f"ERROR {code}: {message}"
        return (text + "\n").encode("utf-8")

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
            if not self._busy:
                self._close()

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()  # flushes what is buffered, then connection_lost

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    def _arm_watchdog(self) -> None:
        interval = max(0.05, min(self.limits.idle_timeout_s, self.limits.partial_timeout_s) / 4)
        self._watchdog = self.loop.call_later(interval, self._watch)

    def _watch(self) -> None:
        if self._closed:
            return
        now = self.loop.time()
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
        if not self._busy and now - self._last_rx > self.limits.idle_timeout_s:
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
