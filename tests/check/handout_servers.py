"""The handouts' servers (fixtures in ``handout/``) as real processes on a free port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from helpers import HOST, WAIT_S

HANDOUT = Path(__file__).parent / "handout"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _drain(proc: subprocess.Popen[bytes], listening: threading.Event) -> None:
    """Read the server's output (so that it never blocks on a full pipe); flag "listening"."""
    assert proc.stdout is not None
    with contextlib.suppress(ValueError, OSError):
        for line in iter(proc.stdout.readline, b""):
            if b"istening" in line:
                listening.set()


@contextlib.contextmanager
def handout_server(script: str, seed: int = 1) -> Iterator[int]:
    """Run ``handout/SCRIPT`` (through ``launch.py``, seeded); yield its port; kill it after.

    Ready means it printed its "listening" line (after ``listen()``); a probe connection
    would count as a client (the exchange server dies of an empty one). The handout's
    servers cannot be stopped gently (they loop on ``accept()`` forever, and the number
    server spins on a large prime), so they are killed.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HANDOUT / "launch.py"), script],
        env={
            **os.environ,
            "HANDOUT_PORT": str(port),
            "HANDOUT_SEED": str(seed),
            "PYTHONUNBUFFERED": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=HANDOUT,
    )
    listening = threading.Event()
    reader = threading.Thread(target=_drain, args=(proc, listening), daemon=True)
    reader.start()
    try:
        if not listening.wait(WAIT_S):
            raise AssertionError(f"the handout's {script} did not start")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_S)
        reader.join(WAIT_S)
        assert proc.stdout is not None
        proc.stdout.close()
