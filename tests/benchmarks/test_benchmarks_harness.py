"""``benchmarks/harness.py``'s pure parts on a fake ``/proc``: the CPU sampler's parsing and
arithmetic, process trees, PostgreSQL backends, listening sockets, machine facts."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness
from harness import CpuSampler

TICK = 100  # clock ticks per second, as on Linux


def stat_line(pid: int, name: str, utime: int, stime: int, state: str = "S") -> str:
    """A /proc/PID/stat line: utime and stime are the 14th and 15th fields."""
    after = [state, "1", str(pid), str(pid), "0", "-1", "4194560", "10", "0", "0", "0"]
    return f"{pid} ({name}) {' '.join(after)} {utime} {stime} 0 0 20 0 1 0 5 0 0\n"


class FakeProc:
    """A folder laid out like /proc, with only what the harness reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.machine(busy=0, idle=0)

    def process(
        self, pid: int, utime: int, stime: int = 0, *, kids: tuple[int, ...] = (), name: str = "x"
    ) -> None:
        task = self.root / str(pid) / "task" / str(pid)
        task.mkdir(parents=True, exist_ok=True)
        (self.root / str(pid) / "stat").write_text(stat_line(pid, name, utime, stime))
        (task / "children").write_text(" ".join(map(str, kids)))
        (self.root / str(pid) / "cmdline").write_bytes(name.encode() + b"\0")

    def end(self, pid: int) -> None:
        for path in sorted((self.root / str(pid)).rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (self.root / str(pid)).rmdir()

    def machine(self, busy: int, idle: int) -> None:
        # user nice system idle iowait irq softirq steal: busy = user, idle = idle + iowait
        (self.root / "stat").write_text(
            f"cpu  {busy} 0 0 {idle - idle // 4} {idle // 4} 0 0 0 0 0\ncpu0 1 2 3 4\n"
        )


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def test_cpu_seconds_are_user_plus_system_even_with_parentheses_in_the_name(
    proc: FakeProc,
) -> None:
    proc.process(7, utime=150, stime=50, name="python (a) b)")
    fields = harness.stat_fields(7, proc.root)
    assert fields is not None and fields[0] == "S"
    assert harness.cpu_seconds(fields, TICK) == 2.0
    assert harness.stat_fields(8, proc.root) is None  # gone


def test_a_process_tree_is_followed_to_grandchildren(proc: FakeProc) -> None:
    proc.process(10, 0, kids=(11, 12))
    proc.process(11, 0, kids=(13,))
    proc.process(12, 0)
    proc.process(13, 0)
    assert harness.process_tree(10, proc.root) == [10, 11, 13, 12]
    assert harness.children(99, proc.root) == []


def test_cores_of_a_tree_over_a_window(proc: FakeProc) -> None:
    sampler = CpuSampler(proc=proc.root, tick=TICK)
    sampler.watch("server", 10)
    proc.process(10, 100, kids=(11,))
    proc.process(11, 50)
    sampler.sample(at=0.0)
    # one second later: the parent used 0.5 s, its child 0.25 s, a new child 0.1 s
    proc.process(10, 150, kids=(11, 12))
    proc.process(11, 75)
    proc.process(12, 10)
    sampler.sample(at=1.0)
    # one more second: the first child has ended (counted up to its last sample)
    proc.process(10, 250, kids=(12,))
    proc.end(11)
    proc.process(12, 30)
    sampler.sample(at=2.0)

    assert sampler.cores("server", 0.0, 1.0) == pytest.approx((50 + 25 + 10) / TICK)
    assert sampler.cores("server", 1.0, 2.0) == pytest.approx((100 + 20) / TICK)
    # a window between samples widens to the samples around it
    assert sampler.cores("server", 0.5, 1.5) == pytest.approx((150 + 25 + 30) / TICK / 2)
    assert sampler.cores("server", 0.5, 2.5) is None  # no sample after the window yet
    assert sampler.cores("nobody", 0.0, 2.0) is None


def test_machine_busy_is_busy_over_all_jiffies(proc: FakeProc) -> None:
    sampler = CpuSampler(proc=proc.root, tick=TICK)
    proc.machine(busy=1000, idle=1000)
    sampler.sample(at=0.0)
    proc.machine(busy=1150, idle=1200)  # 150 busy of 350
    sampler.sample(at=1.0)
    assert sampler.machine_busy(0.0, 1.0) == pytest.approx(150 / 350)
    sampler.sample(at=2.0)  # nothing moved: no share to give
    assert sampler.machine_busy(1.0, 2.0) is None
    assert harness.machine_jiffies("cpu  1 2 3 4 5 6 7 8 9 10\n") == (1 + 2 + 3 + 6 + 7 + 8, 36)


def test_postgres_backends_of_one_database_only(proc: FakeProc) -> None:
    sampler = CpuSampler("socklab_bench_ab", proc=proc.root, tick=TICK)
    proc.process(20, 100, name="postgres: postgres socklab_bench_ab 127.0.0.1(5000) idle")
    proc.process(21, 100, name="postgres: postgres other_db 127.0.0.1(5001) idle")
    proc.process(22, 100, name="postgres: checkpointer")
    sampler.sample(at=0.0)
    for pid in (20, 21, 22):
        proc.process(pid, 300, name=(proc.root / str(pid) / "cmdline").read_text()[:-1])
    proc.process(23, 40, name="postgres: postgres socklab_bench_ab 127.0.0.1(5002) INSERT")
    sampler.sample(at=1.0)
    # backend 20 used 2 s, backend 23 (connected in the window) 0.4 s
    assert sampler.cores("postgres", 0.0, 1.0) == pytest.approx(2.4)
    without = CpuSampler(proc=proc.root, tick=TICK)
    without.sample(at=0.0)
    assert "postgres" not in without.samples[0].cpu


def test_listening_sockets_count_the_port_in_both_tables(proc: FakeProc) -> None:
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    (proc.root / "net").mkdir()
    (proc.root / "net" / "tcp").write_text(
        head
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0\n"
        + "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0\n"
        + "   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  0\n"
        + "   3: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0\n"
    )
    assert harness.listening_sockets(0x1F90, proc.root) == 2  # the established one is not
    assert harness.listening_sockets(0x1F92, proc.root) == 0


def test_machine_facts_from_proc(proc: FakeProc) -> None:
    (proc.root / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\n")
    (proc.root / "loadavg").write_text("0.50 1.25 2.00 1/100 4242\n")
    info = harness.machine(proc.root)
    assert info["cpu"] == "Test CPU 9000"
    assert info["load average before"] == "0.50 1.25 2.00"
    assert list(info) == [
        "cpu",
        "cores",
        "python",
        "event loop",
        "os",
        "load average before",
        "socklab",
    ]
    empty = harness.machine(proc.root / "missing")
    assert empty["cpu"] == "unknown" and empty["load average before"] == "unknown"
