"""A whole server process's worth of services in a thread: the four TCP services on
port 0 and the web server on port 0, on one event loop, as ``socklab serve`` runs them."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import HOST
from socklab.ledger import LedgerSettings
from socklab.server.runtime import Limits, Listener, new_event_loop
from socklab.services.bank import BankService
from socklab.services.exchange import ExchangeService
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from socklab.web.app import WebServer
from socklab.web.sessions import COOKIE_NAME


@dataclass
class WebStack:
    web: WebServer
    listeners: list[Listener]
    loop: asyncio.AbstractEventLoop
    bank: BankService

    @property
    def port(self) -> int:
        return self.web.port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def call(self, coro_factory, timeout_s: float = 10.0):  # type: ignore[no-untyped-def]
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(timeout_s)

    def balance_cents(self, account: int) -> int:
        async def read() -> int:
            return (await self.bank.ledger.get_account(account)).balance_cents

        return int(self.call(read))


@contextlib.contextmanager
def running_web(
    db_path: Path,
    *,
    fail_rate: float = 0.0,
    fail_mode: str = "reject",
    rng: random.Random | None = None,
    settings: LedgerSettings | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[WebStack]:
    loop = new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    holder: dict[str, Any] = {}
    bank = BankService(
        f"sqlite:///{db_path}",
        fail_rate=fail_rate,
        fail_mode=fail_mode,  # type: ignore[arg-type]
        rng=rng,
        settings=settings,
    )
    services = [ExchangeService("Socklab Server", seed=1), TextService(), NumbersService(), bank]

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            listeners = [Listener(s, HOST, 0, Limits()) for s in services]
            web = WebServer(listeners, HOST, 0, tls=tls)
            for listener in listeners:
                await listener.start()
            await web.start()
            holder["stack"] = WebStack(web, listeners, loop, bank)
            ready.set()
            await stop.wait()
            await web.stop()
            for listener in listeners:
                await listener.stop()

        try:
            loop.run_until_complete(main())
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "web stack did not start"
    assert "stack" in holder, "web stack failed to start"
    try:
        yield holder["stack"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive(), "web stack did not stop"
        loop.close()


@dataclass
class Browserish:
    """A tiny HTTP client that keeps the session cookie and the CSRF token, like the page."""

    port: int
    cookie: str | None = None
    csrf: str | None = None
    set_cookie_headers: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, body: Any = None, *, csrf: str | None = None
    ) -> tuple[int, dict[str, Any] | str, http.client.HTTPResponse]:
        """Raises ``http.client.RemoteDisconnected`` (and other ``OSError``) when the server
        cuts the connection without a reply."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=15)
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = f"{COOKIE_NAME}={self.cookie}"
        token = csrf if csrf is not None else self.csrf
        if token is not None:
            headers["X-CSRF-Token"] = token
        try:
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            self.set_cookie_headers.append(header)
            match = re.match(rf"{COOKIE_NAME}=([^;]+)", header)
            if match:
                self.cookie = match.group(1)
        text = raw.decode("utf-8")
        if response.headers.get_content_type() == "application/json":
            return response.status, json.loads(text), response
        return response.status, text, response

    def open_page(self, path: str = "/") -> str:
        status, html, _ = self.request("GET", path)
        assert status == 200 and isinstance(html, str)
        match = re.search(r'name="csrf-token" content="([^"]+)"', html)
        if match:
            self.csrf = match.group(1)
        return html

    def post(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        status, reply, _ = self.request("POST", path, body, **kwargs)
        return status, reply

    def login(self, account: int = 1, pin: str = "1234") -> dict[str, Any]:
        self.open_page()
        status, reply = self.post("/api/bank/login", {"account": account, "pin": pin})
        assert status == 200, reply
        self.csrf = reply["csrf"]
        return reply  # type: ignore[no-any-return]
