"""The worker (issue 11.18): a timeout per job, singleton jobs on one replica, a heartbeat the health
check reads, Prometheus metrics of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from bot.runtime.services import Services
from bot.runtime.worker import Job, run_job
from tests.conftest import REDIS_URL
from tests.doubles import free_port

SANAD = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "sanad")


def jobs_counted(job: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("sanad_worker_jobs_total", {"job": job, "outcome": outcome}) or 0.0


async def test_a_hung_job_is_stopped_at_its_timeout_and_the_next_runs(sqlite_services: Services) -> None:
    svc = sqlite_services
    svc.settings = svc.settings.replace(worker_job_timeout_s=0.2)
    never = asyncio.Event()
    ran: list[str] = []

    async def hangs(services: Services) -> None:
        await never.wait()  # a platform call that never answers

    async def works(services: Services) -> None:
        ran.append("works")

    before = jobs_counted("hangs", "timeout")
    await run_job(Job("hangs", hangs, 30.0), svc)
    await run_job(Job("works", works, 30.0), svc)
    assert ran == ["works"]
    assert jobs_counted("hangs", "timeout") == before + 1


async def test_a_singleton_job_runs_on_one_replica_at_a_time(any_services: Services) -> None:
    first = any_services
    # a second replica: its own process state, the same Redis (or, without Redis, the same process)
    second = Services.build(first.settings) if first.settings.redis_url else first
    inside, leave = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    async def plan(services: Services) -> None:
        runs.append("plan")
        inside.set()
        await leave.wait()

    job = Job("plan-test", plan, 30.0, singleton=True)
    try:
        running = asyncio.create_task(run_job(job, first))
        await inside.wait()
        skipped = jobs_counted("plan-test", "skipped")
        await run_job(job, second)  # the other replica finds the job running and skips it
        assert runs == ["plan"] and jobs_counted("plan-test", "skipped") == skipped + 1
        leave.set()
        await running
        await run_job(job, second)  # once it is done, any replica may run it
        assert runs == ["plan", "plan"]
    finally:
        leave.set()
        if second is not first:
            await second.close()


@pytest.mark.services
def test_the_health_check_reads_the_heartbeat_of_a_live_worker_and_fails_a_hung_one(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SANAD_", "TELEGRAM_", "TWILIO_"))},
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'sanad.db'}", "REDIS_URL": REDIS_URL,
        "SANAD_REDIS_PREFIX": f"sanadtest:worker:{uuid.uuid4().hex[:8]}:", "SANAD_INSTANCE_ID": "worker-under-test",
        "SANAD_VAR_DIR": str(tmp_path), "SANAD_SECRET_KEY": "worker-test-secret-key-0123456789abcdef",
        "RASA_URL": "http://127.0.0.1:9", "WORKER_HEARTBEAT_S": "1", "WORKER_METRICS_PORT": str(free_port()),
    }
    subprocess.run([SANAD, "db", "upgrade"], env=env, check=True, capture_output=True)

    def check() -> int:
        return subprocess.run([SANAD, "worker", "--check"], env=env, capture_output=True).returncode

    assert check() == 1  # no worker has written a heartbeat
    with open(tmp_path / "worker.log", "ab") as log:
        proc = subprocess.Popen([SANAD, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        metrics = ""
        deadline = time.monotonic() + 60
        while 'sanad_worker_jobs_total{job="heartbeat",outcome="ok"}' not in metrics:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics") as resp:
                    metrics = resp.read().decode()
            except OSError:
                time.sleep(0.2)
        assert "sanad_worker_heartbeat_timestamp_seconds" in metrics
        assert check() == 0
        proc.send_signal(signal.SIGSTOP)  # hung: the process lives, its loop does not run
        time.sleep(3.5)  # three heartbeat intervals without a heartbeat
        assert check() == 1
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)

