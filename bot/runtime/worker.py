"""The worker: outbox sending, reminders and broadcasts, hand-off timers, retention, redelivery.

`sanad worker` runs each job on its own interval; `sanad worker --once` runs them once and
exits. Without Redis the gateway runs these loops in its own process.

- Every run of a job is bounded (`WORKER_JOB_TIMEOUT_S`): a hung platform call cannot stall
  the reminders for good.
- Singleton jobs (reminder planning and broadcast expansion, retention) run on one replica at
  a time: each run holds a lock named after the job.
- A heartbeat key (`worker:<instance>:heartbeat`) says the worker's loop is alive; the health
  check of docker-compose.yml reads it (`sanad worker --check`).
- Prometheus metrics: the worker serves them on `WORKER_METRICS_PORT`.
See docs/architecture.md ("Processes").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.outbox.sender import OutboxSender, apply_early_receipts
from bot.runtime import metrics
from bot.runtime.coordination import LockTimeout
from bot.runtime.services import Services

log = logging.getLogger(__name__)

# a singleton job that finds its lock taken waits this long for it, then skips the run
SINGLETON_WAIT_S = 0.05


@dataclass(frozen=True)
class Job:
    """A periodic job of the worker."""

    name: str
    run: Callable[[Services], Awaitable[None]]
    interval_s: float
    singleton: bool = False  # on one replica at a time


def heartbeat_key(instance_id: str) -> str:
    return f"worker:{instance_id}:heartbeat"


async def send_queued(services: Services) -> None:
    if services.sender is None:
        services.sender = OutboxSender(services)
    while await services.sender.run_once(200) > 0:
        pass


async def redeliver(services: Services) -> None:
    await services.conversations.redeliver()


async def early_receipts(services: Services) -> None:
    await apply_early_receipts(services)


async def heartbeat(services: Services) -> None:
    """Write the heartbeat key: the worker's loop is alive (`sanad worker --check` reads it)."""
    now = time.time()
    await services.coord.cache_set(heartbeat_key(services.instance_id), str(now),
                                   ttl_s=services.settings.worker_heartbeat_s * 6)
    metrics.WORKER_HEARTBEAT.set(now)


async def heartbeat_age_s(services: Services) -> float | None:
    """Seconds since this instance's last heartbeat; None when there is none."""
    value = await services.coord.cache_get(heartbeat_key(services.instance_id))
    return None if value is None else max(0.0, time.time() - float(value))


def jobs() -> list[Job]:
    """Every periodic job, in the order `run_once` runs them (reminders are planned before sending)."""
    from bot.analytics import jobs as analytics_jobs
    from bot.mentoring import sla
    from bot.mentoring.group import sender as mentor_group
    from bot.privacy import retention
    from bot.reminders import jobs as reminder_jobs

    return [
        Job("heartbeat", heartbeat, 10.0),
        # plans reminders and expands broadcasts, then sends a batch
        Job("reminders", reminder_jobs.job, 30.0, singleton=True),
        Job("send", send_queued, 1.0),
        Job("handoff_sla", sla.job, 15.0),
        Job("mentor_group", mentor_group.job, 2.0),
        Job("retention", retention.job, 3600.0, singleton=True),
        Job("redeliver", redeliver, 5.0),
        Job("early_receipts", early_receipts, 5.0),
        # rolls up the day's figures: one replica is enough
        Job("analytics", analytics_jobs.job, 60.0, singleton=True),
    ]


async def run_job(job: Job, services: Services) -> None:
    """One run of a job, bounded in time; a failure is logged and the job runs again on its next tick."""
    timeout_s = services.settings.worker_job_timeout_s
    started = time.perf_counter()
    outcome = "ok"
    try:
        if job.singleton:
            # the lock outlives the longest run, so a second replica never starts the job meanwhile
            async with services.coord.lock(f"job:{job.name}", ttl_s=timeout_s + 30.0, wait_s=SINGLETON_WAIT_S):
                async with asyncio.timeout(timeout_s):
                    await job.run(services)
        else:
            async with asyncio.timeout(timeout_s):
                await job.run(services)
    except LockTimeout:
        outcome = "skipped"  # another replica runs it now
    except TimeoutError:
        outcome = "timeout"
        log.error("worker job %s ran longer than %.0f s and was stopped", job.name, timeout_s)
    except Exception:
        outcome = "failed"
        # one failing job must not stop the others; it runs again on its next tick
        log.exception("worker job %s failed", job.name)
    metrics.WORKER_JOBS.labels(job.name, outcome).inc()
    metrics.WORKER_JOB_SECONDS.labels(job.name).observe(time.perf_counter() - started)


async def run_once(services: Services) -> None:
    """Every job once, in order; retention is left to the long-running worker."""
    for job in jobs():
        if job.name != "retention":
            await run_job(job, services)


async def run_forever(services: Services, stop: asyncio.Event | None = None) -> None:
    """Run each job on its own interval until `stop` is set."""
    stop = stop or asyncio.Event()
    interval_of = {"heartbeat": services.settings.worker_heartbeat_s}

    async def loop(job: Job) -> None:
        while not stop.is_set():
            await run_job(job, services)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_of.get(job.name, job.interval_s))
            except TimeoutError:
                pass

    await asyncio.gather(*(loop(job) for job in jobs()))
