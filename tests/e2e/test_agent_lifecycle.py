"""The agent process under stress: SIGTERM while a step runs, an API outage, an API that never answers."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.stack import LEASE_SECONDS, Stack
from tests.processes import clean_environment, free_port, process_alive, stop
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

#: failed claims an agent without an API logs before the test stops it
FAILED_CLAIMS = 3


class SwitchableRelay:
    """A TCP relay in front of the API that can be cut: a real outage, seen by the agent as
    refused and dropped connections."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.up = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.up = False
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.close()
            self._open.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.close()


def test_sigterm_kills_a_step_after_the_grace_period_and_reports_the_run_failed(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent with a 1 s grace period running a 30 s step
    node = stack.node_id("sigterm")
    agent = stack.start_agent(node, stack.register(node), tmp_path, grace=1.0)
    task_id = stack.shell_task(node, ["sh", "-c", "echo $$ > step.pid; exec sleep 30"])
    pid_file = tmp_path / "sandbox" / "step.pid"
    wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), 20, "the step to start")
    pid = int(pid_file.read_text())

    # WHEN the agent is told to stop
    agent.send_signal(signal.SIGTERM)

    # THEN it kills the step after the grace period, reports the run failed, and exits 0
    assert agent.wait(timeout=10) == 0
    assert not process_alive(pid)
    run = stack.wait_run(task_id, node, ["failed"], timeout=5)
    assert run["error_message"] == "agent stopped (SIGTERM) before the step finished"


def test_sigterm_lets_a_step_finish_within_the_grace_period(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent running a 2 s step
    node = stack.node_id("graceful")
    agent = stack.start_agent(node, stack.register(node), tmp_path, grace=15.0)
    task_id = stack.shell_task(node, ["sh", "-c", "touch started; sleep 2; echo finished"])
    wait_for(lambda: (tmp_path / "sandbox" / "started").exists(), 20, "the step to start")

    # WHEN the agent is told to stop
    agent.send_signal(signal.SIGTERM)

    # THEN the step finishes, the run succeeds, and no new work is claimed
    assert agent.wait(timeout=15) == 0
    assert stack.task(task_id)["status"] in ("running", "completed")  # the stream may lag a moment
    assert stack.wait_task(task_id, timeout=10)["status"] == "completed"


def test_an_outage_longer_than_the_lease_kills_the_step_when_the_api_returns(stack: Stack, tmp_path: Path) -> None:
    # GIVEN an agent that reaches the API through a relay, running a long step on attempt 1
    relay = SwitchableRelay(int(stack.url.rsplit(":", 1)[1]))
    node = stack.node_id("outage")
    agent = stack.start_agent(node, stack.register(node), tmp_path, api_url=relay.url)
    script = 'if [ "$FLEETRUN_ATTEMPT" = 1 ]; then echo $$ > first.pid; exec sleep 30; fi; echo "attempt 2"'
    task_id = stack.shell_task(node, ["sh", "-c", script])
    pid_file = tmp_path / "sandbox" / "first.pid"
    wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), 20, "attempt 1 to start")
    pid = int(pid_file.read_text())

    try:
        # WHEN the API is unreachable for longer than the lease
        relay.cut()
        stack.wait_run(task_id, node, ["pending"], timeout=LEASE_SECONDS + 6, attempt=2)
        # THEN the step kept running through the outage …
        assert process_alive(pid)
        relay.restore()
        # … and once the API is back, the lost lease stops it, and attempt 2 completes
        wait_for(lambda: not process_alive(pid), 20, "the step of the lost lease to be killed", interval=0.1)
        assert stack.wait_task(task_id, timeout=20)["status"] == "completed"
    finally:
        relay.close()
    run = stack.runs(task_id)[node]
    assert (run["status"], run["attempt"]) == ("succeeded", 2)
    log = stack.agent_log(agent)
    assert "heartbeat failed (API unreachable" in log
    assert "lease lost" in log
    assert agent.poll() is None


def test_an_agent_whose_api_is_down_backs_off_and_stops_cleanly(tmp_path: Path) -> None:
    # GIVEN an agent whose API address answers nothing
    command = [sys.executable, "-m", "fleetrun.agent", "--api", f"http://127.0.0.1:{free_port()}", "--node", "lonely",
               "--token", "frn.x.y", "--work-dir", str(tmp_path)]
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as log:
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_environment())

    def failures() -> list[str]:
        return [line for line in log_path.read_text().splitlines() if "claim failed (API unreachable" in line]

    try:
        # WHEN it has failed a few claims and is then stopped (while it waits to try again)
        wait_for(lambda: len(failures()) >= FAILED_CLAIMS, 20, f"{FAILED_CLAIMS} failed claims")
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)
    finally:
        stop(agent, timeout=10)

    # THEN it logged each failure with its next delay, stopped at once with status 0 and said so
    out = log_path.read_text()
    assert agent.returncode == 0, out
    assert time.monotonic() - started < 2
    delays = [float(line.rsplit("next try in ", 1)[1].removesuffix(" s")) for line in failures()]
    assert len(delays) >= FAILED_CLAIMS, out
    # full jitter: each delay is at most its doubling ceiling (0.5 s, 1 s, 2 s ...)
    assert all(0 < delay <= 0.5 * 2 ** n for n, delay in enumerate(delays)), delays
    assert out.rstrip().endswith("stopped")
