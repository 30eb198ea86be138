"""SIGTERM in production mode: every job the worker took from RunPod's queue gets its answer.

The runpod SDK (1.12.0, `serverless/modules/rp_scale.py`) stops on SIGTERM by setting a shutdown
event. Its job-running loop then leaves as soon as its local queue is empty and waits for the
jobs already started, but its job-taking loop may be inside a job-take long poll at that moment.
When that poll returns jobs, they are put on the local queue that nobody reads any more: taken
from RunPod, never run, never answered (the worker exits 0 all the same).

`DrainingJobScaler` closes that gap and changes nothing else: a take that returns jobs after
the shutdown event has them run and answered by the SDK's own `handle_job` on the spot, before
the take returns. The SDK waits for its job-taking loop before it exits and closes its HTTP session,
so those answers are posted. `install()` puts it where `runpod.serverless.start` builds its scaler.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from worker.telemetry import log_event


def install() -> None:
    """Serve production mode through DrainingJobScaler; call after `import runpod`, before start()."""
    from runpod.serverless.modules import rp_scale

    class DrainingJobScaler(rp_scale.JobScaler):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            take = self.jobs_fetcher

            async def take_or_answer(session: Any, num_jobs: int) -> list[dict] | None:
                jobs = await take(session, num_jobs)
                if not jobs or self.is_alive():  # nothing else runs between the take and this check
                    return jobs
                log_event("shutdown.taken_while_stopping", logging.WARNING, jobs=len(jobs))
                answers = [self.jobs_handler(session, self.config, job) for job in jobs]
                for job, outcome in zip(jobs, await asyncio.gather(*answers, return_exceptions=True)):
                    if isinstance(outcome, BaseException):
                        log_event("shutdown.answer_failed", logging.ERROR, job_id=job.get("id"), error=repr(outcome))
                return None  # the SDK's loop sees no jobs, sees the shutdown and leaves

            self.jobs_fetcher = take_or_answer

    rp_scale.JobScaler = DrainingJobScaler
