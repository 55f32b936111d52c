"""Executing one claimed run: its steps in order, watched, then reported once.

The run ends `succeeded` when every step exits 0; `failed` when a step exits non-zero,
cannot start, times out, or the agent stops before it finishes; `cancelled` when a
heartbeat says so. When the lease is lost the steps are killed and nothing is reported:
the attempt belongs to someone else now.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from fleetrun.agent.backoff import Backoff
from fleetrun.agent.journal import Journal, run_tag
from fleetrun.agent.lease import LeaseKeeper
from fleetrun.agent.live_output import LiveOutput
from fleetrun.agent.output import MAX_MESSAGE_CHARS, OutputTail, Progress, StepEvent, StepLines, parse_line
from fleetrun.agent.protocol import AgentApi, ClaimedRun, LeaseLost, Rejected, Revoked, Unavailable
from fleetrun.agent.settings import DEFAULT_STEP_TIMEOUT_SECONDS, AgentSettings
from fleetrun.agent.shutdown import Shutdown
from fleetrun.agent.step import (
    StepLaunch,
    StepMissing,
    StepNotRunnable,
    StepProcess,
    step_environment,
    step_executable,
)

SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Outcome:
    #: `succeeded`, `failed`, `cancelled`, or None when the lease was lost (nothing to report)
    status: str | None
    error_message: str | None = None


_LEASE_LOST = Outcome(None)


class RunExecution:
    def __init__(self, run: ClaimedRun, api: AgentApi, settings: AgentSettings, shutdown: Shutdown,
                 journal: Journal) -> None:
        self.run, self._api, self._settings, self._shutdown, self._journal = run, api, settings, shutdown, journal
        self.tag = run_tag(run.task_id, run.node)
        journal.hide(self.tag, run.secret_values)  # forgotten when `execute` ends
        self.keeper = LeaseKeeper(api, run, journal, self.tag)
        self.output = OutputTail()
        #: what the steps print, streamed while they run (`live_output.py`)
        self.live = LiveOutput(api, run, journal, self.tag)
        #: the status the service accepted, once reported
        self.reported: str | None = None
        #: when the run's `run_timeout_seconds` (if its type sets one) is up, on the monotonic clock
        limit = run.run_timeout_seconds
        self._run_deadline = time.monotonic() + limit if limit else None

    def execute(self) -> None:
        try:
            self._execute()
        finally:
            self.keeper.close()
            self._journal.forget(self.tag)

    def _execute(self) -> None:
        try:
            outcome = self._run_steps()
        except Exception as error:  # an agent bug must not leave the run leased until the sweeper
            self._journal.run(self.tag, self.keeper.step, f"agent error: {error!r}")
            outcome = Outcome(FAILED, f"agent error while running step {self.keeper.step}: {error!r}")
        if outcome.status is None:
            self._journal.run(self.tag, self.keeper.step, "run dropped: its lease was lost")
            return
        self.live.finish()  # the output's end goes before the completion that ends the attempt
        self._report(outcome)

    def _run_steps(self) -> Outcome:
        steps = self.run.remaining_steps()
        for step in steps:
            self.keeper.set_step(step)
            if self.keeper.lost:
                return _LEASE_LOST
            if self.keeper.cancel_requested:
                return Outcome(CANCELLED, f"cancelled before step {step} started")
            if self._shutdown.grace_over():
                return Outcome(FAILED, f"agent stopped ({self._shutdown.reason}) before step {step} started")
            outcome = self._run_step(step, announce=len(steps) > 1, last=step == steps[-1])
            if outcome is not None:
                return outcome
        return Outcome(SUCCEEDED)

    def _run_step(self, step: str, *, announce: bool, last: bool) -> Outcome | None:
        """None when the step succeeded, else how the run ends."""
        try:
            process = StepProcess(self._launch(step))
        except StepMissing as error:  # the run fails at once: another attempt here would find nothing either
            self._journal.run(self.tag, step, str(error))
            message = f"no executable for step {step} of {self.run.type} on {self._settings.node}"
            self.keeper.add_event("error", step, message)
            return Outcome(FAILED, message)
        except StepNotRunnable as error:
            self.keeper.add_event("error", step, str(error))
            return Outcome(FAILED, f"step {step} cannot run: {error}")
        self._journal.run(self.tag, step, f"started (attempt {self.run.attempt}, pid {process.pid})")
        self.keeper.add_event("info", step, f"step {step} started")
        if announce:
            self.output.append(f"=== step {step} ===\n".encode())
            self.live.append(f"=== step {step} ===\n".encode())
        lines = StepLines()
        started = time.monotonic()
        timeout = self._step_timeout(started)
        while (code := process.wait(_POLL_SECONDS)) is None:
            self._consume(process.lines(), step, lines)
            self.live.tick()
            self.keeper.tick()
            outcome = self._interruption(step, lines, started + timeout, timeout)
            if outcome is not None:
                process.stop()
                self._consume(process.finish(), step, lines)
                self._journal.run(self.tag, step, f"stopped: {outcome.status or 'lease lost'}")
                return outcome
        self._consume(process.finish(), step, lines)
        took = time.monotonic() - started
        if code == 0:
            self._journal.run(self.tag, step, f"succeeded in {took:.1f} s")
            self.keeper.add_event("info", step, f"step {step} succeeded in {took:.1f} s")
            if not last:  # the last step's events go with the completion
                self.keeper.flush()
            return None
        verdict = f"exited {code}" if code > 0 else f"was killed by signal {-code}"
        self._journal.run(self.tag, step, f"failed: {verdict} after {took:.1f} s")
        self.keeper.add_event("error", step, f"step {step} {verdict}")
        return Outcome(FAILED, f"step {step} {verdict}: {lines.tail()}")

    def _interruption(self, step: str, lines: StepLines, deadline: float, timeout: float) -> Outcome | None:
        if self.keeper.lost:
            return _LEASE_LOST
        if self.keeper.cancel_requested:
            return Outcome(CANCELLED, f"cancelled by request during step {step}")
        if time.monotonic() >= deadline:
            return Outcome(FAILED, self._timed_out(step, timeout, lines))
        if self._shutdown.grace_over():
            return Outcome(FAILED, f"agent stopped ({self._shutdown.reason}) before the step finished")
        return None

    def _step_timeout(self, started: float) -> float:
        """How long the step may run: its own limit, cut to what is left of the run's
        `run_timeout_seconds` (a type's limit on all its steps together)."""
        own = _timeout(self.run.parameters)
        if self._run_deadline is None:
            return own
        return max(0.0, min(own, self._run_deadline - started))

    def _timed_out(self, step: str, timeout: float, lines: StepLines) -> str:
        limit = self.run.run_timeout_seconds
        if limit and self._run_deadline is not None and time.monotonic() >= self._run_deadline:
            return f"run timed out: its steps took longer than run_timeout_seconds ({limit:g} s) in step {step}: " \
                   f"{lines.tail()}"
        return f"step {step} timed out after {timeout:g} s: {lines.tail()}"

    def _consume(self, chunks: list[bytes], step: str, lines: StepLines) -> None:
        for chunk in chunks:
            line = chunk.decode("utf-8", errors="replace").rstrip("\r\n")
            parsed = parse_line(line)
            if isinstance(parsed, Progress):
                self.keeper.set_progress(parsed.percent)
                self._journal.run(self.tag, step, f"{parsed.percent}% {parsed.message}".rstrip())
            elif isinstance(parsed, StepEvent):
                self.keeper.add_event(parsed.type, parsed.step, parsed.message)
                self._journal.run(self.tag, step, f"event {parsed.type}: {parsed.message}")
            else:
                self.output.append(chunk)
                self.live.append(chunk)
                lines.add(line)

    @property
    def work_dir(self) -> Path:
        """The run's own directory: the same for every attempt and phase (a plan's apply finds it)."""
        return run_work_dir(self._settings, self.run.task_id, self.run.node)

    def _launch(self, step: str) -> StepLaunch:
        executable = step_executable(self._settings.steps_dir, self.run.type, step)
        work_dir = self.work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self._settings.sandbox.mkdir(parents=True, exist_ok=True)
        context = {
            "FLEETRUN_RUN_ID": self.run.run_id, "FLEETRUN_TASK_ID": self.run.task_id,
            "FLEETRUN_TASK_TYPE": self.run.type, "FLEETRUN_PHASE": self.run.phase,
            "FLEETRUN_NODE": self._settings.node, "FLEETRUN_TARGET_NODE": self.run.node,
            "FLEETRUN_STEP": step, "FLEETRUN_ATTEMPT": str(self.run.attempt),
            "FLEETRUN_WORK_DIR": str(work_dir), "FLEETRUN_SANDBOX": str(self._settings.sandbox),
        }
        stdin = json.dumps(self.run.parameters).encode()
        return StepLaunch(executable, stdin, step_environment(self.run.parameters, context), work_dir)

    def _report(self, outcome: Outcome) -> None:
        assert outcome.status is not None
        status, error = outcome.status, (outcome.error_message or None)
        error = error[:MAX_MESSAGE_CHARS] if error else None
        output, events = self.output.render(), self.keeper.final_events()
        backoff, simplified = Backoff(), False
        while True:
            try:
                self._api.complete(self.run, status, error, output, events)
                self._journal.run(self.tag, self.keeper.step, f"run {status}")
                self.reported = status
                return
            except (LeaseLost, Revoked) as lost:
                self._journal.run(self.tag, self.keeper.step, f"completion refused ({lost}); run dropped")
                return
            except Rejected as rejected:
                if simplified:
                    self._journal.run(self.tag, self.keeper.step, f"completion rejected ({rejected}); given up")
                    return
                self._journal.run(self.tag, self.keeper.step, f"completion rejected ({rejected}); retrying bare")
                simplified, output, events = True, None, []
            except Unavailable as unavailable:  # the run is not abandoned: retried while the agent may report
                delay = backoff.next_delay(unavailable.retry_after)
                if not self._shutdown.may_keep_reporting(time.monotonic() + delay):
                    self._journal.run(self.tag, self.keeper.step, "completion not delivered; the lease will expire")
                    return
                message = f"complete failed ({unavailable}); retry in {delay:.1f} s"
                self._journal.run(self.tag, self.keeper.step, message)
                time.sleep(delay)


def _timeout(parameters: dict[str, object]) -> float:
    value = parameters.get("timeout_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_STEP_TIMEOUT_SECONDS


def run_work_dir(settings: AgentSettings, task_id: str, node: str) -> Path:
    return settings.work_dir / "runs" / _segment(task_id) / _segment(node)


def _segment(value: str) -> str:
    """`value` as one safe path segment (node ids may be `.` or `..`)."""
    cleaned = value.replace("/", "_").replace("\0", "_")
    return cleaned if cleaned not in ("", ".", "..") else cleaned.replace(".", "_") or "_"
