"""``Supervisor`` in this process, with forked workers and an injected restart policy."""

from __future__ import annotations

import os
import signal

from helpers import captured_records
from socklab.server.workers import Decision, RestartPolicy, Supervisor


def die_by_sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class TermAfterScheduling(RestartPolicy):
    """Delivers SIGTERM to the supervisor as soon as it has decided on a restart."""

    def exited(self, slot: int, exitcode: int) -> Decision:
        decision = super().exited(slot, exitcode)
        os.kill(os.getpid(), signal.SIGTERM)
        return decision


def test_sigterm_does_not_wait_for_a_pending_restart() -> None:
    policy = TermAfterScheduling(base_delay_s=3600.0, max_delay_s=3600.0)
    supervisor = Supervisor(1, die_by_sigkill, grace_s=5.0, policy=policy)
    with captured_records("socklab.server.workers") as records:
        assert supervisor.run() == 0  # an hour's backoff would hit the test's timeout
    messages = [record.getMessage() for record in records]
    restarts = [m for m in messages if "restarting it in" in m]
    assert len(restarts) == 1
    assert restarts[0].startswith("Worker 0 (pid")
    assert "killed by SIGKILL after" in restarts[0]
    assert restarts[0].endswith("restarting it in 3600.0 s")
    assert "Received SIGTERM, stopping 0 workers" in messages
    assert "Not restarting 1 waiting workers" in messages
    assert sum(" started " in m for m in messages) == 1
