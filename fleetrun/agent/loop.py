"""The agent's main loop: claim while a slot is free, one thread per run, stop cleanly on a signal."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from fleetrun.agent.backoff import Backoff, IdlePoll, jittered
from fleetrun.agent.batching import BatchingAgentApi
from fleetrun.agent.execution import RunExecution
from fleetrun.agent.journal import Journal
from fleetrun.agent.protocol import AgentApi, Rejected, Revoked, Unavailable
from fleetrun.agent.reservations import Reservations
from fleetrun.agent.settings import EXIT_TOKEN_REFUSED, IDLE_POLL_SECONDS, MAX_CLAIM, AgentSettings
from fleetrun.agent.shutdown import Shutdown


class Agent:
    def __init__(self, settings: AgentSettings, journal: Journal | None = None) -> None:
        self.settings = settings
        self.journal = journal or Journal()
        #: heartbeats, holds and completions of all the runs go out together in report calls
        self.api: AgentApi = BatchingAgentApi(settings.api_url, settings.node, settings.token,
                                              on_revoked=self._token_refused)
        self.shutdown = Shutdown(settings.grace)
        #: set by the first 401 from any route: the agent stops and exits EXIT_TOKEN_REFUSED
        self.token_refused = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        #: run threads that have finished their work (they may not have ended yet): their slots are free
        self._finished: set[threading.Thread] = set()
        self._finished_lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._backoff = Backoff()
        self._idle = IdlePoll(IDLE_POLL_SECONDS, settings.idle_poll_max)
        self.reservations = Reservations(self.api, settings.work_dir / "reservations", self.journal)

    def serve(self) -> int:
        """Claim and execute runs until asked to stop; then wait for the runs in flight. Returns 0,
        or EXIT_TOKEN_REFUSED once the service refused the node's token."""
        s = self.settings
        self.journal.agent(f"node {s.node} serving {s.api_url} with {s.slots} slot(s); steps from {s.steps_dir}")
        if self.reservations.load():
            self.journal.agent(f"holding {len(self.reservations.held())} plan(s) from before the restart")
        with _stop_on_signals(self.shutdown):
            while not self.shutdown.requested:
                self.reservations.tick()
                self._reap()
                free = min(s.slots - len(self._running), MAX_CLAIM)
                if free <= 0:
                    self._slot_freed.wait(0.5)
                    self._slot_freed.clear()
                    continue
                pause = self._claim(free)
                if self.reservations.held():
                    # holding a plan: its heartbeats fall due, and a confirmed apply should start
                    # at once, so the idle pause does not grow past the first poll interval
                    pause = min(pause, jittered(IDLE_POLL_SECONDS))
                if pause:
                    self.shutdown.wait(pause)
            self._drain()
        if self.token_refused.is_set():
            self.journal.agent(f"node {s.node}: its token was revoked or rotated (401); "
                               "register it again or give the agent the new token")
            return EXIT_TOKEN_REFUSED
        self.journal.agent("stopped")
        return 0

    def _token_refused(self) -> None:
        """A 401 from any route, in any thread: the token was rotated or the node deregistered.
        Retrying cannot help, and nothing the steps do can be reported: stop at once."""
        self.token_refused.set()
        self.shutdown.abort("token refused")

    def _claim(self, free: int) -> float:
        """Claim up to `free` runs and start them. Returns how long to wait before the next claim:
        nothing after a successful claim, a growing pause while idle (the service's `retry_after` while
        runs for this node are being dispatched), a backoff after a failure."""
        try:
            answer = self.api.claim(free)
        except Revoked:  # the loop ends: the shutdown was requested with it
            return 0.0
        except (Unavailable, Rejected) as error:
            delay = self._backoff.next_delay(error.retry_after if isinstance(error, Unavailable) else None)
            self.journal.agent(f"claim failed ({error}); next try in {delay:.1f} s")
            return delay
        except (KeyError, TypeError, ValueError) as error:  # an answer this agent cannot read: never crash
            delay = self._backoff.next_delay()
            self.journal.agent(f"claim answer not understood ({error!r}); next try in {delay:.1f} s")
            return delay
        if self._backoff.failures:
            self.journal.agent(f"API reachable again after {self._backoff.failures} failed claims")
            self._backoff.reset()
        for run in answer.runs:
            # a claim of a run whose plan this agent holds: the apply phase (its lease takes over
            # from the reservation), or a new plan after the old reservation was lost
            held = self.reservations.take(run.run_id)
            execution = RunExecution(run, self.api, self.settings, self.shutdown, self.journal)
            if run.phase == "apply" and not held:
                self.journal.run(execution.tag, run.step, "apply claimed for a plan this agent does not hold")
            self.journal.run(execution.tag, run.step, f"claimed attempt {run.attempt} ({run.type}, {run.phase})")
            thread = threading.Thread(target=self._execute, args=(execution,), name=execution.tag)
            self._running[run.run_id] = thread
            thread.start()
        if answer.runs:
            self._idle.reset()
            return 0.0
        if answer.retry_after is not None:  # runs for this node are being dispatched: no growing pause
            self._idle.reset()
            return jittered(min(max(answer.retry_after, 0.1), self.settings.idle_poll_max))
        return self._idle.next_delay()

    def _execute(self, execution: RunExecution) -> None:
        try:
            execution.execute()
            run = execution.run
            if run.phase == "plan" and execution.reported == "succeeded":  # now `apply_pending`
                self.reservations.hold(run.run_id, run.task_id, run.node, run.attempt, execution.work_dir)
        except Exception as error:  # the run's lease expires and the sweeper offers it again
            self.journal.run(execution.tag, execution.keeper.step, f"agent error while reporting: {error!r}")
        finally:
            self._free_slot()

    def _free_slot(self) -> None:
        """This run thread's work is done: its slot is free now, before the thread has ended (the
        loop, woken at once, would otherwise still see it alive and wait for the next wake-up)."""
        with self._finished_lock:
            self._finished.add(threading.current_thread())
        self._slot_freed.set()

    def _reap(self) -> None:
        with self._finished_lock:
            finished, self._finished = self._finished, set()
        self._running = {run_id: t for run_id, t in self._running.items() if t.is_alive() and t not in finished}

    def _drain(self) -> None:
        self._reap()
        if self._running:
            self.journal.agent(f"stopping ({self.shutdown.reason}): waiting up to {self.shutdown.grace:g} s "
                               f"for {len(self._running)} run(s)")
        for thread in list(self._running.values()):
            while thread.is_alive():
                thread.join(0.5)  # short joins keep the main thread free to take a second signal


@contextmanager
def _stop_on_signals(shutdown: Shutdown) -> Iterator[None]:
    """SIGTERM and SIGINT stop the agent (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        shutdown.request(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
