"""The dispatch queue's worker: each job (services/jobs.py) to the service that does it."""

from __future__ import annotations

from typing import Any

from chalicelib.observability import bind, logger
from chalicelib.services import cancellation, deregistration, dispatch, jobs


def handle_job(job: dict[str, Any]) -> None:
    kind, task_id = job.get("job"), job.get("task_id")
    if kind == jobs.RECONCILE:  # a step of the statistics reconcile: no task
        from chalicelib.services import reconcile  # only this job needs it

        reconcile.run_job(job)
        return
    if not isinstance(task_id, str):
        logger.warning("job without task_id; dropped", extra={"job": job})
        return
    bind(task_id=task_id)
    if kind == jobs.DISPATCH:
        chunk, dispatch_id = job.get("chunk"), job.get("dispatch_id")
        dispatch.run_dispatch_job(task_id, int(job.get("attempt", 1)), int(chunk) if chunk is not None else None,
                                  dispatch_id if isinstance(dispatch_id, str) else None)
    elif kind in (jobs.CANCEL, jobs.HALT):
        part = job.get("part")
        cancellation.cancel_runs(task_id, int(job.get("attempt", 0)), include_running=kind == jobs.CANCEL,
                                 partition=int(job.get("partition", 0)), part=int(part) if part is not None else None)
    elif kind == jobs.CLAIM_CHECK:
        from chalicelib.services import claim_timeouts  # only this job needs it

        claim_timeouts.run_job(task_id, int(job.get("attempt", 0)), claim_timeouts.walk_of(job))
    elif kind == jobs.RUN_LOOK:
        from chalicelib.services import run_looks  # only this job needs it

        recounting, stalling = job.get("recount"), job.get("stall")
        run_looks.run_job(task_id, recounting if isinstance(recounting, dict) else None,
                          stalling if isinstance(stalling, dict) else None)
    elif kind == jobs.NODE_GONE and isinstance(job.get("node"), str):
        deregistration.end_runs_of(task_id, job["node"], partition=int(job.get("partition", 0)))
    else:
        logger.warning("unknown job kind; dropped", extra={"job": job})
