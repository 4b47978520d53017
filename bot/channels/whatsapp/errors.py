"""Twilio's error codes and what each means for Sanad: the one place they are read.

Used for a send's answer (bot/channels/whatsapp/channel.py) and for a status callback's
`ErrorCode` (bot/outbox/sender.py). Codes: https://www.twilio.com/docs/api/errors
"""

from __future__ import annotations

from bot.channels.base import SendErrorKind

STOP_CODES = frozenset({"21610"})  # recipient replied STOP / unsubscribed
WINDOW_CODES = frozenset({"63016"})  # free-form message outside the 24-hour session window
PERMANENT_CODES = frozenset({"21211", "21614", "63003", "63024"})  # invalid or unreachable number


def error_kind(code: str | None, http_status: int | None = None) -> SendErrorKind:
    """The kind of a Twilio failure, from its error code and (for a REST answer) its HTTP status."""
    code = (code or "").strip()
    if code in STOP_CODES:
        return SendErrorKind.CONTACT_STOPPED
    if code in WINDOW_CODES:
        return SendErrorKind.OUTSIDE_WINDOW
    if http_status == 429:
        return SendErrorKind.THROTTLED
    if http_status is not None and http_status >= 500:
        return SendErrorKind.TRANSIENT
    if code in PERMANENT_CODES or (http_status is not None and 400 <= http_status < 500):
        return SendErrorKind.PERMANENT
    return SendErrorKind.TRANSIENT
