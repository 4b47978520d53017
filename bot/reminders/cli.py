"""`sanad broadcast create|preview|list|status|cancel`."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from bot.runtime.services import Services
from bot.runtime.settings import LANGUAGES, Settings


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _run(work: Callable[[Services], Awaitable[int]]) -> int:
    async def main() -> int:
        services = Services.build(Settings.from_env())
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(main())


def cmd_broadcast(args: argparse.Namespace) -> int:
    from bot.reminders import broadcasts as b

    action = args.broadcast_command

    async def work(services: Services) -> int:
        try:
            if action == "create":
                texts = {lang: getattr(args, f"text_{lang}") for lang in LANGUAGES if getattr(args, f"text_{lang}")}
                row = await b.create_broadcast(
                    services, texts=texts or None, catalogue_key=args.key, segment=args.segment,
                    send_at=args.at, created_by=args.created_by,
                )
                _print(b.describe(row))
                return 0
            if action == "preview":
                _print(await b.preview(services, b.parse_segment(args.segment)))
                return 0
            if action == "list":
                _print(await b.list_broadcasts(services, args.limit))
                return 0
            if action == "status":
                found = await b.progress(services, args.id)
            else:
                found = await b.cancel_broadcast(services, args.id)
            if found is None:
                print(f"sanad: no broadcast {args.id}")
                return 1
            _print(found)
            return 0
        except b.BroadcastError as exc:
            print(f"sanad: {exc}")
            return 2

    return _run(work)


def register_cli(subparsers: Any) -> None:
    """Add `sanad broadcast …`."""
    parser = subparsers.add_parser("broadcast", help="send a message to a segment of learners")
    sub = parser.add_subparsers(dest="broadcast_command", required=True)
    segment_help = (
        "key=value,… with key in language, country, channel, course, enrolment_status, linked; a|b for either"
    )

    create = sub.add_parser("create", help="create a broadcast (sent by the worker at --at, or now)")
    for lang in LANGUAGES:
        create.add_argument(f"--text-{lang}", dest=f"text_{lang}", help=f"text in {lang}")
    create.add_argument("--key", help="a catalogue key instead of texts")
    create.add_argument("--segment", default="", help=segment_help)
    create.add_argument("--at", help="ISO 8601 time with offset (default: now)")
    create.add_argument("--created-by", default="cli")

    prev = sub.add_parser("preview", help="count the recipients of a segment")
    prev.add_argument("--segment", default="", help=segment_help)

    lst = sub.add_parser("list", help="recent broadcasts")
    lst.add_argument("--limit", type=int, default=20)

    for name, text in (("status", "progress of a broadcast"), ("cancel", "cancel a broadcast")):
        one = sub.add_parser(name, help=text)
        one.add_argument("id", type=int)
    parser.set_defaults(func=cmd_broadcast)
