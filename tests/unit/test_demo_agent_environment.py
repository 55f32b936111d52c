"""The demo agents' environment: their token, and this interpreter as the steps' `python3`; the
banner's dev token."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import NoReturn

from fleetrun.local import runtime
from fleetrun.local.runtime import _demo_agent_environment


def test_demo_steps_find_this_interpreter_first_and_the_token_is_not_an_argument():
    env = _demo_agent_environment("node-token")
    assert env["FLEETRUN_NODE_TOKEN"] == "node-token"
    first, *rest = env["PATH"].split(os.pathsep)
    assert Path(first) == Path(sys.executable).parent
    assert os.pathsep.join(rest) == os.environ.get("PATH", os.defpath)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_banner_shows_the_dev_token_on_a_terminal_and_never_in_a_log_file(monkeypatch):
    # GIVEN `make run` on a terminal / THEN the banner line is the token
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert runtime._show_on_terminal("eyJ.dev.token") == "eyJ.dev.token"
    # GIVEN its output going to a file, and no terminal to start from (nohup, CI)
    monkeypatch.setattr(sys, "stdout", io.StringIO())

    def no_terminal(path: str, *args: object, **kwargs: object) -> NoReturn:
        raise OSError(6, "No such device or address", path)

    monkeypatch.setattr(runtime, "open", no_terminal, raising=False)
    # THEN the line points at the token file instead
    assert runtime._show_on_terminal("eyJ.dev.token") == "(not written to this log: read it from the file above)"
