"""The whole Sanad stack with the real Rasa model, for end-to-end tests and `bench/gateway_rasa.py`.

Processes: the gateway (uvicorn, subprocess), the rasa-sdk action server (subprocess), the Rasa
server (`.venv-rasa`, subprocess, run from `nlu/`). In this process, on a thread of its own: local
doubles of Telegram's Bot API and Twilio. Storage: a PostgreSQL database of this run + a Redis key
prefix, Rasa's SQL tracker store in a PostgreSQL database of its own (or SQLite files without Redis).

Run as `python -m tests.e2e.stack gateway PORT` it is the gateway process itself (the real
`create_app`, with the redelivery interval taken from `E2E_REDELIVERY_INTERVAL_S`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bot.runtime.settings import PROJECT_ROOT, Settings

TELEGRAM_TOKEN = "123456:E2E-token"
TELEGRAM_SECRET = "e2e-webhook-secret"
TWILIO_SID = "AC" + "e" * 32
TWILIO_TOKEN = "e2e-twilio-auth-token"
TWILIO_FROM = "whatsapp:+14155238886"
PG_ADMIN_DSN = os.environ.get("SANAD_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = PG_ADMIN_DSN.rsplit("/", 1)[0]
REDIS_URL = os.environ.get("SANAD_TEST_REDIS", "redis://127.0.0.1:6379/0")
METRICS_TOKEN = "e2e-metrics-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what}: not ready after {timeout_s} s\n{tail}")


class DoublesThread:
    """Bot API and Twilio doubles served by an event loop on a thread of their own.

    The tests' event loops come and go; the doubles live for the whole session. Their
    `sent` lists are read from the tests (appends are atomic under the GIL)."""

    def __init__(self) -> None:
        from tests.doubles import BotApiDouble, TwilioDouble

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-doubles", daemon=True)
        self.thread.start()
        self.bot_api = BotApiDouble()
        self.twilio = TwilioDouble()
        self.call(self.bot_api.start())
        self.call(self.twilio.start())

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        try:
            self.call(self.bot_api.stop())
            self.call(self.twilio.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


class Stack:
    """Start, restart and stop the processes; build the env every process shares."""

    def __init__(self, tmp: Path, db: str = "postgres", redelivery_interval_s: float = 0.0,
                 gateway_command: list[str] | None = None, extra_env: dict[str, str] | None = None,
                 rasa_servers: int = 1) -> None:
        if db not in ("postgres", "sqlite"):
            raise ValueError("db is postgres or sqlite")
        if rasa_servers > 1 and db != "postgres":
            raise ValueError("several Rasa servers share a tracker store in PostgreSQL")
        self.tmp, self.db = tmp, db
        self.run_id = uuid.uuid4().hex[:10]
        self.db_name = f"sanad_e2e_{self.run_id}"
        self.redelivery_interval_s = redelivery_interval_s
        self.gateway_port, self.actions_port = free_port(), free_port()
        self.rasa_ports = [free_port() for _ in range(rasa_servers)]
        self.rasa_port = self.rasa_ports[0]
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.rasa_urls = [f"http://127.0.0.1:{port}" for port in self.rasa_ports]
        self.rasa_url = self.rasa_urls[0]
        self.gateway_command = gateway_command or [PYTHON, "-m", "tests.e2e.stack", "gateway", str(self.gateway_port)]
        self.extra_env = dict(extra_env or {})
        self.doubles: DoublesThread | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.actions: subprocess.Popen[bytes] | None = None
        self.rasa: subprocess.Popen[bytes] | None = None
        self.more_rasa: list[subprocess.Popen[bytes]] = []  # the second and later Rasa servers
        self.model: Path | None = None
        self.config_dir: Path | None = None
        self.env: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    # --- set-up -------------------------------------------------------------------

    @property
    def bot_api(self) -> Any:
        if self.doubles is None:
            raise RuntimeError("stack not started")
        return self.doubles.bot_api

    @property
    def twilio(self) -> Any:
        if self.doubles is None:
            raise RuntimeError("stack not started")
        return self.doubles.twilio

    def settings(self) -> Settings:
        return Settings.from_env(self.env, dotenv=self.tmp / "none.env")

    def _database_env(self) -> dict[str, str]:
        if self.db == "sqlite":
            return {"DATABASE_URL": f"sqlite+aiosqlite:///{self.tmp / 'sanad.db'}"}
        return {
            "DATABASE_URL": f"{PG_BASE.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{self.db_name}",
            "REDIS_URL": REDIS_URL,
            "SANAD_REDIS_PREFIX": f"sanade2e:{self.run_id}:",
        }

    async def _create_database(self) -> None:
        import asyncpg

        import bot.storage.models  # noqa: F401  (every table on Base.metadata)
        from bot.storage.db import Base, Database

        if self.db == "postgres":
            conn = await asyncpg.connect(PG_ADMIN_DSN)
            try:
                await conn.execute(f'CREATE DATABASE "{self.db_name}"')
                await conn.execute(f'CREATE DATABASE "{self.db_name}_rasa"')
            finally:
                await conn.close()
        database = Database(self.env["DATABASE_URL"])
        async with database.engine.begin() as c:
            await c.run_sync(Base.metadata.create_all)
        await database.dispose()

    async def _drop_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}_rasa" WITH (FORCE)')
        finally:
            await conn.close()
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        try:
            async for key in client.scan_iter(match=f"sanade2e:{self.run_id}:*"):
                await client.delete(key)
        finally:
            await client.aclose()

    def start(self) -> Stack:
        from bot.runtime.rasa import train, write_endpoints

        started = time.monotonic()
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.doubles = DoublesThread()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SANAD_", "TELEGRAM_", "TWILIO_"))
               and k not in ("DATABASE_URL", "REDIS_URL", "PLATFORM_API_URL", "PLATFORM_API_TOKEN", "RASA_URL")},
            **self._database_env(),
            "SANAD_VAR_DIR": str(self.tmp),
            "SANAD_SECRET_KEY": "e2e-secret-key-0123456789-abcdefghijklmnop",
            "PUBLIC_BASE_URL": self.gateway_url,
            "SANAD_DEMO_PLATFORM_URL": f"{self.gateway_url}/demo-platform",
            "RASA_URL": ",".join(self.rasa_urls),
            "RASA_TIMEOUT_S": "15",
            "ACTION_SERVER_URL": f"http://127.0.0.1:{self.actions_port}/webhook",
            "RASA_TRACKER_STORE_URL": (f"sqlite:///{self.tmp / 'rasa_tracker.db'}" if self.db == "sqlite"
                                       else f"{PG_BASE}/{self.db_name}_rasa"),
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET,
            "TELEGRAM_API_BASE_URL": self.bot_api.url,
            "TWILIO_ACCOUNT_SID": TWILIO_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_WHATSAPP_FROM": TWILIO_FROM,
            "TWILIO_API_BASE_URL": self.twilio.url,
            "E2E_REDELIVERY_INTERVAL_S": str(self.redelivery_interval_s),
            "METRICS_TOKEN": METRICS_TOKEN,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "PYTHONWARNINGS": "ignore",
            **self.extra_env,
        }
        asyncio.run(self._create_database())
        t0 = time.monotonic()
        # SANAD_E2E_MODEL pins a trained model (e.g. while nlu/ changes under you); else train, cached by hash
        pinned = os.environ.get("SANAD_E2E_MODEL")
        self.model = Path(pinned).resolve() if pinned else train(quiet=True)
        if not self.model.is_file():
            raise RuntimeError(f"no model at {self.model}")
        self.timings["train_s"] = time.monotonic() - t0
        self.config_dir = write_endpoints(self.settings(), self.gateway_url, out_dir=self.tmp / "rasa")
        # all three start at once: Rasa's ~30 s model load dominates
        self.actions = self._spawn([PYTHON, "-m", "rasa_sdk", "--actions", "flows", "--port", str(self.actions_port)],
                                   PROJECT_ROOT, "actions.log")
        self.gateway = self._spawn(self.gateway_command, PROJECT_ROOT, "gateway.log")
        self.start_rasa(wait=False)
        self.start_more_rasa()
        wait_until(lambda: http_get(f"{self.gateway_url}/healthz")[0] in (200, 503), 60, "gateway", self.gateway,
                   self.tmp / "gateway.log")
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.actions_port}/health")[0] == 200, 60, "action server",
                   self.actions, self.tmp / "actions.log")
        self.wait_rasa()
        for url, proc in zip(self.rasa_urls[1:], self.more_rasa, strict=True):
            self.wait_rasa(url=url, proc=proc)
        self.timings["start_s"] = time.monotonic() - started
        return self

    def _spawn(self, command: list[str], cwd: Path, log_name: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log_name, "ab") as log:
            return subprocess.Popen(
                command, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    # --- Rasa ---------------------------------------------------------------------

    def start_rasa(self, wait: bool = True) -> None:
        from bot.runtime.rasa import rasa_command

        if self.model is None or self.config_dir is None:
            raise RuntimeError("stack not started")
        t0 = time.monotonic()
        command = rasa_command(self.settings(), self.model, self.config_dir, self.rasa_port)
        self.rasa = self._spawn(command, PROJECT_ROOT / "nlu", "rasa.out")
        if wait:
            self.wait_rasa()
            self.timings["rasa_restart_s"] = time.monotonic() - t0

    def start_more_rasa(self) -> None:
        """The second and later Rasa servers (they stay up through stop_rasa/start_rasa)."""
        from bot.runtime.rasa import rasa_command

        if self.model is None or self.config_dir is None:
            raise RuntimeError("stack not started")
        for index, port in enumerate(self.rasa_ports[1:], start=2):
            command = rasa_command(self.settings(), self.model, self.config_dir, port)
            self.more_rasa.append(self._spawn(command, PROJECT_ROOT / "nlu", f"rasa{index}.out"))

    def wait_rasa(self, timeout_s: float = 240.0, url: str | None = None,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
        """Rasa answers `GET /` while it still loads the model: ready is when `/status` names a model."""
        url = url or self.rasa_url

        def model_loaded() -> bool:
            status, body = http_get(f"{url}/status")
            return status == 200 and bool(json.loads(body).get("model_id"))

        wait_until(model_loaded, timeout_s, "rasa", proc or self.rasa, self.tmp / "rasa.out")

    def stop_rasa(self) -> None:
        _terminate(self.rasa)
        self.rasa = None

    # --- tear-down ------------------------------------------------------------------

    def stop(self) -> None:
        for proc in (self.rasa, *self.more_rasa, self.gateway, self.actions):
            _terminate(proc)
        self.rasa = self.gateway = self.actions = None
        self.more_rasa = []
        if self.doubles is not None:
            self.doubles.stop()
            self.doubles = None
        if self.db == "postgres" and self.env:
            asyncio.run(self._drop_database())

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group (Rasa forks workers), then SIGKILL what is left."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def run_gateway(port: int) -> None:
    """The gateway process of the stack: the real app under uvicorn."""
    import uvicorn

    from bot.privacy.logs import configure_logging
    from bot.web.app import create_app

    settings = Settings.from_env()
    configure_logging(settings, "INFO")
    app = create_app(settings=settings, run_worker=False,
                     redelivery_interval_s=float(os.environ.get("E2E_REDELIVERY_INTERVAL_S", "5")))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gateway":
        run_gateway(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m tests.e2e.stack gateway PORT")
