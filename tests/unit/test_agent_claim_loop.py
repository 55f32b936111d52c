"""The agent's claim loop: an idle agent asks less and less often (up to its cap), asks as the
service says while its runs are being dispatched, and frees a slot as soon as a run is done."""

from __future__ import annotations

from fleetrun.agent.backoff import IdlePoll
from fleetrun.agent.loop import Agent
from fleetrun.agent.protocol import ClaimAnswer
from fleetrun.agent.settings import DEFAULT_IDLE_POLL_MAX_SECONDS, AgentSettings


def _bounds(delay: float, nominal: float) -> bool:
    return nominal * 0.8 <= delay <= nominal * 1.2


def test_idle_poll_doubles_from_one_second_up_to_the_cap() -> None:
    # GIVEN an agent that finds nothing to claim again and again
    idle = IdlePoll(1.0, 30.0)
    # WHEN it asks for the pause after each empty claim
    delays = [idle.next_delay() for _ in range(8)]
    # THEN the pauses double from 1 s and stay at the cap (each within the ±20 % jitter)
    for delay, nominal in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert _bounds(delay, nominal), (delay, nominal)


def test_work_resets_the_idle_poll_to_its_first_pause() -> None:
    idle = IdlePoll(1.0, 30.0)
    for _ in range(10):
        idle.next_delay()
    idle.reset()
    assert _bounds(idle.next_delay(), 1.0)


def test_a_cap_below_the_first_pause_keeps_the_first_pause() -> None:
    idle = IdlePoll(1.0, 0.5)
    assert all(_bounds(idle.next_delay(), 1.0) for _ in range(5))


def test_a_long_idle_spell_never_overflows() -> None:
    idle = IdlePoll(1.0, DEFAULT_IDLE_POLL_MAX_SECONDS)
    for _ in range(5000):
        delay = idle.next_delay()
    assert _bounds(delay, DEFAULT_IDLE_POLL_MAX_SECONDS)


class _Answers:
    """An agent API whose claims answer, in turn, the given `ClaimAnswer`s."""

    def __init__(self, *answers: ClaimAnswer) -> None:
        self.answers = list(answers)

    def claim(self, max_runs: int) -> ClaimAnswer:
        return self.answers.pop(0)


def _agent(tmp_path, *answers: ClaimAnswer) -> Agent:
    agent = Agent(AgentSettings("http://127.0.0.1:9", "n-1", "t", tmp_path / "steps", tmp_path / "work"))
    agent.api = _Answers(*answers)  # type: ignore[assignment]
    return agent


def test_an_empty_claim_during_a_dispatch_asks_again_as_the_service_says_instead_of_backing_off(tmp_path):
    # GIVEN an agent idle long enough that its pause grew to 16 s
    agent = _agent(tmp_path, *[ClaimAnswer([])] * 5, ClaimAnswer([], retry_after=1.0), ClaimAnswer([]))
    for _ in range(5):
        agent._claim(1)
    # WHEN a claim answers nothing yet, because this node's runs are being dispatched
    delay = agent._claim(1)
    # THEN the agent asks again after the service's pause, and its idle pause starts over
    assert _bounds(delay, 1.0)
    assert _bounds(agent._claim(1), 1.0)


def test_a_retry_after_longer_than_the_idle_cap_waits_only_the_cap(tmp_path):
    agent = _agent(tmp_path, ClaimAnswer([], retry_after=120.0))
    assert _bounds(agent._claim(1), DEFAULT_IDLE_POLL_MAX_SECONDS)


def test_a_run_s_slot_is_free_as_soon_as_its_work_is_done_not_when_its_thread_ends(tmp_path):
    # GIVEN a one-slot agent whose run thread has reported its run but not yet ended
    import threading

    agent = _agent(tmp_path)
    release = threading.Event()

    def run() -> None:
        agent._free_slot()
        release.wait(5)

    thread = threading.Thread(target=run)
    agent._running["T.n-1"] = thread
    thread.start()
    try:
        assert agent._slot_freed.wait(5)
        # WHEN the loop, woken by it, counts its busy slots
        agent._reap()
        # THEN the slot is free although the thread is still alive
        assert thread.is_alive()
        assert agent._running == {}
    finally:
        release.set()
        thread.join()
