"""The agent's live output: scrubbing across chunk boundaries, the cap, when chunks go out."""

from __future__ import annotations

import io
import itertools

import pytest

from fleetrun.agent.journal import Journal
from fleetrun.agent.live_output import CHUNK_BYTES, CappedOutput, LiveOutput, SecretScrubber, cut_line
from fleetrun.agent.protocol import ClaimedRun, LeaseLost, OutputGap, Unavailable

SECRET = "hunter2-very-secret"


def _run(secret_values: tuple[str, ...] = ()) -> ClaimedRun:
    return ClaimedRun(run_id="T.n1", task_id="T", node="n1", type="shell", phase="run", step="run", steps=("run",),
                      attempt=1, parameters={}, lease_expires_at=0.0, secret_values=secret_values)


class FakeApi:
    """The output route as the service keeps it: in order, a gap refused."""

    def __init__(self, stored: str = "") -> None:
        self.stored = stored.encode()
        self.sent: list[tuple[float, int, str]] = []
        self.failures: list[Exception] = []
        self.now = 0.0

    def send_output(self, run: ClaimedRun, offset: int, data: str) -> int:
        if self.failures:
            raise self.failures.pop(0)
        if offset != len(self.stored):
            raise OutputGap("gap", len(self.stored))
        self.sent.append((self.now, offset, data))
        self.stored += data.encode()
        return len(self.stored)

    @property
    def text(self) -> str:
        return self.stored.decode()


def _live(api: FakeApi, **options: object) -> LiveOutput:
    return LiveOutput(api, _run(options.pop("secrets", ())), Journal(io.StringIO()), "t",  # type: ignore[arg-type]
                      clock=lambda: api.now, **options)  # type: ignore[arg-type]


class TestSecretScrubber:
    def test_a_secret_split_across_feeds_never_escapes(self):
        scrubber = SecretScrubber([SECRET])
        out = [scrubber.feed("export PASS=hunter2-"), scrubber.feed("very-secret; echo ok\n"), scrubber.flush()]
        assert "".join(out) == "export PASS=***; echo ok\n"
        assert all("hunter2" not in piece for piece in out)

    @pytest.mark.parametrize("split", range(1, 40))
    def test_every_split_point_is_scrubbed(self, split):
        text = f"a {SECRET} b {SECRET}"
        scrubber = SecretScrubber([SECRET, "other-secret"])
        out = scrubber.feed(text[:split]) + scrubber.feed(text[split:]) + scrubber.flush()
        assert out == "a *** b ***"

    def test_without_secrets_everything_goes_out_at_once(self):
        assert SecretScrubber([]).feed("abc") == "abc"


class TestCap:
    def test_head_then_the_tail_after_a_line_saying_how_much_was_cut(self):
        cap = CappedOutput(100)
        head = b"".join(cap.add(f"{i:09d}\n") for i in range(50))  # 500 bytes
        assert head == b"".join(f"{i:09d}\n".encode() for i in range(5))
        end = cap.end()
        assert end == cut_line(400).encode() + b"".join(f"{i:09d}\n".encode() for i in range(45, 50))

    def test_no_cut_line_when_everything_fits(self):
        cap = CappedOutput(100)
        assert cap.add("x" * 60) == b"x" * 50
        assert cap.end() == b"x" * 10

    def test_a_character_is_never_split_at_the_head_or_the_tail(self):
        cap = CappedOutput(10)
        head = cap.add("✓✓✓✓✓✓")  # 18 bytes: the head takes 5 bytes → one whole ✓
        assert head == "✓".encode()
        end = cap.end()
        assert end.decode().endswith("✓")  # decodes: no half character


class TestSending:
    def test_the_first_output_goes_at_once_then_at_most_every_interval(self):
        api = FakeApi()
        live = _live(api, interval=0.5)
        live.append(b"first\n")
        live.tick()
        assert [data for _, _, data in api.sent] == ["first\n"]
        api.now = 0.2
        live.append(b"second\n")
        live.tick()
        assert len(api.sent) == 1  # too soon
        api.now = 0.6
        live.tick()
        assert [data for _, _, data in api.sent] == ["first\n", "second\n"]

    def test_a_steady_printer_gets_a_chunk_at_least_every_second_in_order(self):
        # GIVEN 10,000 numbered lines printed over 5 s, the agent ticking every 0.2 s
        api = FakeApi()
        live = _live(api, interval=0.5)
        for i in range(10_000):
            api.now = i * 0.0005
            live.append(f"{i}\n".encode())
            if i % 400 == 0:
                live.tick()
        live.finish()
        # THEN every line in order, about ten chunks, none more than a second after the previous
        assert api.text == "".join(f"{i}\n" for i in range(10_000))
        times = [at for at, _, _ in api.sent]
        assert len(api.sent) <= 12
        assert all(b - a <= 1.0 for a, b in itertools.pairwise(times))
        assert [offset for _, offset, _ in api.sent] == sorted(offset for _, offset, _ in api.sent)

    def test_64_kib_waiting_goes_out_before_the_interval(self):
        api = FakeApi()
        live = _live(api, interval=0.5)
        live.append(b"x\n")
        live.tick()
        live.append(b"y" * (CHUNK_BYTES * 2))
        live.tick()  # same instant: only because 64 KiB wait
        assert [len(data) for _, _, data in api.sent] == [2, CHUNK_BYTES, CHUNK_BYTES]

    def test_a_secret_straddling_two_chunks_is_masked(self):
        api = FakeApi()
        live = _live(api, interval=0.0, secrets=(SECRET,))
        live.append(b"PASS=hunter2-ve")
        live.tick()
        live.append(b"ry-secret done\n")
        live.tick()
        live.finish()
        assert api.text == "PASS=*** done\n"
        assert all("hunter2" not in data for _, _, data in api.sent)

    def test_a_character_split_between_two_reads_is_sent_whole(self):
        api = FakeApi()
        live = _live(api, interval=0.0)
        encoded = "✓".encode()
        live.append(b"a" + encoded[:1])
        live.tick()
        live.append(encoded[1:] + b"\n")
        live.tick()
        live.finish()
        assert [data for _, _, data in api.sent] == ["a", "✓\n"]

    def test_output_past_the_cap_keeps_head_and_tail_with_the_cut_said(self):
        api = FakeApi()
        live = _live(api, interval=0.0, max_bytes=1000)
        for i in range(1000):
            live.append(f"{i:04d}\n".encode())  # 5,000 bytes
            live.tick()
        live.finish()
        assert api.text.startswith("".join(f"{i:04d}\n" for i in range(100)) + cut_line(4000))
        assert api.text.endswith("".join(f"{i:04d}\n" for i in range(900, 1000)))

    def test_an_unreachable_api_delays_the_chunk_without_losing_it(self):
        api = FakeApi()
        api.failures = [Unavailable("down")]
        live = _live(api, interval=0.0)
        live.append(b"kept\n")
        live.tick()
        assert api.sent == []
        api.now = 10.0
        live.tick()
        assert api.text == "kept\n"

    def test_a_fresh_process_continues_after_the_output_the_attempt_already_has(self):
        # GIVEN an attempt whose plan phase already sent output
        api = FakeApi(stored="=== plan ===\n")
        live = _live(api, interval=0.0)
        live.append(b"=== apply ===\n")
        live.tick()
        assert api.text == "=== plan ===\n=== apply ===\n"

    def test_a_lost_lease_stops_sending(self):
        api = FakeApi()
        api.failures = [LeaseLost("409")]
        live = _live(api, interval=0.0)
        live.append(b"x\n")
        live.tick()
        live.append(b"y\n")
        live.finish()
        assert live.stopped
        assert api.sent == []
