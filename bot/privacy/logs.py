"""Logs that carry no message text, names or phone numbers.

`contact_ref(key)` is what code logs instead of a contact key: a short keyed hash
(HMAC-SHA256 with the deployment's secret key), stable within a deployment so one
conversation can be followed through the logs, useless to anyone without the key.

`configure_logging(settings, level)` is called once by every process (gateway,
worker, CLI). It installs two layers, because a filter on one handler does not
see the records of handlers added later (pytest's caplog, uvicorn's):
- a log-record factory that redacts the formatted message and the traceback of
  every record, whichever handler will print it: contact keys become their
  hash, phone numbers and long digit runs become `[phone]`, Telegram bot tokens
  (inside Bot API URLs) become `[token]`;
- `PrivacyFilter` on the root handlers, which also drops message-text and name
  fields passed through `extra=` (JSON formatters print every extra field).
Client libraries that log request bodies or URLs with secrets at DEBUG/INFO
(python-telegram-bot, httpx, Twilio) are capped at WARNING.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.runtime.settings import Settings

# Used until `configure_logging`/`set_ref_secret` runs (one-off scripts, early imports).
_FALLBACK_SALT = "sanad-contact-ref-v1"
_secret: bytes = _FALLBACK_SALT.encode()

CONTACT_REF_PREFIX = "c_"
REDACTED = "[redacted]"
PHONE_MASK = "[phone]"
TOKEN_MASK = "[token]"  # noqa: S105  (a mask, not a secret)

# `extra=` fields that would carry what a learner wrote or who they are.
SENSITIVE_EXTRA_FIELDS: frozenset[str] = frozenset(
    {
        "text", "body", "message_text", "caption", "content", "transcript", "note",
        "first_name", "last_name", "display_name", "full_name", "username",
        "phone", "phone_number", "address", "from_number", "to_number",
    }
)

# Loggers of client libraries that print request parameters (aiosqlite: every statement's bound values at
# DEBUG) or URLs with tokens.
_NOISY_LOGGERS = (
    "telegram", "httpx", "httpcore", "twilio", "hpack", "aiohttp.access", "aiosqlite", "sqlalchemy.engine",
)

_CONTACT_KEY = re.compile(r"\b(telegram|whatsapp|web|tg|wa|sms):(\+?[A-Za-z0-9_\-]{3,64})")
_BOT_TOKEN = re.compile(r"\b(?:bot)?\d{5,}:[A-Za-z0-9_\-]{30,}")
# A phone-like run: optional +, digits with single spaces, dots, dashes or brackets between them.
_DIGIT_RUN = re.compile(r"(?<![\w/])\+?\(?\d(?:[\d]|[ .\-()]\d|\)\s?\d){5,}(?!\w)")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_ALREADY_REF = re.compile(rf"^{CONTACT_REF_PREFIX}[0-9a-f]+$")


def set_ref_secret(secret: str) -> None:
    """Key the contact hashes with the deployment's secret (done by `configure_logging`)."""
    global _secret
    _secret = (secret or _FALLBACK_SALT).encode()


def contact_ref(key: str | None, secret: str | None = None, length: int = 12) -> str:
    """Short keyed hash of a contact key (or address, learner id) for logs and audit entries."""
    if not key:
        return "-"
    if _ALREADY_REF.match(key):
        return key
    digest = hmac.new(secret.encode() if secret else _secret, key.encode(), hashlib.sha256).hexdigest()
    return CONTACT_REF_PREFIX + digest[:length]


def _mask_digit_run(match: re.Match[str]) -> str:
    found = match.group(0)
    digits = sum(ch.isdigit() for ch in found)
    bare = found.strip("()")
    # dates, IP addresses and decimals are not phone numbers
    if digits < 7 or digits > 15 or _ISO_DATE.match(bare) or _IPV4.match(bare) or _DECIMAL.match(bare):
        return found
    return PHONE_MASK


def redact(text: str) -> str:
    """Replace contact keys by their hash, and phone numbers and bot tokens by a mask."""
    if not text:
        return text
    text = _BOT_TOKEN.sub(TOKEN_MASK, text)
    text = _CONTACT_KEY.sub(lambda m: contact_ref(m.group(0)), text)
    return _DIGIT_RUN.sub(_mask_digit_run, text)


def _redact_record_text(record: logging.LogRecord) -> None:
    """Merge the arguments into the message and redact it, and the traceback, in place."""
    if getattr(record, "_sanad_redacted", False):
        return
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):
        message = f"{record.msg!s} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._sanad_redacted = True


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "_sanad_redacted"}


class PrivacyFilter(logging.Filter):
    """Redacts a record before a handler prints it; drops text and name fields given in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record_text(record)
        for name in list(record.__dict__):
            if name in _STANDARD_ATTRS:
                continue
            if name.lower() in SENSITIVE_EXTRA_FIELDS:
                record.__dict__[name] = REDACTED
            else:
                value = record.__dict__[name]
                if isinstance(value, str):
                    record.__dict__[name] = redact(value)
        return True


_base_factory: Any = None


def _install_record_factory() -> None:
    global _base_factory
    if _base_factory is not None:
        return
    _base_factory = logging.getLogRecordFactory()
    base = _base_factory

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = base(*args, **kwargs)
        _redact_record_text(record)
        return record

    logging.setLogRecordFactory(factory)


def configure_logging(
    settings: Settings | None, level: int | str = logging.INFO, stream: IO[str] | None = None
) -> None:
    """Set up logging for a Sanad process: one stderr handler with `PrivacyFilter`, redacting records."""
    set_ref_secret(settings.secret_key if settings is not None else "")
    _install_record_factory()
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_sanad_handler", False) for h in root.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._sanad_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for existing in root.handlers:
        if not any(isinstance(f, PrivacyFilter) for f in existing.filters):
            existing.addFilter(PrivacyFilter())
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def reset_logging() -> None:
    """Undo `configure_logging` (tests): the record factory, our handler and the filters."""
    global _base_factory
    if _base_factory is not None:
        logging.setLogRecordFactory(_base_factory)
        _base_factory = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sanad_handler", False):
            root.removeHandler(handler)
        for flt in [f for f in handler.filters if isinstance(f, PrivacyFilter)]:
            handler.removeFilter(flt)
