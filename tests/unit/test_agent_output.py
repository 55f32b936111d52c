"""How the agent reads a step's output: control lines, the 64 KiB cap, the error tail and the
parameter variables (pure functions: no runtime, no process)."""

from __future__ import annotations

import json

import pytest

from fleetrun.agent.output import OutputTail, Progress, StepEvent, StepLines, parse_line
from fleetrun.agent.step import parameter_variable


@pytest.mark.parametrize(("line", "parsed"), [
    ("::progress 40 registering node", Progress(40, "registering node")),
    ("::progress 12.6", Progress(13, "")),
    ("::progress 250 too far", Progress(100, "too far")),
    ("::progress -3 back", Progress(0, "back")),
    ("::progress forty percent", None),
    ("::event success deploy-minion done and dusted", StepEvent("success", "deploy-minion", "done and dusted")),
    ("::event warning run", StepEvent("warning", "run", "")),
    ("::event loud run not a type", None),
    ("::event info", None),
    ("plain ::progress 40 in the middle", None),
])
def test_control_lines(line: str, parsed: object) -> None:
    assert parse_line(line) == parsed


def test_small_output_is_kept_whole() -> None:
    tail = OutputTail()
    tail.append(b"one\n")
    tail.append("tw\u00f6\n".encode())
    assert tail.render() == "one\ntw\u00f6\n"
    assert OutputTail().render() is None


def test_large_output_keeps_the_last_64_kib_after_a_line_saying_what_was_left_out() -> None:
    tail = OutputTail()
    for i in range(200):
        tail.append(f"{i:06d} ".encode() + b"y" * 1016 + b"\n")
    text = tail.render()
    assert text is not None
    assert len(text.encode()) <= 64 * 1024
    first, rest = text.split("\n", 1)
    omitted = int(first.removeprefix("[\u2026 ").removesuffix(" bytes omitted \u2026]"))
    assert omitted + len(rest.encode()) == 200 * 1024
    assert rest.endswith("000199 " + "y" * 1016 + "\n")


def test_binary_output_stays_within_the_request_size_once_encoded() -> None:
    tail = OutputTail()
    tail.append(bytes(range(32)) * 8192)  # control characters: 6 bytes each in JSON
    text = tail.render()
    assert text is not None
    assert len(json.dumps(text)) <= 160 * 1024
    assert text.startswith("[\u2026 ")


def test_the_error_tail_is_the_last_ten_non_empty_lines_at_most_2000_characters() -> None:
    lines = StepLines()
    for i in range(30):
        lines.add(f"line {i}")
        lines.add("   ")
    assert lines.tail() == "\n".join(f"line {i}" for i in range(20, 30))
    long = StepLines()
    long.add("x" * 5000)
    assert len(long.tail()) == 2000


@pytest.mark.parametrize(("name", "variable"), [
    ("command", "FLEETRUN_PARAM_COMMAND"), ("ssh-port", "FLEETRUN_PARAM_SSH_PORT"), ("a.b c", "FLEETRUN_PARAM_A_B_C"),
])
def test_parameter_variables(name: str, variable: str) -> None:
    assert parameter_variable(name) == variable
