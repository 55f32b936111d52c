"""The demo agents' environment: their token, and this interpreter as the steps' `python3`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fleetrun.local.runtime import _demo_agent_environment


def test_demo_steps_find_this_interpreter_first_and_the_token_is_not_an_argument():
    env = _demo_agent_environment("node-token")
    assert env["FLEETRUN_NODE_TOKEN"] == "node-token"
    first, *rest = env["PATH"].split(os.pathsep)
    assert Path(first) == Path(sys.executable).parent
    assert os.pathsep.join(rest) == os.environ.get("PATH", os.defpath)
