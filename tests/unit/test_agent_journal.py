"""The agent's log never carries a secret a step echoed back (API.md: secrets never reach a log line)."""

from __future__ import annotations

import io

from fleetrun.agent.journal import Journal


def test_a_run_s_lines_mask_its_secret_values_until_the_run_is_forgotten() -> None:
    # GIVEN a journal that hides a run's secrets, one of which holds another
    stream = io.StringIO()
    journal = Journal(stream)
    journal.hide("ABC123.edge-1", ["hunter22", "hunter22-long", ""])
    # WHEN a step echoes them in an event and in its step name, and another run logs the same text
    journal.run("ABC123.edge-1", "step-hunter22", "event info: token hunter22-long and hunter22")
    journal.run("XYZ789.edge-2", "run", "hunter22 is not this run's secret")
    journal.forget("ABC123.edge-1")
    journal.run("ABC123.edge-1", "run", "hunter22 after the run ended")
    # THEN only the run's own lines, while it runs, are masked
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("[ABC123.edge-1] step-***: event info: token *** and ***")
    assert lines[1].endswith("hunter22 is not this run's secret")
    assert lines[2].endswith("hunter22 after the run ended")
