"""A large task's recount, job by job, for bench/scale.py: the most runs one `run_look` job of a
recount in chunks reads, and the most AWS requests it makes (chalicelib/services/recount.py
`Chunked`; ARCHITECTURE.md invariant 9).

The recount runs on a task that is running with its counters quiet (bench/scale.py: dispatched,
every run waiting, the stream settled), as the sweeper starts it once they stayed still for the
grace period. Each job is played here as the
dispatch queue's worker plays it: the task read and one step; the continuation it would send is
counted as the one request it is, not sent (this plays the chain itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from scale_reconcile import counted_requests


@dataclass
class RecountFigures:
    #: run_look jobs the recount took (a first pass; a second only for counts found wrong)
    jobs: int
    #: runs read in all, and the most one job read
    runs_read: int
    max_runs_per_invocation: int
    #: the most AWS requests one job made
    max_requests_per_invocation: int
    #: whether the counts were found right (the first pass only stamped the recount)
    counts_right: bool


@contextmanager
def tallied_reads() -> Iterator[list[int]]:
    """While inside: how many runs each read of a recount tallied, in order (`recount.Tally.of`)."""
    from chalicelib.services import recount

    reads: list[int] = []
    tally_of = recount.Tally.of.__func__  # type: ignore[attr-defined]

    def counting(cls: type[recount.Tally], found: Any) -> recount.Tally:
        tally = tally_of(cls, found)
        reads.append(sum(tally.counts.values()))
        return tally

    recount.Tally.of = classmethod(counting)  # type: ignore[method-assign,assignment]
    try:
        yield reads
    finally:
        recount.Tally.of = classmethod(tally_of)  # type: ignore[method-assign,assignment]


def recount_in_jobs(task_id: str) -> RecountFigures:
    """Recount `task_id` job by job (see the module docstring)."""
    from chalicelib.services import recount
    from chalicelib.store import tasks

    requests: list[int] = []
    with tallied_reads() as reads:
        chunk: recount.Chunked | None = recount.Chunked.start(tasks.get(task_id))
        second_pass = False
        while chunk is not None:
            with counted_requests() as count:
                chunk, _ = recount.step(tasks.get(task_id), chunk)
            second_pass = second_pass or (chunk is not None and chunk.keep)
            requests.append(count() + (chunk is not None))  # + the SendMessage of the continuation
    return RecountFigures(len(requests), sum(reads), max(reads, default=0), max(requests, default=0),
                          not second_pass)
