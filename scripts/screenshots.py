"""Take the README's screenshots of the ATM page and the dashboard (docs/img/*.png).

Runs every service on port 0 with a fresh SQLite ledger in a temporary directory, drives
the pages with Playwright on the system's Chromium (``apt-get install chromium``; no
browser is downloaded), makes a little traffic so the dashboard has something to show,
and writes ``docs/img/atm.png`` and ``docs/img/dashboard.png``.

    python scripts/screenshots.py [--out docs/img] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from playwright.sync_api import expect, sync_playwright

from socklab.server.runtime import Listener, new_event_loop
from socklab.services.bank import BankService
from socklab.services.exchange import ExchangeService
from socklab.services.numbers import NumbersService
from socklab.services.text import TextService
from socklab.web.app import WebServer

HOST = "127.0.0.1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start_services(
    db_path: Path,
) -> tuple[WebServer, asyncio.AbstractEventLoop, asyncio.Event, threading.Thread]:
    """Every service and the web server, on one loop in a thread."""
    loop = new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    holder: dict[str, Any] = {}
    services = [
        ExchangeService("Socklab Server", seed=7),
        TextService(),
        NumbersService(),
        BankService(f"sqlite:///{db_path}"),
    ]

    async def main() -> None:
        listeners = [Listener(service, HOST, 0) for service in services]
        for listener in listeners:
            await listener.start()
        web = WebServer(listeners, HOST, 0)
        await web.start()
        for listener in listeners:
            listener.web_port = web.port
        holder["web"] = web
        ready.set()
        await stop.wait()
        await web.stop()
        for listener in listeners:
            await listener.stop()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise SystemExit("the services did not start")
    return holder["web"], loop, stop, thread


def traffic(port: int, line: bytes, done: threading.Event) -> None:
    """One client asking ``line`` over and over (with a pause) until ``done``."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        reader = sock.makefile("rb")
        while not done.wait(0.002):
            sock.sendall(line)
            reader.readline()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO)  # the dashboard shows the last INFO lines
    with tempfile.TemporaryDirectory() as tmp:
        web, loop, stop, thread = start_services(Path(tmp) / "bank.db")
        url = f"http://{HOST}:{web.port}"
        ports = {lst.service.name: lst.port for lst in web.listeners}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True
                )
                page = browser.new_page(viewport={"width": 1000, "height": 1100})
                page.goto(url + "/")
                page.get_by_label("Account number").fill("1")
                page.get_by_label("PIN").fill("1234")
                page.get_by_role("button", name="Log in").click()
                expect(page.locator("#balance")).to_have_text("10000.00")
                page.get_by_label("Amount", exact=True).fill("250.00")
                page.get_by_role("button", name="Deposit").click()
                expect(page.locator("#balance")).to_have_text("10250.00")
                page.get_by_label("To account").fill("2")
                page.get_by_label("Amount to transfer").fill("75.50")
                page.get_by_role("button", name="Transfer").click()
                expect(page.locator("#balance")).to_have_text("10174.50")
                page.get_by_label("Text (lower and upper case)").fill("Hello, lab")
                page.get_by_role("button", name="Convert").click()
                expect(page.locator("#play-result")).to_contain_text("HELLO, LAB")
                page.screenshot(path=str(args.out / "atm.png"), full_page=True)

                dashboard = browser.new_page(viewport={"width": 1000, "height": 900})
                dashboard.goto(url + "/dashboard")
                done = threading.Event()
                clients = [
                    threading.Thread(target=traffic, args=(ports["text"], b"upper hi\n", done)),
                    threading.Thread(target=traffic, args=(ports["numbers"], b"prime 97\n", done)),
                ]
                for client in clients:
                    client.start()
                try:
                    dashboard.wait_for_timeout(8000)  # eight ticks of the chart
                    expect(dashboard.locator("#status")).to_have_text("Live, updated every second")
                    dashboard.screenshot(path=str(args.out / "dashboard.png"), full_page=True)
                finally:
                    done.set()
                    for client in clients:
                        client.join(10)
                browser.close()
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
    print(f"wrote {args.out / 'atm.png'} and {args.out / 'dashboard.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
