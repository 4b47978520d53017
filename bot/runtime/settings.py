"""Settings read from the environment (and a `.env` file), names as in DESIGN.md."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LANGUAGES: tuple[str, ...] = ("en", "ar", "fa", "fr", "de")
RTL_LANGUAGES: frozenset[str] = frozenset({"ar", "fa"})
DEFAULT_LANGUAGE = "en"


def _read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; the real environment always wins over the file."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _int_list(env: dict[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"{name} must be a comma-separated list of integers") from exc


@dataclass(frozen=True)
class Settings:
    """Every operator-visible knob of Sanad; build with `Settings.from_env()`."""

    database_url: str = "sqlite+aiosqlite:///var/sanad.db"
    redis_url: str | None = None
    redis_prefix: str = "sanad:"
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_timeout_s: float = 10.0
    action_server_url: str = "http://127.0.0.1:5055/webhook"
    public_base_url: str = "http://127.0.0.1:8000"
    telegram_bot_token: str | None = None
    telegram_webhook_secret: str | None = None
    telegram_api_base_url: str = "https://api.telegram.org"
    telegram_bot_username: str = "SanadBot"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_whatsapp_from: str | None = None
    twilio_api_base_url: str = "https://api.twilio.com"
    platform_api_url: str | None = None
    platform_api_token: str | None = None
    admin_api_token: str | None = None
    secret_key: str = ""
    var_dir: Path = PROJECT_ROOT / "var"
    # Hand-off and console
    handoff_claim_timeout_s: float = 300.0
    handoff_idle_timeout_s: float = 3600.0 * 24
    handoff_minutes_per_position: float = 5.0
    # approved WhatsApp "a mentor has replied" templates: language -> content SID ("" = any language)
    whatsapp_template_mentor_reply: dict[str, str] = field(default_factory=dict)
    # Reminders
    reminder_offsets_h: tuple[int, ...] = (168, 24)
    reminder_grace_s: float = 6 * 3600.0
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    telegram_rate_per_s: float = 30.0
    telegram_chat_rate_per_s: float = 1.0
    whatsapp_rate_per_s: float = 10.0
    # Sending: a row `sending` longer than this was claimed by a worker that died; it goes back to queued
    outbox_claim_timeout_s: float = 300.0
    send_max_attempts: int = 6
    # WHATSAPP_TEMPLATE_<KIND>_<LANG> = "HX<ContentSid>[|1=param,2=param]" (KIND: REMINDER, BROADCAST, MESSAGE)
    whatsapp_templates: dict[str, str] = field(default_factory=dict)
    # Privacy
    retention_days: int = 365
    pin_idle_s: float = 1800.0
    # Rasa's SQL tracker store (erasure, export and retention reach into it); "" = var/rasa_tracker.db
    rasa_tracker_store_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_bot_token)

    @property
    def whatsapp_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_from)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """Read the environment; `environ` replaces os.environ in tests."""
        env = dict(_read_dotenv(dotenv if dotenv is not None else Path.cwd() / ".env"))
        env.update(os.environ if environ is None else environ)
        var_dir = Path(env.get("SANAD_VAR_DIR") or PROJECT_ROOT / "var")
        secret = env.get("SANAD_SECRET_KEY") or _load_or_create_secret(var_dir)
        return cls(
            database_url=env.get("DATABASE_URL") or f"sqlite+aiosqlite:///{var_dir / 'sanad.db'}",
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("SANAD_REDIS_PREFIX") or "sanad:",
            rasa_url=(env.get("RASA_URL") or "http://127.0.0.1:5005").rstrip("/"),
            rasa_timeout_s=_float(env, "RASA_TIMEOUT_S", 10.0),
            action_server_url=env.get("ACTION_SERVER_URL") or "http://127.0.0.1:5055/webhook",
            public_base_url=(env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            telegram_bot_token=env.get("TELEGRAM_BOT_TOKEN") or None,
            telegram_webhook_secret=env.get("TELEGRAM_WEBHOOK_SECRET") or None,
            telegram_api_base_url=(env.get("TELEGRAM_API_BASE_URL") or "https://api.telegram.org").rstrip("/"),
            telegram_bot_username=env.get("TELEGRAM_BOT_USERNAME") or "SanadBot",
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            twilio_whatsapp_from=env.get("TWILIO_WHATSAPP_FROM") or None,
            twilio_api_base_url=(env.get("TWILIO_API_BASE_URL") or "https://api.twilio.com").rstrip("/"),
            platform_api_url=(env.get("PLATFORM_API_URL") or "").rstrip("/") or None,
            platform_api_token=env.get("PLATFORM_API_TOKEN") or None,
            admin_api_token=env.get("ADMIN_API_TOKEN") or None,
            secret_key=secret,
            var_dir=var_dir,
            handoff_claim_timeout_s=_float(env, "HANDOFF_CLAIM_TIMEOUT_S", 300.0),
            handoff_idle_timeout_s=_float(env, "HANDOFF_IDLE_TIMEOUT_S", 86400.0),
            handoff_minutes_per_position=_float(env, "HANDOFF_MINUTES_PER_POSITION", 5.0),
            whatsapp_template_mentor_reply=_templates_by_language(env, "WHATSAPP_TEMPLATE_MENTOR_REPLY"),
            reminder_offsets_h=_int_list(env, "REMINDER_OFFSETS_H", (168, 24)),
            reminder_grace_s=_float(env, "REMINDER_GRACE_S", 21600.0),
            quiet_hours_start=int(_float(env, "QUIET_HOURS_START", 21)),
            quiet_hours_end=int(_float(env, "QUIET_HOURS_END", 8)),
            telegram_rate_per_s=_float(env, "TELEGRAM_RATE_PER_S", 30.0),
            telegram_chat_rate_per_s=_float(env, "TELEGRAM_CHAT_RATE_PER_S", 1.0),
            whatsapp_rate_per_s=_float(env, "WHATSAPP_RATE_PER_S", 10.0),
            outbox_claim_timeout_s=_float(env, "OUTBOX_CLAIM_TIMEOUT_S", 300.0),
            send_max_attempts=int(_float(env, "SEND_MAX_ATTEMPTS", 6)),
            whatsapp_templates={
                k[len("WHATSAPP_TEMPLATE_"):].upper(): v
                for k, v in env.items()
                if k.startswith("WHATSAPP_TEMPLATE_") and v
            },
            retention_days=int(_float(env, "RETENTION_DAYS", 365)),
            pin_idle_s=_float(env, "PIN_IDLE_S", 1800.0),
            rasa_tracker_store_url=env.get("RASA_TRACKER_STORE_URL") or f"sqlite:///{var_dir / 'rasa_tracker.db'}",
            extra={k: v for k, v in env.items() if k.startswith("SANAD_")},
        )


def _templates_by_language(env: dict[str, str], name: str) -> dict[str, str]:
    """`NAME_EN`, `NAME_AR`… per language, `NAME` for any language (stored under "")."""
    found = {lang: env[f"{name}_{lang.upper()}"] for lang in LANGUAGES if env.get(f"{name}_{lang.upper()}")}
    if env.get(name):
        found[""] = env[name]
    return found


def _load_or_create_secret(var_dir: Path) -> str:
    """Generate the secret key once and keep it in var/ so sessions survive restarts."""
    path = var_dir / "secret_key"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key, encoding="utf-8")
    path.chmod(0o600)
    return key
