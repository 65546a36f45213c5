"""Keyed durable deposits/s of the ledger alone: N concurrent asyncio callers.

    python benchmarks/ledger_deposits.py                      # group commit on and off
    python benchmarks/ledger_deposits.py --clients 64 --stats --url sqlite:////tmp/b.db

Each caller deposits with a fresh key and waits for the receipt (``--stats``: then also
reads the statistics, as the bank service does after every transaction). CPU is the
process's user+sys time per deposit, all threads: a figure that a busy machine disturbs
less than the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

from socklab.ledger import LedgerSettings, open_ledger


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, group_commit: bool, clients: int, seconds: float, stats: bool) -> str:
    ledger = await open_ledger(url, LedgerSettings(group_commit=group_commit))
    await ledger.ensure_demo_accounts()
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        nonlocal done
        account = index % 3 + 1
        while time.perf_counter() < deadline:
            await ledger.deposit(account, 1, key=f"bench-{group_commit}-{index}-{done}")
            if stats:
                await ledger.stats()
            done += 1

    started, cpu_started = time.perf_counter(), cpu_s()
    await asyncio.gather(*(caller(i) for i in range(clients)))
    elapsed, cpu = time.perf_counter() - started, cpu_s() - cpu_started
    report = await ledger.verify()
    await ledger.close()
    assert report.ok, report.problems
    return (
        f"group_commit={'on ' if group_commit else 'off'} clients={clients}"
        f"{' +stats' if stats else ''}: {done / elapsed:8,.0f} deposits/s,"
        f" CPU {cpu / done * 1e6:5.1f} us/deposit"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--url", help="a ledger URL (default: a new SQLite file)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stats", action="store_true", help="also read stats per deposit")
    parser.add_argument("--mode", choices=["both", "on", "off"], default="both")
    args = parser.parse_args()
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.mode]
    with tempfile.TemporaryDirectory() as tmp:
        for group_commit in modes:
            url = args.url or f"sqlite:///{Path(tmp) / f'bank-{group_commit}.db'}"
            print(asyncio.run(measure(url, group_commit, args.clients, args.seconds, args.stats)))


if __name__ == "__main__":
    main()
