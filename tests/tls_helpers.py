"""Throwaway certificates (trustme) and a TLS server on its own loop, for the TLS tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from helpers import HOST
from socklab.server.runtime import Limits, Listener, new_event_loop
from socklab.services.base import Service

WAIT_S = 10.0


@dataclass(frozen=True)
class CertFiles:
    """A CA and a certificate for 127.0.0.1 and localhost, as PEM files."""

    ca: str
    cert: str
    key: str


def write_cert_files(ca: trustme.CA, folder: Path) -> CertFiles:
    issued = ca.issue_cert(HOST, "localhost")
    files = CertFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))
    ca.cert_pem.write_to_path(files.ca)
    issued.private_key_pem.write_to_path(files.key)
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(files.cert, append=i > 0)
    return files


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "localhost").configure_cert(context)
    return context


@contextlib.asynccontextmanager
async def serving(
    service: Service, tls: ssl.SSLContext | None, limits: Limits | None = None
) -> AsyncIterator[Listener]:
    """A listener on 127.0.0.1, port 0, on the running loop; stopped on exit."""
    listener = Listener(service, HOST, 0, limits or Limits(), tls=tls)
    await listener.start()
    try:
        yield listener
    finally:
        async with asyncio.timeout(WAIT_S):
            await listener.stop()


@contextlib.contextmanager
def thread_server(service: Service, tls: ssl.SSLContext | None) -> Iterator[int]:
    """A listener on its own loop in a thread, for the blocking clients; yields its port."""
    loop = new_event_loop()
    started: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with serving(service, tls) as listener:
                started.set_result(listener.port)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    async def wait_started() -> int:
        return await started

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(wait_started(), loop).result(WAIT_S)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(WAIT_S)
        loop.close()
