"""`sanad mentor add EMAIL --languages ar,en --role mentor|lead [--telegram-user-id ID] [--capacity N]
[--password P | stdin | prompt]`, `sanad mentor deactivate EMAIL` and `sanad mentor logout EMAIL`
(end every console session)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.mentoring.accounts import AccountError, add_mentor, deactivate_mentor, log_out_everywhere
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
    deactivate = actions.add_parser("deactivate", help="close a mentor's account and end their console sessions")
    deactivate.add_argument("email")
    deactivate.set_defaults(func=_run_on_mentor(_deactivate))
    logout = actions.add_parser("logout", help="end every console session of a mentor (log out everywhere)")
    logout.add_argument("email")
    logout.set_defaults(func=_run_on_mentor(_logout))


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


async def _in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[str]]) -> str:
    """Run `work` in one transaction on the configured database; its text is what the command prints."""
    db = Database(settings.database_url)
    try:
        async with db.session() as session:
            return await work(session)
    finally:
        await db.dispose()


async def _deactivate(session: AsyncSession, email: str) -> str:
    mentor = await deactivate_mentor(session, email)
    return f"mentor {mentor.id} {mentor.email} deactivated; console sessions ended"


async def _logout(session: AsyncSession, email: str) -> str:
    return f"{await log_out_everywhere(session, email)} console session(s) ended"


def _run_on_mentor(action: Callable[[AsyncSession, str], Awaitable[str]]) -> Callable[[argparse.Namespace], int]:
    """The `func` of a subcommand that acts on the mentor named by `email`."""

    def run(args: argparse.Namespace) -> int:
        try:
            print(asyncio.run(_in_session(Settings.from_env(), lambda session: action(session, args.email))))
        except AccountError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    return run
