"""Adversarial checks against real ``socklab serve`` processes: a fuzzer and attack scripts.

    python benchmarks/adversarial.py                          # every scenario, modest sizes
    python benchmarks/adversarial.py fuzz --seed 7 --frames 1000000 --json fuzz.json
    python benchmarks/adversarial.py slowloris --slowloris 1000
    python benchmarks/adversarial.py chaos --chaos-seconds 60 --backends sqlite postgres

Every scenario starts its own servers (``python -m socklab serve SERVICE --port P``) as
real processes on free ports, attacks them from raw sockets, and judges them only by what
a client can observe plus two things read from ``/proc`` (Linux): the server's open
socket descriptors (a connection slot the server still holds after every client has
gone is a leak) and its resident memory. Everything random comes from ``--seed``.

Scenarios (see docs/reliability.md for the promises they check):

- fuzz: every service (exchange, text, numbers, bank) x dialect (json, lab, line):
  mutated valid frames (bit flips, truncation, splicing, huge lengths, lone surrogates,
  NaN and oversized ids, deep nesting, bad lab headers, ...) and random bytes. After each
  batch: the server is alive, answers a fresh well-formed request on every service, and
  holds no socket beyond its listeners once the fuzz connections are closed. The exchange
  server runs with ``--on-out-of-range reject`` (its default ends the server on purpose).
- slowloris: N connections dripping a byte every few seconds (an unfinished message, a
  blank line, or a 60 KB half-message then drips); the server must close every one of
  them and keep answering a victim client (from another source address).
- flood: more connections than ``--max-connections``; the excess is refused at once, the
  server never holds more than the limit, and after the flood it holds nothing.
- never-readers: clients that pipeline requests and never read their replies; the server
  must stop reading from them (their sends stall), keep answering a victim, and keep its
  memory bounded.
- pipeline-flood: one client keeps ``--depth`` requests in flight in one dialect while a
  victim on another connection sends one request at a time; the target is the victim's
  p99 under 10 ms and within 3x its unloaded p99, and the flooder still served.
- chaos: a Jepsen-style bank run. ATM clients (threads, ``BankClient``) do keyed deposits,
  withdrawals and transfers, retrying with the same idempotency key, while a loop kills
  the server with SIGKILL (and, with ``--workers 2`` on PostgreSQL, single workers) and
  restarts it. At the end every operation is sent once more with its own key (a replay
  must return the recorded posting), the books are checked with ``socklab bank verify``,
  and each balance is compared with the one re-derived from the clients' own records of
  acknowledged outcomes. Reports operations, kills, lost and doubled.

Exit status: 0 when every scenario met its promises, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness  # the sibling benchmarks/harness.py: ports, waiting, processes
from harness import HOST, connectable, free_port, wait_until

VICTIM_HOST = "127.0.0.2"  # another source address: a per-address limit must not hit it
SERVICES = ("exchange", "text", "numbers", "bank")
DIALECTS = ("json", "lab", "line")
SCENARIOS = ("fuzz", "slowloris", "flood", "never-readers", "pipeline-flood", "chaos")
LAB_HEADER = 64
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

# -- servers -----------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Allow thousands of sockets here and in the servers started from here."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
ERROR_MARKS = ("Traceback", "[ERROR]", "Task exception was never retrieved", '"level": "ERROR"')


class Server:
    """``socklab serve SERVICE --port P ...`` in its own process group, watched from /proc."""

    def __init__(self, service: str, extra: Sequence[str] = (), port: int | None = None) -> None:
        self.service = service
        self.extra = list(extra)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.error_lines = 0
        self.error_samples: list[str] = []
        """The first line of each kind of error."""
        self.error_kinds: dict[str, int] = {}
        self.lines = 0
        self.tail: list[str] = []
        self._in_traceback = False
        self._traceback: list[str] = []
        self._ending: str | None = None
        self._chained = False
        self.tracebacks: list[str] = []
        """The whole traceback of the first error of each kind (a few)."""
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "socklab", "serve", self.service, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "-q", *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # kill -9 of the whole group (supervisor and workers)
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc,), daemon=True)
        self._reader.start()
        if not wait_until(lambda: self.is_alive() and connectable(self.port), timeout_s):
            raise RuntimeError(f"{self.service} did not start: {' | '.join(self.tail[-10:])}")

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        """Read the server's log; count its errors, a chained traceback as one."""
        assert proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            for raw in iter(proc.stderr.readline, b""):
                self._read_line(raw.decode("utf-8", "replace").rstrip())
        if self._ending is not None:
            self._end_traceback()

    def _read_line(self, line: str) -> None:
        self.lines += 1
        self.tail = [*self.tail[-49:], line]
        if self._ending is not None:  # a traceback ended: is another chained to it?
            if not line:
                return
            if line.startswith(CHAINED):
                self._ending, self._chained = None, True
                return
            self._end_traceback()
        if self._in_traceback:
            self._traceback.append(line)
            if line and not line.startswith(" "):
                self._in_traceback = False
                self._ending = line  # the exception that ends a traceback
            return
        if any(mark in line for mark in ERROR_MARKS):
            self._in_traceback = line.startswith("Traceback")
            if self._in_traceback and self._chained:
                self._chained = False
                self._traceback.append(line)
                return
            self.error_lines += 1
            self._traceback = [line]
            if not self._in_traceback:
                self._sample(line)

    def _end_traceback(self) -> None:
        assert self._ending is not None
        if self._sample(self._ending) and len(self.tracebacks) < 10:
            self.tracebacks.append("\n".join(self._traceback[-60:]))
        self._ending = None

    def exit_status(self) -> str:
        return f"status {self.proc.returncode}" if self.proc is not None else "not started"

    def _sample(self, line: str) -> bool:
        """Count distinct errors (the same message with other numbers is the same kind);
        whether this is a new kind."""
        kind = re.sub(r"\d+", "N", line)[:200]
        new = kind not in self.error_kinds
        if new:
            self.error_samples.append(line[:300])
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        return new

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[int]:
        """The server's pid and its descendants' (workers; numbers' pool)."""
        return harness.process_tree(self.pid)

    def workers(self) -> list[int]:
        """The live children (a killed worker stays a zombie until it is reaped)."""
        live = []
        for pid in harness.children(self.pid):
            fields = harness.stat_fields(pid)
            if fields is not None and fields[0] != "Z":
                live.append(pid)
        return live

    def sockets(self) -> int:
        """Open socket descriptors of the server and its children (listeners included)."""
        total = 0
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                            total += 1
        return total

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def kill(self) -> None:
        """SIGKILL to the whole process group."""
        if self.proc is not None:
            harness.kill_process(self.proc, group=True)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (and to leftover workers); the exit
        status."""
        if self.proc is None:
            return None
        harness.stop_process(self.proc, timeout_s, group=True)
        if self._reader is not None:
            self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(service: str, extra: Sequence[str] = ()) -> Iterator[Server]:
    server = Server(service, extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def baseline_sockets(server: Server, service: str) -> int:
    """The server's sockets at rest, after one well-formed request (listeners and such)."""
    probe(server.port, service)
    samples = []
    for _ in range(10):  # the probe's socket closes a moment after the probe returns
        samples.append(server.sockets())
        time.sleep(0.05)
    return min(samples)


def settled_sockets(server: Server, baseline: int, timeout_s: float) -> int:
    """Sockets above ``baseline`` once they stop dropping (0 unless some are held)."""
    wait_until(lambda: server.sockets() <= baseline, timeout_s)
    return max(0, server.sockets() - baseline)


# -- well-formed requests ----------------------------------------------------------------

PROBES: dict[str, dict[str, Any]] = {
    "exchange": {"op": "exchange", "client_name": "probe", "client_number": 7},
    "text": {"op": "convert", "text": "Probe"},
    "numbers": {"op": "check", "number": 97},
    "bank": {"op": "stats"},
}


def probe(port: int, service: str, timeout_s: float = 5.0, source: str | None = None) -> bool:
    """A fresh connection gets a well-formed answer to a well-formed json request."""
    request = {**PROBES[service], "id": "probe"}
    try:
        with socket.create_connection(
            (HOST, port), timeout=timeout_s, source_address=(source, 0) if source else None
        ) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return False
                data += chunk
        reply = json.loads(data)
    except (OSError, ValueError):
        return False
    return isinstance(reply, dict) and reply.get("ok") is True and reply.get("id") == "probe"


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the fuzzer --------------------------------------------------------------------------

WORDS = ["hello", "Straße", "ǅ", "ﬃ" * 40, "İ", "\u0000", "\u202e", "a b c", "", "é" * 300]


def valid_payloads(service: str, rng: random.Random) -> tuple[dict[str, Any], str]:
    """One well-formed request of ``service``: its json object and its line/lab text."""
    n = rng.randint(1, 100)
    if service == "exchange":
        name = rng.choice(["Alice", "Bob", "Ω", "x" * 100])
        return {"op": "exchange", "client_name": name, "client_number": n}, f"{name} {n}"
    if service == "text":
        text = rng.choice(WORDS)
        return {"op": "convert", "text": text}, text
    if service == "numbers":
        number = rng.choice([0, 1, 97, 121, -121, 2**61 - 1, 10**40 + 1, rng.randint(0, 10**9)])
        op = rng.choice(["check", "prime", "palindrome"])
        line = str(number) if op == "check" else f"{op} {number}"
        return {"op": op, "number": rng.choice([number, str(number)])}, line
    # bank: logins are slow on purpose (scrypt), so they are rare here
    roll = rng.random()
    if roll < 0.02:
        account = rng.randint(1, 3)
        return {"op": "login", "account": account, "pin": "1234"}, rng.choice(
            [f"login {account} 1234", f"{account}1234"]
        )
    amount = rng.choice(["5", "12.50", "0.01", "1000000.00", "99999999999999999999"])
    op = rng.choice(["stats", "balance", "help", "deposit", "withdraw", "transfer", "statement"])
    message: dict[str, Any] = {"op": op}
    if op in ("deposit", "withdraw", "transfer"):
        message.update(amount=amount, key=f"fuzz-{rng.getrandbits(48):x}")
        if op == "transfer":
            message["to"] = rng.randint(1, 3)
    line = {"transfer": f"transfer 2 {amount}", "deposit": f"deposit {amount}"}.get(op, op)
    return message, rng.choice([line, f"1234{rng.randint(1, 4)}"])


ODD_IDS: list[str] = [
    '"\\ud800"',  # a lone surrogate
    '"\\udc80x"',
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "1" * 500,
    '"' + "i" * 200 + '"',
    "[1,[2,[3]]]",
    '{"a":{"b":null}}',
    "true",
    "null",
    "-0",
    "0.5",
]
ODD_VALUES: list[str] = [
    '"\\ud800"',
    '"\\udfff\\ud800"',
    "NaN",
    "1e400",
    "-1",
    "0",
    "9" * 400,
    '"' + "9" * 12000 + '"',
    "[]",
    "{}",
    "null",
    "true",
    '"\\u0000"',
    '"' + "ﬃ" * 3000 + '"',
]
BAD_HEADERS = [b"5\x00", b"-5", b"+5", b"0x10", b"5 5", b"\xd9\xa3", b"1e3", b" ", b"99999999999"]


KNOWN_BAD: dict[str, list[list[bytes]]] = {
    # Connections (lists of json requests) that once broke a server; each request must get
    # one reply line. Sent first in every fuzz run.
    "exchange": [[b'{"op":"exchange","client_name":"\\ud800","client_number":5,"id":1}\n']],
    "text": [[b'{"op":"convert","text":"\\udc80","id":1}\n', b'{"op":"convert","text":"a"}\n']],
    "numbers": [[b'{"op":"check","number":97,"id":"\\ud800"}\n', b'{"op":"check","number":7}\n']],
    "bank": [[b'{"op":"stats","id":"\\ud800"}\n'], [b'{"op":"stats","id":NaN}\n']],
}


def strict_json_lines(data: bytes) -> int:
    """How many lines of ``data`` are JSON objects (strict: no NaN or Infinity)."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    count = 0
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            count += isinstance(json.loads(line, parse_constant=refuse), dict)
    return count


def known_bad(port: int, frames: list[bytes], timeout_s: float) -> tuple[int, bool]:
    """Send ``frames``, half-close, read until the server closes: (requests without a
    well-formed reply, closed)."""
    replies = b""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(b"".join(frames))
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                replies += chunk
    except TimeoutError:
        return max(0, len(frames) - strict_json_lines(replies)), False
    except OSError:
        pass
    return max(0, len(frames) - strict_json_lines(replies)), True


class Mutator:
    """Turns one well-formed frame into a hostile one, reproducibly from its ``rng``."""

    def __init__(self, rng: random.Random, max_message_bytes: int) -> None:
        self.rng = rng
        self.max_message_bytes = max_message_bytes

    def frame(self, service: str, dialect: str) -> bytes:
        """A frame: about half well-formed, the rest mutated or random."""
        rng = self.rng
        obj, text = valid_payloads(service, rng)
        roll = rng.random()
        if dialect == "json":
            if roll < 0.45:
                obj["id"] = rng.randint(0, 1 << 40)
                return json.dumps(obj).encode() + b"\n"
            if roll < 0.7:
                return self.odd_json(obj)
        elif dialect == "line":
            if roll < 0.45:
                return text.encode("utf-8", "surrogatepass") + b"\n"
        elif roll < 0.45:
            payload = text.encode("utf-8", "surrogatepass")
            return f"{len(payload):<{LAB_HEADER}}".encode() + payload
        if roll < 0.8:
            return self.mutate(self.encode(dialect, obj, text))
        if roll < 0.9:
            return self.special(dialect, obj, text)
        return rng.randbytes(rng.randint(1, 200))

    @staticmethod
    def encode(dialect: str, obj: dict[str, Any], text: str) -> bytes:
        if dialect == "json":
            return json.dumps(obj).encode() + b"\n"
        payload = text.encode("utf-8", "surrogatepass")
        if dialect == "line":
            return payload + b"\n"
        return f"{len(payload):<{LAB_HEADER}}".encode() + payload

    def odd_json(self, obj: dict[str, Any]) -> bytes:
        """Valid-looking JSON with hostile values: ids, field values, nesting, types."""
        rng = self.rng
        body = json.dumps(obj)[1:-1]
        choice = rng.randrange(5)
        if choice == 0:
            return f'{{{body}, "id": {rng.choice(ODD_IDS)}}}\n'.encode()
        if choice == 1:
            key = rng.choice([*obj.keys(), "op", "id", "text", "number", "amount", "pin"])
            return f'{{{body}, "{key}": {rng.choice(ODD_VALUES)}}}\n'.encode()
        if choice == 2:
            depth = rng.choice([50, 1000, 100_000 // 2])
            return f'{{{body}, "x": {"[" * depth}{"]" * depth}}}\n'.encode()
        if choice == 3:
            return b'{"op": ' + rng.choice([b"1", b"null", b'"\\ud800"', b"[]", b'""']) + b"}\n"
        return f'{{{body}, "id": {rng.choice(ODD_IDS)}, "id": 1}}\n'.encode()

    def mutate(self, frame: bytes) -> bytes:
        rng = self.rng
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(7)
            if kind == 0 and data:  # bit flips
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            elif kind == 1 and data:  # truncation
                del data[rng.randrange(len(data)) :]
            elif kind == 2:  # insert odd bytes: invalid UTF-8, encoded surrogates, NUL, CR
                snippet = rng.choice([b"\xed\xa0\x80", b"\xff", b"\x00", b"\r", b"\n", b"{", b"}"])
                data[rng.randint(0, len(data)) : rng.randint(0, len(data))] = snippet
            elif kind == 3 and data:  # splice with itself
                cut = rng.randrange(len(data))
                data = data[:cut] + data[rng.randrange(len(data)) :]
            elif kind == 4 and data:  # delete a byte
                del data[rng.randrange(len(data))]
            elif kind == 5:  # duplicate
                data = data + data[: rng.randint(0, len(data))]
            else:  # random bytes in the middle
                i = rng.randint(0, len(data))
                data[i:i] = rng.randbytes(rng.randint(1, 8))
        return bytes(data)

    def special(self, dialect: str, obj: dict[str, Any], text: str) -> bytes:
        """Size and header attacks: huge lengths, bad headers, oversize and lone CRs."""
        rng = self.rng
        limit = self.max_message_bytes
        if dialect == "lab":
            header = rng.choice([*BAD_HEADERS, str(limit + 1).encode(), str(limit).encode()])
            body = rng.randbytes(rng.randint(0, 100))
            return header.ljust(LAB_HEADER, b" ")[:LAB_HEADER] + body
        if dialect == "line":
            if rng.random() < 0.5:
                return b"x" * (limit + rng.randint(1, 100)) + b"\n"
            return b"\r\n" * rng.randint(1, 50)
        if rng.random() < 0.5:
            return b'{"op": "convert", "text": "' + b"a" * (limit + 10) + b'"}\n'
        return json.dumps(obj).encode() * rng.randint(2, 20)  # objects with no newline


@dataclass
class FuzzResult:
    seed: int
    frames: int = 0
    bytes_sent: int = 0
    connections: int = 0
    batches: int = 0
    crashes: int = 0
    """Server processes that exited on their own (each is restarted)."""
    failed_probes: int = 0
    """Well-formed requests on a fresh connection that got no good answer after a batch."""
    missing_replies: int = 0
    """Requests that once broke a server (``KNOWN_BAD``) and got no well-formed reply."""
    unclosed: int = 0
    """Fuzz connections the server did not close within the timeout after the client's
    half-close (every reply read meanwhile)."""
    leaked_slots: int = 0
    """Sockets the servers (all four together) still held after every fuzz connection of a
    batch had closed: the most seen after any batch."""
    error_lines: int = 0
    """ERROR lines and tracebacks in the servers' logs."""
    error_samples: list[str] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)
    """How often each kind of error was logged (numbers replaced by N)."""
    tracebacks: list[str] = field(default_factory=list)
    by_pair: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.crashes
            or self.failed_probes
            or self.missing_replies
            or self.unclosed
            or self.leaked_slots
            or self.error_lines
        )


FUZZ_EXTRA = {"exchange": ["--on-out-of-range", "reject", "--seed", "1"]}


async def fuzz_connection(
    port: int, frames: list[bytes], ending: str, timeout_s: float
) -> tuple[int, bool]:
    """Send ``frames`` on one connection and end it as told; (bytes sent, closed properly).

    ``ending``: ``eof`` (half-close, read every reply until the server closes),
    ``close`` (close without reading) or ``reset`` (abortive close).
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout_s)
    except (OSError, TimeoutError):
        return 0, True  # refused or reset at once: nothing held
    sent = 0
    try:
        for frame in frames:
            writer.write(frame)
            sent += len(frame)
        await asyncio.wait_for(writer.drain(), timeout_s)
        if ending == "eof":
            writer.write_eof()
            try:
                async with asyncio.timeout(timeout_s):
                    while await reader.read(65536):
                        pass
            except TimeoutError:
                return sent, False
        elif ending == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    except (OSError, TimeoutError):
        pass  # the server closed on us: a fatal error in the stream, fine
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)
    return sent, True


async def fuzz_batch(
    servers: dict[str, Server],
    mutator: Mutator,
    frames_per_conn: int,
    conns_per_pair: int,
    timeout_s: float,
    result: FuzzResult,
) -> None:
    rng = mutator.rng
    jobs = []
    for service, server in servers.items():
        for dialect in DIALECTS:
            for _ in range(conns_per_pair):
                if rng.random() < 0.05:  # detection fuzz: random bytes from the first byte
                    frames = [rng.randbytes(rng.randint(1, 300))]
                else:
                    obj, text = valid_payloads(service, rng)
                    first = Mutator.encode(dialect, obj, text)  # picks the dialect
                    count = rng.randint(1, 2 * frames_per_conn)
                    frames = [first] + [mutator.frame(service, dialect) for _ in range(count)]
                ending = rng.choices(["eof", "close", "reset"], [0.7, 0.15, 0.15])[0]
                pair = f"{service}/{dialect}"
                result.by_pair[pair] = result.by_pair.get(pair, 0) + len(frames)
                result.frames += len(frames)
                jobs.append(fuzz_connection(server.port, frames, ending, timeout_s))
    for sent, closed in await asyncio.gather(*jobs):
        result.bytes_sent += sent
        result.connections += 1
        result.unclosed += not closed


def run_fuzz(
    seed: int,
    frames: int,
    *,
    frames_per_conn: int = 40,
    conns_per_pair: int = 8,
    timeout_s: float = 15.0,
    settle_s: float = 5.0,
    max_message_bytes: int = 65536,
    log: Callable[[str], None] = print,
) -> FuzzResult:
    """Fuzz every service x dialect with at least ``frames`` frames; see the module doc."""
    result = FuzzResult(seed=seed)
    rng = random.Random(seed)
    mutator = Mutator(rng, max_message_bytes)
    started = time.monotonic()
    servers: dict[str, Server] = {}
    tmp = tempfile.TemporaryDirectory(prefix="socklab-fuzz-")
    try:
        for service in SERVICES:
            extra = list(FUZZ_EXTRA.get(service, []))
            extra += ["--max-message-bytes", str(max_message_bytes)]
            if service == "bank":
                extra += ["--db", f"sqlite:///{Path(tmp.name) / 'fuzz.db'}"]
            servers[service] = Server(service, extra)
            servers[service].start()
        baselines = {name: baseline_sockets(server, name) for name, server in servers.items()}
        for name, server in servers.items():
            for frames_of_one in KNOWN_BAD[name]:
                missing, closed = known_bad(server.port, frames_of_one, timeout_s)
                result.frames += len(frames_of_one)
                result.connections += 1
                result.missing_replies += missing
                result.unclosed += not closed
        while result.frames < frames:
            asyncio.run(
                fuzz_batch(servers, mutator, frames_per_conn, conns_per_pair, timeout_s, result)
            )
            result.batches += 1
            held = 0
            for name, server in servers.items():
                if not server.is_alive():
                    result.crashes += 1
                    log(f"fuzz: {name} died ({server.exit_status()}); restarting it")
                    server.start()
                    baselines[name] = baseline_sockets(server, name)
                    continue
                if not probe(server.port, name, timeout_s):
                    result.failed_probes += 1
                held += settled_sockets(server, baselines[name], settle_s)
            result.leaked_slots = max(result.leaked_slots, held)
            if result.batches % 10 == 0:
                log(f"fuzz: {result.frames} frames, {result.connections} connections")
    finally:
        for server in servers.values():
            server.stop()
            result.error_lines += server.error_lines
            result.error_samples += server.error_samples[: 20 - len(result.error_samples)]
            result.tracebacks += server.tracebacks[: 10 - len(result.tracebacks)]
            for kind, count in server.error_kinds.items():
                key = f"{server.service}: {kind}"
                result.error_kinds[key] = result.error_kinds.get(key, 0) + count
        tmp.cleanup()
    result.seconds = round(time.monotonic() - started, 1)
    return result


# -- slowloris, half-messages ------------------------------------------------------------


@dataclass
class SlowlorisResult:
    connections: int
    modes: list[str]
    interval_s: float
    partial_timeout_s: float
    idle_timeout_s: float
    half_bytes: int
    refused: int = 0
    closed_by_server: int = 0
    held_at_deadline: int = 0
    held_by_mode: dict[str, int] = field(default_factory=dict)
    victim_requests: int = 0
    victim_failures: int = 0
    victim_p99_ms: float | None = None
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    leaked_slots: int = 0
    server_alive: bool = True

    @property
    def ok(self) -> bool:
        return (
            self.held_at_deadline == 0
            and self.victim_failures == 0
            and self.leaked_slots == 0
            and self.server_alive
        )


async def victim_loop(
    port: int, stop: asyncio.Event, latencies: list[float], failures: list[int], pause_s: float
) -> None:
    """Well-formed text requests, one at a time, from ``VICTIM_HOST``; one connection each."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = time.perf_counter()
        ok = await loop.run_in_executor(None, probe, port, "text", 5.0, VICTIM_HOST)
        if ok:
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            failures.append(1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause_s)


async def drip(port: int, mode: str, interval_s: float, half_bytes: int, deadline: float) -> str:
    """One slowloris connection: 'refused', 'closed' (by the server) or 'held'."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    except (OSError, TimeoutError):
        return "refused"
    loop = asyncio.get_running_loop()
    byte = b"\n" if mode == "blank" else b"x"
    first = b"y" * half_bytes if mode == "half" else byte
    drained = asyncio.ensure_future(drain_until_eof(reader))
    try:
        writer.write(first)
        while loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(drained), interval_s)
            if drained.done():
                return "closed"
            writer.write(byte)
            await asyncio.wait_for(writer.drain(), interval_s)
        return "closed" if drained.done() else "held"
    except (OSError, TimeoutError):
        return "closed"
    finally:
        drained.cancel()
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(writer.wait_closed(), 1)


async def drain_until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


def run_slowloris(
    connections: int,
    *,
    modes: Sequence[str] = ("partial", "blank", "half"),
    interval_s: float = 2.0,
    partial_timeout_s: float = 5.0,
    idle_timeout_s: float = 10.0,
    half_bytes: int = 60_000,
    log: Callable[[str], None] = print,
) -> SlowlorisResult:
    """``connections`` slow clients against ``socklab serve text``; see the module doc."""
    result = SlowlorisResult(
        connections, list(modes), interval_s, partial_timeout_s, idle_timeout_s, half_bytes
    )
    extra = ["--partial-timeout", str(partial_timeout_s), "--idle-timeout", str(idle_timeout_s)]
    with running("text", extra) as server:
        baseline = baseline_sockets(server, "text")
        result.rss_before_mb = server.rss_bytes() / 2**20

        async def attack() -> list[str]:
            stop = asyncio.Event()
            latencies: list[float] = []
            failures: list[int] = []
            victim = asyncio.ensure_future(
                victim_loop(server.port, stop, latencies, failures, 0.05)
            )
            deadline = asyncio.get_running_loop().time() + 2 * idle_timeout_s + partial_timeout_s
            drips = [
                asyncio.ensure_future(
                    drip(server.port, modes[i % len(modes)], interval_s, half_bytes, deadline)
                )
                for i in range(connections)
            ]
            while not all(d.done() for d in drips):
                result.rss_peak_mb = max(result.rss_peak_mb, server.rss_bytes() / 2**20)
                await asyncio.wait(drips, timeout=0.25)
            stop.set()
            await victim
            result.victim_requests = len(latencies) + len(failures)
            result.victim_failures = len(failures)
            p99 = percentile(latencies, 0.99)
            result.victim_p99_ms = None if p99 is None else round(p99, 2)
            return [d.result() for d in drips]

        outcomes = asyncio.run(attack())
        for i, outcome in enumerate(outcomes):
            mode = modes[i % len(modes)]
            if outcome == "refused":
                result.refused += 1
            elif outcome == "closed":
                result.closed_by_server += 1
            else:
                result.held_at_deadline += 1
                result.held_by_mode[mode] = result.held_by_mode.get(mode, 0) + 1
        result.server_alive = server.is_alive() and probe(server.port, "text")
        result.leaked_slots = settled_sockets(server, baseline, 5)
        result.rss_after_mb = server.rss_bytes() / 2**20
    for key in ("rss_before_mb", "rss_peak_mb", "rss_after_mb"):
        setattr(result, key, round(getattr(result, key), 1))
    log(f"slowloris: {asdict(result)}")
    return result


# -- flood past --max-connections --------------------------------------------------------


@dataclass
class FloodResult:
    max_connections: int
    attempted: int
    served: int = 0
    refused: int = 0
    hung: int = 0
    """Connections neither served nor refused within the timeout."""
    held: int = 0
    """Client sockets the server held once every client was served (and holding its
    connection) or refused; its listener not counted."""
    leaked_slots: int = 0
    answers_after: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.hung == 0
            and self.held <= self.max_connections
            and self.served >= 1
            and self.refused >= self.attempted - self.max_connections
            and self.leaked_slots == 0
            and self.answers_after
        )


async def flood_one(port: int, hold: asyncio.Event, holding: list[int], timeout_s: float) -> str:
    """Connect, send a request, read its answer, hold the connection: served/refused/hung."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout_s)
    except (OSError, TimeoutError):
        return "refused"
    try:
        writer.write(b'{"op":"convert","text":"flood"}\n')
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        outcome = "served" if line.startswith(b"{") else "refused"
    except (OSError, TimeoutError) as exc:
        outcome = "hung" if isinstance(exc, TimeoutError) else "refused"
    if outcome == "served":
        holding.append(1)
        await hold.wait()
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return outcome


def run_flood(
    max_connections: int, extra_connections: int, *, timeout_s: float = 10.0
) -> FloodResult:
    """``max_connections + extra_connections`` clients against a limit of ``max_connections``."""
    attempted = max_connections + extra_connections
    result = FloodResult(max_connections, attempted)
    with running("text", ["--max-connections", str(max_connections)]) as server:
        baseline = baseline_sockets(server, "text")

        async def flood() -> list[str]:
            hold = asyncio.Event()
            holding: list[int] = []
            tasks = [
                asyncio.ensure_future(flood_one(server.port, hold, holding, timeout_s))
                for _ in range(attempted)
            ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2 * timeout_s
            # Until every client is served (and holding) or finished.
            while loop.time() < deadline:
                if len(holding) + sum(t.done() for t in tasks) >= attempted:
                    break
                await asyncio.sleep(0.05)
            wait_until(lambda: server.sockets() - baseline <= len(holding), 2)
            result.held = server.sockets() - baseline
            hold.set()
            done, pending = await asyncio.wait(tasks, timeout=2 * timeout_s)
            return [t.result() for t in done] + ["hung"] * len(pending)

        for outcome in asyncio.run(flood()):
            setattr(result, outcome, getattr(result, outcome) + 1)
        result.leaked_slots = settled_sockets(server, baseline, 5)
        result.answers_after = probe(server.port, "text")
    return result


# -- never-reading clients ---------------------------------------------------------------


@dataclass
class NeverReadersResult:
    clients: int
    dialect: str
    stalled: int = 0
    """Clients whose sends stopped making progress: the server stopped reading them."""
    most_sent_mb: float = 0.0
    victim_requests: int = 0
    victim_failures: int = 0
    victim_p99_ms: float | None = None
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    leaked_slots: int = 0
    answers_after: bool = False
    rss_limit_mb: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.stalled == self.clients
            and self.victim_failures == 0
            and self.rss_peak_mb - self.rss_before_mb <= self.rss_limit_mb
            and self.leaked_slots == 0
            and self.answers_after
        )


def never_read(
    port: int, request: bytes, stall_s: float, cap_bytes: int, ready: threading.Barrier
) -> tuple[int, bool, socket.socket]:
    """Pipeline ``request`` without reading until sends stall for ``stall_s``; (sent, stalled)."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.setblocking(False)
    chunk = request * max(1, 65536 // len(request))
    sent = 0
    last_progress = time.monotonic()
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait(30)
    while sent < cap_bytes:
        try:
            n = sock.send(chunk)
        except BlockingIOError:
            if time.monotonic() - last_progress > stall_s:
                return sent, True, sock
            time.sleep(0.01)
            continue
        except OSError:
            return sent, False, sock
        sent += n
        last_progress = time.monotonic()
    return sent, False, sock


def run_never_readers(
    clients: int,
    *,
    dialect: str = "json",
    stall_s: float = 2.0,
    cap_mb: float = 256.0,
    rss_limit_mb: float = 200.0,
) -> NeverReadersResult:
    """``clients`` that pipeline text requests and never read; see the module doc."""
    result = NeverReadersResult(clients, dialect, rss_limit_mb=rss_limit_mb)
    text = "never read " * 90
    if dialect == "json":
        request = json.dumps({"op": "convert", "text": text}).encode() + b"\n"
    elif dialect == "line":
        request = text.encode() + b"\n"
    else:
        request = f"{len(text):<{LAB_HEADER}}".encode() + text.encode()
    with running("text") as server:
        baseline = baseline_sockets(server, "text")
        result.rss_before_mb = server.rss_bytes() / 2**20
        ready = threading.Barrier(clients)
        outcomes: list[tuple[int, bool, socket.socket]] = []
        latencies: list[float] = []
        failures = 0

        def one() -> None:
            outcomes.append(never_read(server.port, request, stall_s, int(cap_mb * 2**20), ready))

        threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            result.rss_peak_mb = max(result.rss_peak_mb, server.rss_bytes() / 2**20)
            started = time.perf_counter()
            if probe(server.port, "text", 5.0, VICTIM_HOST):
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
            time.sleep(0.05)
        for thread in threads:
            thread.join(60)
        result.rss_peak_mb = max(result.rss_peak_mb, server.rss_bytes() / 2**20)
        for _ in range(20):  # the victim, with the never-readers still connected
            started = time.perf_counter()
            if probe(server.port, "text", 5.0, VICTIM_HOST):
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
        for sent, stalled, sock in outcomes:
            result.stalled += stalled
            result.most_sent_mb = max(result.most_sent_mb, round(sent / 2**20, 1))
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()
        result.victim_requests = len(latencies) + failures
        result.victim_failures = failures
        p99 = percentile(latencies, 0.99)
        result.victim_p99_ms = None if p99 is None else round(p99, 2)
        result.leaked_slots = settled_sockets(server, baseline, 10)
        result.answers_after = probe(server.port, "text")
    result.rss_before_mb = round(result.rss_before_mb, 1)
    result.rss_peak_mb = round(result.rss_peak_mb, 1)
    return result


# -- a pipelining flood: fairness ---------------------------------------------------------


@dataclass
class PipelineFloodResult:
    dialect: str
    depth: int
    seconds: float
    unloaded_p99_ms: float | None = None
    victim_p99_ms: float | None = None
    victim_requests: int = 0
    victim_failures: int = 0
    flooder_replies_per_s: float = 0.0
    victim_replies_per_s: float = 0.0
    answers_after: bool = False

    @property
    def ok(self) -> bool:
        """The fairness target: the victim's p99 under 10 ms and within 3x its unloaded p99."""
        if self.victim_p99_ms is None or self.unloaded_p99_ms is None:
            return False
        return (
            self.victim_failures == 0
            and self.victim_p99_ms < 10
            and self.victim_p99_ms <= 3 * max(self.unloaded_p99_ms, 0.1)
            and self.flooder_replies_per_s > 0
            and self.answers_after
        )


FLOOD_TEXT = "flood"
FLOOD_LAB_REPLY = f"[Lower Case] {FLOOD_TEXT} [Upper Case] {FLOOD_TEXT.upper()}".encode()


async def victim_session(port: int, seconds: float, latencies: list[float]) -> int:
    """One json connection from ``VICTIM_HOST``, one request at a time; the failures."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(VICTIM_HOST, 0))
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    failures = 0
    try:
        while loop.time() < end:
            started = time.perf_counter()
            writer.write(b'{"op":"convert","text":"victim","id":1}\n')
            try:
                line = await asyncio.wait_for(reader.readline(), 10)
            except TimeoutError:
                return failures + 1
            if not line.startswith(b'{"id":1,"ok":true'):
                return failures + 1
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.002)
    finally:
        writer.close()
    return failures


async def pipeline_flooder(port: int, dialect: str, depth: int, stop: asyncio.Event) -> int:
    """Keep ``depth`` requests in flight until ``stop``; the replies received."""
    if dialect == "json":
        request, reply_size = b'{"op":"convert","text":"flood"}\n', 0
    elif dialect == "line":
        request, reply_size = FLOOD_TEXT.encode() + b"\n", 0
    else:
        payload = FLOOD_TEXT.encode()
        request = f"{len(payload):<{LAB_HEADER}}".encode() + payload
        reply_size = len(FLOOD_LAB_REPLY)
    reader, writer = await asyncio.open_connection(HOST, port)
    sent = received = 0
    buffered = 0
    try:
        while not stop.is_set():
            if sent - received < depth:
                writer.write(request * (depth - (sent - received)))
                sent += depth - (sent - received)
                await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 1)
            except TimeoutError:
                continue
            if not chunk:
                break
            if reply_size:  # lab replies have no delimiter but a known length
                buffered += len(chunk)
                received += buffered // reply_size
                buffered %= reply_size
            else:
                received += chunk.count(b"\n")
    finally:
        writer.close()
    return received


def run_pipeline_flood(
    dialect: str, *, depth: int = 1000, seconds: float = 5.0
) -> PipelineFloodResult:
    """One client pipelining ``depth`` text requests in ``dialect`` while a victim measures."""
    result = PipelineFloodResult(dialect, depth, seconds)
    with running("text") as server:
        probe(server.port, "text")

        async def measure() -> None:
            unloaded: list[float] = []
            await victim_session(server.port, min(2.0, seconds), unloaded)
            p99 = percentile(unloaded, 0.99)
            result.unloaded_p99_ms = None if p99 is None else round(p99, 3)
            stop = asyncio.Event()
            flooder = asyncio.ensure_future(pipeline_flooder(server.port, dialect, depth, stop))
            await asyncio.sleep(0.2)  # the flood is on
            latencies: list[float] = []
            result.victim_failures = await victim_session(server.port, seconds, latencies)
            stop.set()
            replies = await asyncio.wait_for(flooder, 30)
            result.victim_requests = len(latencies) + result.victim_failures
            p99 = percentile(latencies, 0.99)
            result.victim_p99_ms = None if p99 is None else round(p99, 3)
            result.flooder_replies_per_s = round(replies / (seconds + 0.2), 1)
            result.victim_replies_per_s = round(len(latencies) / seconds, 1)

        asyncio.run(measure())
        result.answers_after = probe(server.port, "text")
    return result


# -- chaos: the Jepsen-style bank run ----------------------------------------------------

PIN = "4321"


@dataclass
class Op:
    op: str
    account: int
    to: int | None
    amount_cents: int
    key: str
    outcome: str = "unknown"
    """ok, a refusal's code, or unknown (no answer: the request is in doubt)."""
    posting_id: int | None = None


@dataclass
class ChaosResult:
    backend: str
    workers: int
    seed: int
    seconds: float
    clients: int
    accounts: int
    operations: int = 0
    acknowledged: int = 0
    refused: int = 0
    in_doubt: int = 0
    """Operations with no answer during the run; settled at the end by their own keys."""
    unexpected_errors: int = 0
    server_kills: int = 0
    worker_kills: int = 0
    unplanned_exits: int = 0
    """Times the server exited without being killed here (it was restarted)."""
    lost: int = 0
    doubled: int = 0
    changed_outcomes: int = 0
    """Acknowledged operations whose replay answered something else than recorded."""
    balance_mismatches: int = 0
    verify_ok: bool = False
    error_lines: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.doubled == 0
            and self.changed_outcomes == 0
            and self.balance_mismatches == 0
            and self.unplanned_exits == 0
            and self.unexpected_errors == 0
            and self.verify_ok
        )


def postgres_scratch(server_url: str) -> tuple[str, Callable[[], None]]:
    """A URL whose tables live in a new schema, and a function that drops it."""
    import psycopg
    from psycopg import sql

    schema = f"socklab_chaos_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    def drop() -> None:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    sep = "&" if "?" in server_url else "?"
    return f"{server_url}{sep}options=-csearch_path%3D{schema}", drop


def open_accounts(url: str, count: int, deposit_cents: int) -> dict[int, int]:
    from socklab.ledger import open_ledger

    async def work() -> dict[int, int]:
        ledger = await open_ledger(url)
        try:
            for n in range(count):
                await ledger.open_account(f"Chaos {n}", PIN, deposit_cents)
            return {a.id: a.balance_cents for a in await ledger.accounts()}
        finally:
            await ledger.close()

    return asyncio.run(work())


def read_books(url: str) -> tuple[dict[int, int], dict[str, int]]:
    """Balances, and how many journal postings each key owns (straight from the tables)."""
    from socklab.ledger import open_ledger

    async def balances() -> dict[int, int]:
        ledger = await open_ledger(url)
        try:
            return {a.id: a.balance_cents for a in await ledger.accounts()}
        finally:
            await ledger.close()

    query = (
        "SELECT r.key, COUNT(DISTINCT e.request_id) FROM requests r "
        "JOIN entries e ON e.request_id = r.id WHERE r.key IS NOT NULL GROUP BY r.key"
    )
    if url.startswith("sqlite"):
        from socklab.ledger.sqlite import sqlite_path_from_url

        with contextlib.closing(sqlite3.connect(sqlite_path_from_url(url))) as lite:
            rows = lite.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            rows = conn.execute(query).fetchall()
    return asyncio.run(balances()), {key: count for key, count in rows}


def atm_client(
    port: int,
    account: int,
    accounts: list[int],
    seed: int,
    stop: threading.Event,
    ops: list[Op],
    errors: list[str],
) -> None:
    """One ATM: random keyed operations until ``stop``; every outcome recorded in ``ops``."""
    from socklab.client.bank_client import BankClient
    from socklab.errors import LinkError, RequestRejected, TransientFailure

    rng = random.Random(seed)
    bank = BankClient(HOST, port, timeout_s=5, attempts=6, backoff_s=0.1, max_backoff_s=1)
    try:
        while not stop.is_set():
            try:
                bank.login(account, PIN)
                break
            except LinkError:
                time.sleep(0.2)
        while not stop.is_set():
            kind = rng.choice(("deposit", "withdraw", "transfer"))
            to = rng.choice([a for a in accounts if a != account]) if kind == "transfer" else None
            op = Op(kind, account, to, rng.randint(1, 300_00), f"chaos-{seed}-{len(ops)}")
            ops.append(op)
            try:
                receipt = bank.move(kind, op.amount_cents, to=to, key=op.key)
            except (LinkError, TransientFailure):
                continue  # in doubt: settled at the end with the same key
            except RequestRejected as exc:
                if exc.code in ("insufficient_funds",):
                    op.outcome = exc.code
                else:
                    errors.append(f"{op.op} {op.key}: {exc.code}: {exc}")
                continue
            op.outcome, op.posting_id = "ok", receipt.posting_id
    except Exception as exc:  # a bug in the client or a reply it cannot read
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        bank.close()


def settle(port: int, ops: list[Op], result: ChaosResult) -> dict[str, str]:
    """Send every operation once more with its key: the final outcome of each key."""
    from socklab.client.bank_client import BankClient
    from socklab.errors import RequestRejected

    final: dict[str, str] = {}
    by_account: dict[int, list[Op]] = {}
    for op in ops:
        by_account.setdefault(op.account, []).append(op)
    for account, mine in by_account.items():
        with BankClient(HOST, port, timeout_s=10, attempts=5) as bank:
            bank.login(account, PIN)
            for op in mine:
                try:
                    receipt = bank.move(op.op, op.amount_cents, to=op.to, key=op.key)
                except RequestRejected as exc:
                    final[op.key] = exc.code
                    if op.outcome == "ok":
                        result.lost += 1  # acknowledged, and now refused: it was not kept
                    elif op.outcome != "unknown" and op.outcome != exc.code:
                        result.changed_outcomes += 1
                    continue
                final[op.key] = "ok"
                if op.outcome == "ok":
                    if not receipt.replayed:
                        result.lost += 1  # applied only now: the acknowledged one was lost
                    elif receipt.posting_id != op.posting_id:
                        result.changed_outcomes += 1
                elif op.outcome != "unknown":
                    result.changed_outcomes += 1  # a recorded refusal became a success
    return final


def run_chaos(
    backend: str,
    *,
    seed: int,
    seconds: float,
    clients: int = 8,
    accounts: int = 4,
    workers: int = 1,
    kill_every_s: tuple[float, float] = (1.0, 3.0),
    min_kills: int = 0,
    postgres_url: str = DEFAULT_POSTGRES_URL,
    log: Callable[[str], None] = print,
) -> ChaosResult:
    """The Jepsen-style bank run on ``backend`` (sqlite or postgres); see the module doc.

    Runs for ``seconds`` and until at least ``min_kills`` kills have been made.
    """
    result = ChaosResult(backend, workers, seed, seconds, clients, accounts)
    rng = random.Random(seed)
    tmp = tempfile.TemporaryDirectory(prefix="socklab-chaos-")
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        url = f"sqlite:///{Path(tmp.name) / 'chaos.db'}"
    else:
        url, drop = postgres_scratch(postgres_url)
    server: Server | None = None
    try:
        start_balances = open_accounts(url, accounts, 5_000_00)
        ids = sorted(start_balances)
        extra = ["--db", url, "--shutdown-grace", "2"]
        if workers > 1:
            extra += ["--workers", str(workers)]
        server = running_server = Server("bank", extra)
        server.start()
        stop = threading.Event()
        records: list[list[Op]] = [[] for _ in range(clients)]
        errors: list[str] = []
        port = server.port  # the same port after every restart
        threads = [
            threading.Thread(
                target=atm_client,
                args=(port, ids[n % len(ids)], ids, seed * 1000 + n, stop, records[n], errors),
                daemon=True,
            )
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()

        def acked() -> int:
            return sum(1 for ops in records for op in ops if op.outcome != "unknown")

        deadline = time.monotonic() + seconds
        kills = 0
        while time.monotonic() < deadline or kills < min_kills:
            # Wait a while, and for some progress since the last restart, then kill.
            before = acked()
            # Sometimes soon after a (re)start: a worker killed then must be restarted too.
            pause = rng.uniform(0.2 if workers > 1 else kill_every_s[0], kill_every_s[1])

            def progressed(target: int = before + 20) -> bool:
                return acked() >= target

            wait_until(progressed, 30)
            time.sleep(pause)
            if not server.is_alive():
                result.unplanned_exits += 1
                log(f"chaos: the server exited by itself ({server.exit_status()})")
            elif workers > 1 and rng.random() < 0.5 and server.workers():
                victim = rng.choice(server.workers())
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                result.worker_kills += 1
                kills += 1
                # The supervisor restarts it; give the kernel a moment to reap, then go on.
                wait_until(
                    lambda: (
                        len(running_server.workers()) >= workers or not running_server.is_alive()
                    ),
                    10,
                )
                if server.is_alive():
                    continue
                result.unplanned_exits += 1
                log("chaos: the supervisor exited after a worker was killed")
            else:
                server.kill()
                result.server_kills += 1
                kills += 1
            server.stop()
            server.start()
        stop.set()
        for thread in threads:
            thread.join(60)
        if not server.is_alive():
            result.unplanned_exits += 1
            server.stop()
            server.start()
        all_ops = [op for ops in records for op in ops]
        result.operations = len(all_ops)
        result.acknowledged = sum(op.outcome == "ok" for op in all_ops)
        result.refused = sum(op.outcome not in ("ok", "unknown") for op in all_ops)
        result.in_doubt = sum(op.outcome == "unknown" for op in all_ops)
        result.unexpected_errors = len(errors)
        result.error_samples += errors[:5]
        final = settle(server.port, all_ops, result)
        server.stop()
        result.error_lines += server.error_lines
        result.error_samples += server.error_samples[:5]
        server = None
        # The books: every applied key owns exactly one posting, and every balance is what
        # the clients' own records (final outcomes) imply.
        balances, postings = read_books(url)
        ours = {op.key for op in all_ops}
        result.doubled = sum(count - 1 for count in postings.values() if count > 1)
        result.doubled += sum(1 for key in postings if key in ours and final.get(key) != "ok")
        result.doubled += sum(1 for key in postings if key not in ours)
        result.lost += sum(
            1 for key, outcome in final.items() if outcome == "ok" and key not in postings
        )
        expected = dict(start_balances)
        for op in all_ops:
            if final.get(op.key) != "ok":
                continue
            if op.op == "deposit":
                expected[op.account] += op.amount_cents
            else:
                expected[op.account] -= op.amount_cents
            if op.to is not None:
                expected[op.to] += op.amount_cents
        result.balance_mismatches = sum(balances.get(a) != b for a, b in expected.items())
        verify = subprocess.run(
            [sys.executable, "-m", "socklab", "bank", "--db", url, "verify"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        result.verify_ok = verify.returncode == 0
        if not result.verify_ok:
            result.error_samples.append(verify.stdout[-500:])
    finally:
        if server is not None:
            server.stop()
        drop()
        tmp.cleanup()
    return result


# -- the command -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=20_000, help="fuzz: frames at least")
    parser.add_argument("--slowloris", type=int, default=300, help="slowloris: connections")
    parser.add_argument("--drip-interval", type=float, default=2.0)
    parser.add_argument("--partial-timeout", type=float, default=5.0)
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument("--half-bytes", type=int, default=60_000)
    parser.add_argument(
        "--slowloris-modes",
        nargs="+",
        choices=["partial", "blank", "half"],
        default=["partial", "blank", "half"],
        help="slowloris: what the connections drip, in turn",
    )
    parser.add_argument("--max-connections", type=int, default=200, help="flood: the limit")
    parser.add_argument("--flood", type=int, default=400, help="flood: connections past it")
    parser.add_argument("--never-readers", type=int, default=4)
    parser.add_argument("--depth", type=int, default=1000, help="pipeline-flood: depth")
    parser.add_argument("--chaos-seconds", type=float, default=20.0)
    parser.add_argument("--chaos-clients", type=int, default=8)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SOCKLAB_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a scratch schema is made in this database and dropped after",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    args.scenarios = args.scenarios or list(SCENARIOS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # our own clients' resets
    raise_fd_limit()
    results: dict[str, Any] = {"seed": args.seed, "scenarios": {}}
    verdicts: dict[str, bool] = {}

    def note(name: str, result: Any) -> None:
        verdicts[name] = bool(result.ok)
        results["scenarios"][name] = {**asdict(result), "ok": bool(result.ok)}
        print(f"{name}: {'OK' if result.ok else 'FAILED'} {json.dumps(asdict(result))}", flush=True)

    if "fuzz" in args.scenarios:
        note("fuzz", run_fuzz(args.seed, args.frames))
    if "slowloris" in args.scenarios:
        note(
            "slowloris",
            run_slowloris(
                args.slowloris,
                modes=args.slowloris_modes,
                interval_s=args.drip_interval,
                partial_timeout_s=args.partial_timeout,
                idle_timeout_s=args.idle_timeout,
                half_bytes=args.half_bytes,
                log=lambda _: None,
            ),
        )
    if "flood" in args.scenarios:
        note("flood", run_flood(args.max_connections, args.flood))
    if "never-readers" in args.scenarios:
        for dialect in DIALECTS:
            note(f"never-readers/{dialect}", run_never_readers(args.never_readers, dialect=dialect))
    if "pipeline-flood" in args.scenarios:
        for dialect in DIALECTS:
            note(f"pipeline-flood/{dialect}", run_pipeline_flood(dialect, depth=args.depth))
    if "chaos" in args.scenarios:
        for backend in args.backends:
            workers = 2 if backend == "postgres" else 1
            note(
                f"chaos/{backend}",
                run_chaos(
                    backend,
                    seed=args.seed,
                    seconds=args.chaos_seconds,
                    clients=args.chaos_clients,
                    workers=workers,
                    postgres_url=args.postgres_url,
                ),
            )
    print("\nsummary:")
    for name, ok in verdicts.items():
        print(f"  {name:24} {'OK' if ok else 'FAILED'}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
