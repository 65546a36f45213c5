"""The web server: aiohttp on the running event loop, beside the TCP listeners.

How this works: ``WebServer`` gets the services this process serves (their listeners) and
answers HTTP with them. The ATM page and the playground post JSON to ``/api/...``; each
call goes through a session of the service (``open_session(...).handle_json(...)``), kept
per browser in ``SessionStore``, exactly as a TCP connection's would be. Every POST needs
the session's CSRF token in ``X-CSRF-Token``. A bank reply lost on purpose
(``--fail-mode lose-reply``: the bank raises ``DropConnection`` after applying) cuts the
browser's HTTP connection too, so the page sees a network failure and retries with the
same idempotency key: the lab's lesson, visible.

A ticker reads the counters once a second for the dashboard (server-sent events on
``/api/events``) and refreshes the bank's statistics; ``/metrics`` reads them at scrape.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from socklab.errors import DropConnection, PeerProtocolError, RequestRejected
from socklab.logs import fn
from socklab.server.counters import ServiceCounters
from socklab.server.runtime import Listener
from socklab.services.base import ConnectionInfo, Service, Session
from socklab.web.backends import BankService
from socklab.web.metrics import Rates, SocklabCollector, Source, listener_source
from socklab.web.sessions import COOKIE_NAME, SessionStore, WebSession

log = logging.getLogger(__name__)

PLAYGROUND_SERVICES = ("exchange", "text", "numbers")
MAX_BODY_BYTES = 64 * 1024
STOP_TIMEOUT_S = 2.0
"""How long a stop waits for the dashboard's ticker to end."""
READY_TIMEOUT_S = 2.0
TICK_S = 1.0
LOG_LINES = 15
STATIC_FILES = {
    "app.js": "text/javascript",
    "dashboard.js": "text/javascript",
    "style.css": "text/css",
}


def asset(name: str) -> str:
    """A file shipped in ``socklab/web/static``."""
    return resources.files("socklab.web").joinpath("static", name).read_text("utf-8")


class LogTail(logging.Handler):
    """The last log lines, in the seeds' format, for the dashboard."""

    def __init__(self, size: int = LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            function = getattr(record, "function", record.funcName)
            self.lines.append(f"[{record.levelname}] [{function}]: {record.getMessage()}")
        except Exception:  # a log line must never break the server
            self.handleError(record)


async def ask(session: Session, request: dict[str, Any]) -> dict[str, Any]:
    """A service session's json reply to ``request``, awaited if need be."""
    reply = session.handle_json(request)
    if isinstance(reply, dict):
        return reply
    return await reply


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status
    )


class WebServer:
    """The HTTP side of one server process."""

    def __init__(
        self,
        listeners: list[Listener],
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        sessions: SessionStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listeners = listeners
        self.services: dict[str, Service] = {lst.service.name: lst.service for lst in listeners}
        self.host = host
        self.port = port
        self.tls = tls
        self.reuse_port = reuse_port
        self.sessions = sessions or SessionStore()
        self.counters = ServiceCounters()
        """The web service's own requests, errors and latencies."""
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self._closing = asyncio.Event()
        self._rates = Rates()
        self.snapshot: dict[str, Any] = {}
        self.bank_stats: dict[str, Any] | None = None
        self.log_tail = LogTail()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SocklabCollector(self.sources, lambda: self.bank_stats))
        self.app = self._build_app()

    # -- life cycle ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._count])
        app.router.add_get("/", self._page("index.html"))
        app.router.add_get("/dashboard", self._page("dashboard.html"))
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_post("/api/bank/{op}", self._bank)
        app.router.add_post("/api/play/{service}", self._play)
        return app

    async def start(self) -> None:
        """Listen; ``port=0`` picks a free port, reported in ``port``. Raises ``OSError``."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(
            runner,
            self.host,
            self.port,
            ssl_context=self.tls,
            reuse_port=self.reuse_port or None,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        logging.getLogger("socklab").addHandler(self.log_tail)
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        scheme = "https" if self.tls is not None else "http"
        log.info(
            "Web server started and listening on %s:%s (%s://%s:%s/)",
            self.host,
            self.port,
            scheme,
            self.host,
            self.port,
            extra=fn("start_server"),
        )

    async def stop(self) -> None:
        """Close the event streams, stop listening, close every browser's sessions."""
        self._closing.set()
        self._tick.set()
        if self._ticker is not None:
            self._ticker.cancel()
            # Bounded: a stop must not hang on a dashboard tick (the ticker only reads).
            await asyncio.wait({self._ticker}, timeout=STOP_TIMEOUT_S)
        logging.getLogger("socklab").removeHandler(self.log_tail)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.sessions.close_all()

    # -- shared helpers ------------------------------------------------------------------

    def sources(self) -> list[Source]:
        """Every service the exporters show: the TCP listeners, then the web itself."""
        web_source = Source("web", self.counters, self._web_connections)
        return [*(listener_source(lst) for lst in self.listeners), web_source]

    def _web_connections(self) -> dict[str, int]:
        server = self._runner.server if self._runner is not None else None
        return {"http": len(server.connections) if server is not None else 0}

    @property
    def bank(self) -> BankService | None:
        service = self.services.get("bank")
        return service if isinstance(service, BankService) else None

    async def _read_bank_stats(self) -> dict[str, Any] | None:
        bank = self.bank
        if bank is None:
            return None
        async with asyncio.timeout(READY_TIMEOUT_S):
            stats = await bank.ledger.stats()
        return stats.to_json()

    async def _tick_forever(self) -> None:
        while True:
            try:
                self.bank_stats = await self._read_bank_stats()
            except Exception:  # the ledger is down or not started: the dashboard says so
                self.bank_stats = None
            self.snapshot = {
                "services": self._rates.snapshot(self.sources(), self._clock()),
                "bank": self.bank_stats,
                "has_bank": self.bank is not None,
                "log": list(self.log_tail.lines),
            }
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()
            await asyncio.sleep(TICK_S)

    @web.middleware
    async def _count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.counters.requests += 1
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.counters.count_error(f"http_{exc.status}")
            raise
        if response.status >= 400:
            self.counters.count_error(f"http_{response.status}")
        if request.path.startswith("/api/bank/"):
            # A fresh connection for every bank call: a browser silently resends a request
            # whose kept-alive connection dies before the reply, and the page would never
            # see (nor show) the failure its idempotency key makes safe to retry.
            response.force_close()
        self.counters.observe(time.perf_counter() - started)
        return response

    def _session(self, request: web.Request) -> WebSession | None:
        return self.sessions.get(request.cookies.get(COOKIE_NAME))

    def _set_cookie(self, request: web.Request, response: web.StreamResponse, token: str) -> None:
        response.set_cookie(
            COOKIE_NAME,
            token,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )

    async def _checked(self, request: web.Request) -> tuple[WebSession, dict[str, Any]]:
        """The request's session and JSON body, after the CSRF check.

        Raises ``HTTPForbidden`` (no session, bad CSRF token) and ``HTTPBadRequest``.
        """
        session = self._session(request)
        if session is None:
            raise web.HTTPForbidden(
                text=json.dumps(
                    {
                        "ok": False,
                        "error": {
                            "code": "session_expired",
                            "message": "your session has expired: reload the page",
                        },
                    }
                ),
                content_type="application/json",
            )
        if not session.is_csrf_valid(request.headers.get("X-CSRF-Token")):
            raise web.HTTPForbidden(
                text=json.dumps(
                    {"ok": False, "error": {"code": "csrf", "message": "missing or bad CSRF token"}}
                ),
                content_type="application/json",
            )
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {"ok": False, "error": {"code": "bad_request", "message": "send a JSON object"}}
                ),
                content_type="application/json",
            )
        return session, body

    # -- pages ---------------------------------------------------------------------------

    def _page(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def page(request: web.Request) -> web.Response:
            session = self._session(request) or self.sessions.create(request.remote or "")
            html = asset(name).replace("{{csrf}}", session.csrf)
            response = web.Response(text=html, content_type="text/html")
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; script-src 'self'; style-src 'self'; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
            )
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Cache-Control"] = "no-store"
            self._set_cookie(request, response, session.token)
            return response

        return page

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(text=asset(name), content_type=STATIC_FILES[name])

    # -- health and metrics --------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        """Ready while the ledger answers (always, in a process without the bank)."""
        try:
            await self._read_bank_stats()
        except Exception as exc:
            return _error(503, "not_ready", f"the ledger does not answer: {type(exc).__name__}")
        return web.json_response({"ok": True, "ledger": self.bank is not None})

    async def _metrics(self, request: web.Request) -> web.Response:
        with contextlib.suppress(Exception):  # metrics still come without the bank's
            self.bank_stats = await self._read_bank_stats()
        body = generate_latest(self.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    # -- the dashboard -------------------------------------------------------------------

    async def _snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        while not self._closing.is_set():
            if self.snapshot:
                try:
                    await response.write(f"data: {json.dumps(self.snapshot)}\n\n".encode())
                except ConnectionError:
                    break
            await self._tick.wait()
        return response

    # -- the ATM -------------------------------------------------------------------------

    async def _bank(self, request: web.Request) -> web.StreamResponse:
        op = request.match_info["op"]
        session, body = await self._checked(request)
        bank = self.bank
        if bank is None:
            return _error(503, "no_bank", "this server does not serve the bank")
        if op == "login":
            return await self._login(request, bank, session, body)
        if op == "logout":
            if session.bank is not None and session.account is not None:
                with contextlib.suppress(RequestRejected):
                    await ask(session.bank, {"op": "logout"})
            session.close()
            return web.json_response({"ok": True})
        if op not in ("balance", "deposit", "withdraw", "transfer", "statement", "stats"):
            return _error(404, "unknown_op", f"unknown bank operation {op[:30]!r}")
        if session.bank is None or session.account is None:
            return _error(401, "not_logged_in", "log in first")
        fields: dict[str, Any] = {k: body[k] for k in ("amount", "to", "key", "limit") if k in body}
        try:
            reply = await ask(session.bank, {"op": op, **fields})
        except DropConnection:
            # The bank applied it and lost the reply: so does the web, for the page to retry.
            log.info(
                "Reply to a web %s for account %s lost on purpose; the connection is cut",
                op,
                session.account,
                extra=fn("handle_client"),
            )
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None
        except RequestRejected as exc:
            return _error(422, exc.code, exc.message)
        return web.json_response({"ok": True, **reply})

    async def _login(
        self, request: web.Request, bank: BankService, session: WebSession, body: dict[str, Any]
    ) -> web.Response:
        session.close()
        client = session.client
        bank_session = bank.open_session(ConnectionInfo(peer=f"web {client}", host=client))
        try:
            reply = await ask(
                bank_session,
                {"op": "login", "account": body.get("account"), "pin": body.get("pin")},
            )
        except RequestRejected as exc:
            bank_session.close()
            return _error(422 if exc.code != "auth_failed" else 401, exc.code, exc.message)
        session.bank = bank_session
        session.account = reply["account"]
        session.name = reply["name"]
        self.sessions.rotate(session)
        response = web.json_response({"ok": True, "csrf": session.csrf, **reply})
        self._set_cookie(request, response, session.token)
        return response

    # -- the playground ------------------------------------------------------------------

    async def _play(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        session, body = await self._checked(request)
        if name not in PLAYGROUND_SERVICES:
            return _error(404, "unknown_service", f"no playground for {name[:30]!r}")
        service = self.services.get(name)
        if service is None:
            return _error(503, "not_served", f"this server does not serve {name}")
        play: Session | None = session.sessions.get(name)
        if play is None:
            info = ConnectionInfo(peer=f"web {session.client}", host=session.client)
            play = session.sessions[name] = service.open_session(info)
        try:
            reply = await ask(play, body)
        except (RequestRejected, PeerProtocolError) as exc:
            return _error(422, exc.code, exc.message)
        return web.json_response({"ok": True, **reply})
