"""`sanad learner erase|export|reset-pin`: staff tools of the privacy area."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.i18n.catalogue import get_catalogue
from bot.runtime.coordination import make_coordinator
from bot.runtime.services import Services
from bot.runtime.settings import Settings
from bot.storage.db import Database


def _services(settings: Settings) -> Services:
    """Database, coordination and Rasa client only: these tools send nothing to learners directly."""
    from integrations.rasa import RasaClient

    services = Services(
        settings=settings,
        db=Database(settings.database_url),
        coord=make_coordinator(settings.redis_url, settings.redis_prefix),
        catalogue=get_catalogue(),
    )
    services.rasa = RasaClient(settings.rasa_url, timeout_s=settings.rasa_timeout_s, token=settings.rasa_token)
    return services


async def _with_services(work: Callable[[Services], Awaitable[int]], settings: Settings | None = None) -> int:
    services = _services(settings or Settings.from_env())
    try:
        return await work(services)
    finally:
        await services.close()


async def cmd_erase(services: Services, target: str) -> int:
    from bot.privacy.erasure import ErasureIncomplete, erase_contact

    try:
        report = await erase_contact(services, target, actor="admin")
    except ErasureIncomplete as exc:
        print(json.dumps(exc.report.as_dict(), indent=2))
        print("erasure incomplete: run the command again when every store is reachable", file=sys.stderr)
        return 2
    if not report.found:
        print(f"no contact or learner matches {target!r}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2))
    return 0


async def cmd_export(services: Services, target: str, out: Path | None) -> int:
    from bot.privacy.audit import audit
    from bot.privacy.export import SubjectNotFound, build_export, export_json, write_export

    try:
        if out is None:
            print(export_json(await build_export(services, target)))
        else:
            await write_export(services, target, out)
            print(f"written to {out}", file=sys.stderr)
    except SubjectNotFound:
        print(f"no contact or learner matches {target!r}", file=sys.stderr)
        return 1
    async with services.db.session() as session:
        audit(session, services.settings, actor="admin", action="export", contact_key=target)
    return 0


async def cmd_reset_pin(services: Services, target: str) -> int:
    from bot.privacy.erasure import resolve_subject
    from bot.privacy.pin import reset_pin

    async with services.db.session() as session:
        subject = await resolve_subject(session, target)
        ids = subject.contact_ids
    if len(ids) != 1:
        print(f"{target!r} matches {len(ids)} contacts: give one contact key or #id", file=sys.stderr)
        return 1
    await reset_pin(services, ids[0], actor="admin")
    print("PIN removed; the learner is told so with the next outbox run", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    action: str = args.learner_action
    target: str = args.target
    if action == "erase":
        return asyncio.run(_with_services(lambda s: cmd_erase(s, target)))
    if action == "export":
        return asyncio.run(_with_services(lambda s: cmd_export(s, target, args.out)))
    return asyncio.run(_with_services(lambda s: cmd_reset_pin(s, target)))


def _learner_subparsers(subparsers: Any) -> Any:
    """The `learner` command's own subparsers (another area may have created `learner` already)."""
    parser = subparsers.choices.get("learner") if hasattr(subparsers, "choices") else None
    if parser is None:
        parser = subparsers.add_parser("learner", help="a learner's data: erase, export, reset the PIN")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="learner_action", required=True)


def register_cli(subparsers: Any) -> None:
    """Add `sanad learner erase|export|reset-pin` to the `sanad` command."""
    learner = _learner_subparsers(subparsers)
    erase = learner.add_parser("erase", help="erase everything held on a contact or learner (GDPR Art. 17)")
    erase.add_argument("target", metavar="CONTACT_OR_LEARNER", help="contact key (telegram:123), #id or learner id")
    erase.set_defaults(func=_run, learner_action="erase")
    export = learner.add_parser("export", help="one JSON file of everything held on them (GDPR Art. 15)")
    export.add_argument("target", metavar="CONTACT_OR_LEARNER")
    export.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    export.set_defaults(func=_run, learner_action="export")
    reset = learner.add_parser("reset-pin", help="remove a learner's shared-phone PIN")
    reset.add_argument("target", metavar="CONTACT", help="contact key or #id")
    reset.set_defaults(func=_run, learner_action="reset-pin")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m bot.privacy.cli learner erase ...`) until `sanad` wires it."""
    parser = argparse.ArgumentParser(prog="sanad")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
