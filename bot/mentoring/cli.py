"""`sanad mentor add EMAIL --languages ar,en --role mentor|lead [--telegram-user-id ID] [--capacity N]
[--password P | stdin | prompt]`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from bot.mentoring.accounts import AccountError, add_mentor
from bot.runtime.settings import Settings
from bot.storage.db import Database


def register_cli(subparsers: Any) -> None:
    """Add the `mentor` command group to the `sanad` parser."""
    mentor = subparsers.add_parser("mentor", help="manage mentor console accounts")
    actions = mentor.add_subparsers(dest="mentor_command", required=True)
    add = actions.add_parser("add", help="create a mentor (or update an existing one)")
    add.add_argument("email")
    add.add_argument("--languages", required=True, help="comma-separated: en,ar,fa,fr,de")
    add.add_argument("--role", choices=["mentor", "lead"], default="mentor")
    add.add_argument("--name", default=None, help="name the learner sees")
    add.add_argument("--password", default=None, help="omit to be prompted (or pipe it on stdin)")
    add.add_argument("--telegram-user-id", type=int, default=None,
                     help="the mentor's Telegram account, for the mentor group (see the README)")
    add.add_argument("--capacity", type=int, default=None,
                     help="open conversations above which none is offered to them (default 5)")
    add.set_defaults(func=_run_add)


def _read_password(args: argparse.Namespace) -> str:
    if args.password:
        return str(args.password)
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat: "):
        raise AccountError("the passwords differ")
    return first


async def _add(settings: Settings, args: argparse.Namespace, password: str) -> str:
    db = Database(settings.database_url)
    try:
        if db.is_sqlite:
            await db.create_all()
        async with db.session() as session:
            mentor = await add_mentor(session, args.email, password, args.languages, args.role, args.name,
                                      telegram_user_id=args.telegram_user_id, capacity=args.capacity)
            linked = f"; telegram {mentor.telegram_user_id}" if mentor.telegram_user_id else ""
            return (f"mentor {mentor.id} {mentor.email} ({mentor.role}; {mentor.languages}; "
                    f"capacity {mentor.capacity}{linked})")
    finally:
        await db.dispose()


def _run_add(args: argparse.Namespace) -> int:
    try:
        password = _read_password(args)
        print(asyncio.run(_add(Settings.from_env(), args, password)))
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
