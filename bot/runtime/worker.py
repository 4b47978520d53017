"""The worker: outbox sending, reminder planning, hand-off timers, retention, redelivery.

`sanad worker` loops; `sanad worker --once` plans due reminders, sends everything
queued and exits. Without Redis the gateway runs these loops in its own process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.conversation import pipeline
from bot.outbox.sender import OutboxSender, apply_early_receipts
from bot.runtime.services import Services

log = logging.getLogger(__name__)

Job = Callable[[Services], Awaitable[None]]


async def send_queued(services: Services) -> None:
    sender = services.extras.get("sender")
    if not isinstance(sender, OutboxSender):
        sender = OutboxSender(services)
        services.extras["sender"] = sender
    while await sender.run_once(200) > 0:
        pass


async def redeliver(services: Services) -> None:
    await pipeline.redeliver_pending(services)


async def early_receipts(services: Services) -> None:
    await apply_early_receipts(services)


def jobs() -> list[tuple[str, Job, float]]:
    """(name, job, interval in seconds) of every periodic job."""
    from bot.analytics import jobs as analytics_jobs
    from bot.mentoring import sla
    from bot.mentoring.group import sender as mentor_group
    from bot.privacy import retention
    from bot.reminders import jobs as reminder_jobs

    return [
        ("reminders", reminder_jobs.job, 30.0),
        ("send", send_queued, 1.0),
        ("handoff_sla", sla.job, 15.0),
        ("mentor_group", mentor_group.job, 2.0),
        ("retention", retention.job, 3600.0),
        ("redeliver", redeliver, 5.0),
        ("early_receipts", early_receipts, 5.0),
        ("analytics", analytics_jobs.job, 60.0),
    ]


async def run_job(name: str, job: Job, services: Services) -> None:
    try:
        await job(services)
    except Exception:
        # one failing job must not stop the others; it runs again on its next tick
        log.exception("worker job %s failed", name)


async def run_once(services: Services) -> None:
    """Every job once, in order (reminders are planned before sending)."""
    for name, job, _interval in jobs():
        if name == "retention":
            continue
        await run_job(name, job, services)


async def run_forever(services: Services, stop: asyncio.Event | None = None) -> None:
    """Run each job on its own interval until `stop` is set."""
    stop = stop or asyncio.Event()

    async def loop(name: str, job: Job, interval_s: float) -> None:
        while not stop.is_set():
            await run_job(name, job, services)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    await asyncio.gather(*(loop(name, job, interval) for name, job, interval in jobs()))
