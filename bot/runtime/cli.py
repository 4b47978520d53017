"""The `sanad` command: run, train, worker, actions, gateway, db, link-token, mentor, broadcast, learner, nlu."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bot.runtime.settings import PROJECT_ROOT, Settings


def _settings() -> Settings:
    return Settings.from_env()


def _setup_logging(settings: Settings, level: str = "INFO") -> None:
    from bot.privacy.logs import configure_logging

    configure_logging(settings, level)


# --- db ---------------------------------------------------------------------------

def db_upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply the Alembic migrations to DATABASE_URL."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parents[1] / "storage" / "migrations"))
    cfg.attributes["database_url"] = settings.database_url
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(cfg, revision)


def cmd_db(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.db_command == "upgrade":
        db_upgrade(settings, args.revision)
        print("database is up to date")
    return 0


# --- train / actions / gateway / worker -------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from bot.runtime.rasa import train

    path = train(force=args.force)
    print(f"model: {path}")
    return 0


def action_server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "rasa_sdk", "--actions", "flows", "--port", str(port)]


def cmd_actions(args: argparse.Namespace) -> int:
    os.execv(sys.executable, action_server_command(args.port))  # noqa: S606  (our own interpreter)


def cmd_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.web.app import create_app

    settings = _settings()
    _setup_logging(settings)
    app = create_app(settings=settings, run_worker=args.with_worker or None)
    # X-Forwarded-For is trusted by the app, from FORWARDED_ALLOW_IPS only (bot/security/client_address.py)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=False)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from bot.runtime.services import Services
    from bot.runtime.worker import run_forever, run_once

    settings = _settings()
    _setup_logging(settings)

    async def main() -> None:
        services = Services.build(settings)
        from bot.outbox.sender import OutboxSender
        from bot.web.app import load_components

        load_components()
        services.extras["sender"] = OutboxSender(services)
        try:
            if args.once:
                await run_once(services)
            else:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await run_forever(services, stop)
        finally:
            await services.close()

    asyncio.run(main())
    return 0


# --- run: everything for the embedded default -------------------------------------

def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None,
               ready: Callable[[bytes], bool] | None = None) -> bool:
    """Poll `url` until it answers (and `ready(body)` holds); False when `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310  (local URL we built)
                if resp.status < 500 and (ready is None or ready(resp.read())):
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _rasa_model_loaded(body: bytes) -> bool:
    """Rasa answers HTTP while it still loads the model; `/status` names the model once it is loaded."""
    try:
        status = json.loads(body)
    except ValueError:
        return False
    return isinstance(status, dict) and bool(status.get("model_id"))


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.runtime.rasa import rasa_command, train, write_endpoints
    from bot.web.app import create_app

    settings = _settings()
    _setup_logging(settings)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    print("[1/4] database", flush=True)
    db_upgrade(settings)
    print("[2/4] Rasa model", flush=True)
    model = train()
    # Rasa and the action server call the gateway (NLG, demo platform): a wildcard address is not a URL to call
    local_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host  # noqa: S104  (compared, not bound)
    gateway_url = f"http://{local_host}:{args.port}"
    config_dir = write_endpoints(settings, gateway_url)
    # the embedded default runs one Rasa: the first server of RASA_URL (several are for the scaled
    # deployment, sharing a tracker store in PostgreSQL and a lock store in Redis)
    rasa_url = settings.rasa_url.split(",")[0].strip()
    rasa_port = urlparse(rasa_url).port or 5005
    action_port = urlparse(settings.action_server_url).port or 5055
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", SQLALCHEMY_SILENCE_UBER_WARNING="1")
    env.setdefault("SANAD_DEMO_PLATFORM_URL", f"{gateway_url}/demo-platform")
    print("[3/4] action server and Rasa (loading the model takes ~30 s)", flush=True)
    logs = settings.var_dir
    children: list[subprocess.Popen[bytes]] = []
    with open(logs / "actions.log", "ab") as actions_log, open(logs / "rasa.out", "ab") as rasa_log:
        children.append(subprocess.Popen(  # noqa: S603
            action_server_command(action_port), cwd=PROJECT_ROOT, env=env, stdout=actions_log, stderr=subprocess.STDOUT,
        ))
        children.append(subprocess.Popen(  # noqa: S603
            rasa_command(settings, model, config_dir, rasa_port), cwd=PROJECT_ROOT / "nlu", env=env,
            stdout=rasa_log, stderr=subprocess.STDOUT,
        ))

    def stop_children(*_: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    import atexit

    atexit.register(stop_children)
    os.environ["SANAD_DEMO_PLATFORM_URL"] = env["SANAD_DEMO_PLATFORM_URL"]
    os.environ["RASA_URL"] = rasa_url
    app = create_app(settings=Settings.from_env())

    def announce() -> None:
        ready = _wait_http(rasa_url + "/status", 300, children[1], _rasa_model_loaded)
        if ready:
            print(f"[4/4] Sanad is ready: open {gateway_url}/chat  (mentor console: {gateway_url}/console)", flush=True)
            print("      Ctrl-C stops everything.", flush=True)
        else:
            print(f"Rasa did not start; see {logs / 'rasa.out'}", flush=True)

    import threading

    threading.Thread(target=announce, daemon=True).start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=False)
    finally:
        stop_children()
    return 0


def cmd_telegram(args: argparse.Namespace) -> int:
    """Register the webhook with Telegram (an explicit step, never done implicitly)."""
    from bot.channels.telegram.channel import TelegramChannel, webhook_secret

    settings = _settings()

    async def main() -> None:
        channel = TelegramChannel(settings)
        url = f"{settings.public_base_url}/webhooks/telegram"
        await channel.bot.set_webhook(url=url, secret_token=webhook_secret(settings),
                                      allowed_updates=["message", "callback_query", "my_chat_member"])
        await channel.close()
        print(f"webhook set to {url}")

    asyncio.run(main())
    return 0


# --- wiring ---------------------------------------------------------------------

Registrar = Callable[[Any], None]


def component_cli() -> list[Registrar]:
    from bot.learners.linking import register_cli as linking_cli
    from bot.mentoring.cli import register_cli as mentoring_cli
    from bot.privacy.cli import register_cli as privacy_cli
    from bot.reminders.cli import register_cli as reminders_cli
    from bot.review.cli import register_cli as review_cli

    return [linking_cli, mentoring_cli, reminders_cli, privacy_cli, review_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sanad", description="Sanad student-support assistant")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start everything on the embedded default (SQLite, demo platform, web chat)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.set_defaults(func=cmd_run)

    train = sub.add_parser("train", help="train the Rasa model (skipped when nlu/ is unchanged)")
    train.add_argument("--force", action="store_true")
    train.set_defaults(func=cmd_train)

    worker = sub.add_parser("worker", help="run the worker")
    worker.add_argument("--once", action="store_true", help="plan due reminders, send everything queued, exit")
    worker.set_defaults(func=cmd_worker)

    gateway = sub.add_parser("gateway", help="run only the gateway (scaled deployment)")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8000)
    gateway.add_argument("--with-worker", action="store_true")
    gateway.set_defaults(func=cmd_gateway)

    actions = sub.add_parser("actions", help="run the Rasa action server (flows/)")
    actions.add_argument("--port", type=int, default=5055)
    actions.set_defaults(func=cmd_actions)

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade")
    upgrade.add_argument("revision", nargs="?", default="head")
    db.set_defaults(func=cmd_db)

    telegram = sub.add_parser("telegram-webhook", help="register the Telegram webhook at PUBLIC_BASE_URL")
    telegram.set_defaults(func=cmd_telegram)

    for register in component_cli():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear line for the operator instead of a traceback
        if os.environ.get("SANAD_DEBUG"):
            raise
        print(f"sanad: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
