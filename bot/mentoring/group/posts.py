"""What goes into a hand-off's topic, queued in the transaction of the change it reports.

When `TELEGRAM_MENTOR_GROUP_ID` (or the `_<LANG>` one of the hand-off's language) is set, a
new hand-off gets a `mentor_group_topics` row and a card; then every learner message,
mentor reply, note and state change of the hand-off becomes a `mentor_group_posts` row in
the same transaction. Right after the commit the posts are sent in order
(`bot/mentoring/group/sender.py`); the worker sends whatever that missed. Posts point at
the rows they show (learner messages, outbox rows, notes) instead of copying their text, so
an erasure takes them along. Every function here is a no-op when no group is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mentoring.events import after_commit
from bot.storage.models import Handoff, Mentor, MentorGroupPost, MentorGroupTopic

if TYPE_CHECKING:
    from bot.runtime.services import Services


def group_for(services: Services, language: str) -> int | None:
    """The mentor group of a language's hand-offs, when one is configured and Telegram is on."""
    if "telegram" not in services.channels:
        return None
    return services.settings.mentor_group_for(language)


def _kick_after_commit(services: Services, session: AsyncSession, handoff_id: int) -> None:
    from bot.mentoring.group.sender import flush_handoff

    async def flush() -> None:
        await flush_handoff(services, handoff_id)

    after_commit(session, flush)


async def open_topic(services: Services, session: AsyncSession, handoff: Handoff) -> None:
    """A new hand-off: its topic (created by the sender) and the card with the claim button."""
    chat_id = group_for(services, handoff.language)
    if chat_id is None:
        return
    session.add(MentorGroupTopic(handoff_id=handoff.id, chat_id=chat_id, status="creating"))
    session.add(MentorGroupPost(handoff_id=handoff.id, kind="card"))
    await session.flush()
    _kick_after_commit(services, session, handoff.id)


async def _has_topic(services: Services, session: AsyncSession, handoff: Handoff) -> bool:
    if group_for(services, handoff.language) is None:
        return False
    found = (await session.execute(
        select(MentorGroupTopic.id).where(MentorGroupTopic.handoff_id == handoff.id))).first()
    return found is not None


async def post(services: Services, session: AsyncSession, handoff: Handoff, kind: str, *,
               inbound_id: int | None = None, outbox_id: int | None = None, note_id: int | None = None,
               params: dict[str, Any] | None = None) -> None:
    """Queue one post in the hand-off's topic (if it has one) and send it right after the commit."""
    if not await _has_topic(services, session, handoff):
        return
    session.add(MentorGroupPost(handoff_id=handoff.id, kind=kind, inbound_id=inbound_id, outbox_id=outbox_id,
                                note_id=note_id, params=params))
    await session.flush()
    _kick_after_commit(services, session, handoff.id)


async def notice(services: Services, session: AsyncSession, handoff: Handoff, key: str, *,
                 mention: list[Mentor] | None = None, pin: bool = False, silent: bool = True,
                 language: str | None = None, **args: str) -> None:
    """A state change in the topic: catalogue `key` in the hand-off's language (or `language`: an
    answer to one mentor), naming mentors, never learner text; `mention` notifies those mentors'
    linked Telegram accounts."""
    await notice_with(services, session, handoff, key, args, mention=mention, pin=pin, silent=silent,
                      language=language)


async def notice_with(services: Services, session: AsyncSession, handoff: Handoff, key: str, args: dict[str, str],
                      *, mention: list[Mentor] | None = None, pin: bool = False, silent: bool = True,
                      language: str | None = None) -> None:
    """`notice` with the catalogue parameters in a dict."""
    mentions = [[m.telegram_user_id, m.display_name or m.email.split("@", 1)[0]]
                for m in (mention or []) if m.telegram_user_id]
    await post(services, session, handoff, "notice",
               params={"key": key, "args": args, "mentions": mentions, "pin": pin, "language": language,
                       "silent": silent and not mentions})


async def card_changed(services: Services, session: AsyncSession, handoff: Handoff, *,
                       renamed: bool = False, close: bool = False) -> None:
    """The hand-off's state changed: edit the card (and the topic's name, or close the topic)."""
    await post(services, session, handoff, "card_update", params={"rename": renamed, "close": close})
