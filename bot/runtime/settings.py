"""Every operator-visible knob of Sanad, typed and documented (pydantic-settings).

Names are the environment variables of the README; a `.env` file in the
working directory is read too, and the real environment wins over it. An empty value
means "unset" (the default applies). Variables whose names carry a kind and a language
(`WHATSAPP_TEMPLATE_<KIND>_<LANG>`, `TELEGRAM_MENTOR_GROUP_ID_<LANG>`) are gathered by a
settings source of their own.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LANGUAGES: tuple[str, ...] = ("en", "ar", "fa", "fr", "de")
RTL_LANGUAGES: frozenset[str] = frozenset({"ar", "fa"})
DEFAULT_LANGUAGE = "en"

# variables with a kind and a language in their name: prefix -> settings field
_PREFIXED = {
    "WHATSAPP_TEMPLATE_": "whatsapp_templates",
    "TELEGRAM_MENTOR_GROUP_ID_": "telegram_mentor_group_ids",
    "MENTOR_OFFICE_HOURS_": "mentor_office_hours_by_language",
}
# of those, the ones whose suffix is a language code (stored lower-case)
_PER_LANGUAGE = frozenset({"telegram_mentor_group_ids", "mentor_office_hours_by_language"})


def _env(name: str, *more: str) -> Any:
    """The environment variable(s) a field is read from (the first one set wins)."""
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    """Sanad's settings; build with `Settings.from_env()` (or `Settings()` for the process environment)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True,
    )

    # --- where things are
    var_dir: Path = Field(PROJECT_ROOT / "var", validation_alias=_env("SANAD_VAR_DIR"),
                          description="runtime files: the SQLite database, the generated secret key, exports")
    database_url: str = Field("", validation_alias=_env("DATABASE_URL"),
                              description="SQLAlchemy async URL; default: SQLite file var/sanad.db")
    db_pool_size: int = Field(10, ge=1, validation_alias=_env("DB_POOL_SIZE"),
                              description="database connections kept open per process (PostgreSQL)")
    db_max_overflow: int = Field(10, ge=0, validation_alias=_env("DB_MAX_OVERFLOW"),
                                 description="connections opened beyond the pool under load, closed after")
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"),
                                  description="Redis; unset = single-process mode")
    redis_prefix: str = Field("sanad:", validation_alias=_env("SANAD_REDIS_PREFIX"),
                              description="prefix of every Redis key (one deployment or test run per prefix)")
    public_base_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("PUBLIC_BASE_URL"),
                                 description="public URL of the gateway (webhook signatures, links)")
    secret_key: str = Field("", validation_alias=_env("SANAD_SECRET_KEY"),
                            description="signs link tokens and console sessions; generated into var/ on first run")

    # --- Rasa
    rasa_url: str = Field("http://127.0.0.1:5005", validation_alias=_env("RASA_URL"),
                          description="Rasa server, or several separated by commas (a conversation keeps to one)")
    rasa_token: str | None = Field(None, validation_alias=_env("RASA_TOKEN"),
                                   description="token of Rasa's HTTP API (Rasa started with --auth-token)")
    rasa_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("RASA_TIMEOUT_S"))
    action_server_url: str = Field("http://127.0.0.1:5055/webhook", validation_alias=_env("ACTION_SERVER_URL"))
    rasa_tracker_store_url: str = Field(
        "", validation_alias=_env("RASA_TRACKER_STORE_URL", "SANAD_RASA_TRACKER_STORE_URL"),
        description="Rasa's SQL tracker store (erasure and export reach into it); default var/rasa_tracker.db",
    )
    process_concurrency: int = Field(32, ge=1, validation_alias=_env("SANAD_PROCESS_CONCURRENCY"),
                                     description="conversations a gateway works on at once")

    # --- processes
    instance_id: str = Field(
        "", validation_alias=_env("SANAD_INSTANCE_ID"),
        description="this process's name, stable across restarts: after a crash it takes its own conversation "
                    "leases and send claims back at once; default: host and port (gateway), host (worker)",
    )
    conversation_lease_ttl_s: float = Field(
        15.0, ge=1, validation_alias=_env("SANAD_CONVERSATION_LEASE_TTL_S"),
        description="a conversation's lease, renewed by its process's heartbeat; another process takes over a "
                    "dead one's conversations after this long",
    )
    worker_job_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("WORKER_JOB_TIMEOUT_S"),
                                        description="the longest one run of a worker job may take")
    worker_heartbeat_s: float = Field(10.0, gt=0, validation_alias=_env("WORKER_HEARTBEAT_S"),
                                      description="how often the worker writes its heartbeat key")
    worker_metrics_port: int | None = Field(9100, validation_alias=_env("WORKER_METRICS_PORT"),
                                            description="port of the worker's Prometheus metrics; 0 = off")

    # --- channels
    telegram_bot_token: str | None = Field(None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_webhook_secret: str | None = Field(None, validation_alias=_env("TELEGRAM_WEBHOOK_SECRET"))
    telegram_api_base_url: str = Field("https://api.telegram.org", validation_alias=_env("TELEGRAM_API_BASE_URL"))
    telegram_bot_username: str = Field("SanadBot", validation_alias=_env("TELEGRAM_BOT_USERNAME"))
    telegram_mentor_group_id: int | None = Field(
        None, validation_alias=_env("TELEGRAM_MENTOR_GROUP_ID"),
        description="forum supergroup where hand-offs open topics; unset = off",
    )
    # TELEGRAM_MENTOR_GROUP_ID_<LANG>: a group of its own for one language's hand-offs
    telegram_mentor_group_ids: dict[str, int] = Field(default_factory=dict)
    telegram_group_rate_per_min: float = Field(
        20.0, gt=0, validation_alias=_env("TELEGRAM_GROUP_RATE_PER_MIN"),
        description="messages per minute the bot posts into one mentor group (Telegram allows about 20)",
    )
    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: str | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_whatsapp_from: str | None = Field(None, validation_alias=_env("TWILIO_WHATSAPP_FROM"))
    twilio_api_base_url: str = Field("https://api.twilio.com", validation_alias=_env("TWILIO_API_BASE_URL"))
    # WHATSAPP_TEMPLATE_<KIND>_<LANG> = "HX<ContentSid>[|1=param,2=param]" (KIND: REMINDER, BROADCAST,
    # MESSAGE, MENTOR_REPLY; without _<LANG>: any language); keys here are "<KIND>_<LANG>" or "<KIND>"
    whatsapp_templates: dict[str, str] = Field(default_factory=dict)
    webchat_enabled: bool = Field(True, validation_alias=_env("WEBCHAT_ENABLED"),
                                  description="serve the anonymous web chat at /chat")

    # --- the learning platform
    platform_api_url: str | None = Field(None, validation_alias=_env("PLATFORM_API_URL"),
                                         description="learning platform API; unset = the built-in demo platform")
    platform_api_token: str | None = Field(None, validation_alias=_env("PLATFORM_API_TOKEN"))
    platform_cache_ttl_s: float = Field(60.0, ge=0, validation_alias=_env("SANAD_PLATFORM_CACHE_TTL_S"))
    demo_platform_url: str | None = Field(None, validation_alias=_env("SANAD_DEMO_PLATFORM_URL"),
                                          description="where the demo platform answers when it is not this gateway")

    # --- admin, metrics, proxies
    admin_api_token: str | None = Field(None, validation_alias=_env("ADMIN_API_TOKEN"),
                                        description="bearer token of the admin API; unset = admin API off")
    metrics_token: str | None = Field(None, validation_alias=_env("METRICS_TOKEN"),
                                      description="bearer token for /metrics; unset = metrics not public")
    forwarded_allow_ips: tuple[str, ...] = Field(
        (), validation_alias=_env("FORWARDED_ALLOW_IPS"),
        description="proxies (addresses or networks, comma-separated) whose X-Forwarded-For is trusted (default: none)",
    )

    # --- abuse limits (the `limits` library's notation: "20/minute;200/hour", every window applies)
    webchat_limit_per_client: str = Field(
        "12/minute;200/hour", validation_alias=_env("WEBCHAT_LIMIT_PER_CLIENT"),
        description="web chat messages one browser (client id) may post",
    )
    webchat_limit_per_address: str = Field(
        "60/minute;1000/hour", validation_alias=_env("WEBCHAT_LIMIT_PER_ADDRESS"),
        description="web chat messages one source address may post, all its client ids together",
    )
    webchat_max_open_handoffs: int = Field(
        20, ge=0, validation_alias=_env("WEBCHAT_MAX_OPEN_HANDOFFS"),
        description="open hand-offs from the anonymous web chat at a time; more are refused with an explanation",
    )
    link_failures_per_address: str = Field(
        "10/15 minutes", validation_alias=_env("LINK_FAILURES_PER_ADDRESS"),
        description="wrong link codes one web chat source address may send",
    )
    link_failures_global: str = Field(
        "100/10 minutes", validation_alias=_env("LINK_FAILURES_GLOBAL"),
        description="wrong link codes from everyone; past it code linking pauses and the leads are alerted",
    )

    # --- hand-off and console
    handoff_claim_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("HANDOFF_CLAIM_TIMEOUT_S"))
    handoff_idle_timeout_s: float = Field(86400.0, gt=0, validation_alias=_env("HANDOFF_IDLE_TIMEOUT_S"))
    handoff_sla_s: float = Field(900.0, gt=0, validation_alias=_env("HANDOFF_SLA_S"),
                                 description="first-response target of a hand-off")
    handoff_offer_timeout_s: float = Field(120.0, gt=0, validation_alias=_env("HANDOFF_OFFER_TIMEOUT_S"),
                                           description="how long an assignment offer waits")
    handoff_minutes_per_position: float = Field(5.0, gt=0, validation_alias=_env("HANDOFF_MINUTES_PER_POSITION"))
    # MENTOR_OFFICE_HOURS[_<LANG>] = "mon-fri 09:00-17:00 Europe/Berlin" (several ranges separated by ";",
    # days optional = every day); unset = mentors may answer at any hour (bot/mentoring/office_hours.py)
    mentor_office_hours: str = Field("", validation_alias=_env("MENTOR_OFFICE_HOURS"),
                                     description="when mentors answer, for languages without their own hours")
    mentor_office_hours_by_language: dict[str, str] = Field(default_factory=dict)
    satisfaction_survey: bool = Field(True, validation_alias=_env("SATISFACTION_SURVEY"),
                                      description="ask the learner for a 1-5 rating after a resolved hand-off")
    handoff_review_window_s: float = Field(
        3600.0, ge=0, validation_alias=_env("HANDOFF_REVIEW_WINDOW_S"),
        description="how long after a hand-off ends its mentor may still read it (up to its end); leads always may",
    )
    media_max_bytes: int = Field(25 * 1024 * 1024, gt=0, validation_alias=_env("MEDIA_MAX_BYTES"),
                                 description="largest learner file the console relays from the provider")

    # --- reminders and sending
    reminder_offsets_h: tuple[int, ...] = Field((168, 24), validation_alias=_env("REMINDER_OFFSETS_H"))
    reminder_grace_s: float = Field(21600.0, ge=0, validation_alias=_env("REMINDER_GRACE_S"))
    reminder_plan_interval_s: float | None = Field(None, gt=0, validation_alias=_env("SANAD_REMINDER_PLAN_INTERVAL_S"))
    reminder_holdout: float = Field(0.0, ge=0, lt=1, validation_alias=_env("REMINDER_HOLDOUT"),
                                    description="fraction of (learner, deadline) pairs held out of reminders")
    quiet_hours_start: int = Field(21, ge=0, le=23, validation_alias=_env("QUIET_HOURS_START"))
    quiet_hours_end: int = Field(8, ge=0, le=23, validation_alias=_env("QUIET_HOURS_END"))
    telegram_rate_per_s: float = Field(30.0, gt=0, validation_alias=_env("TELEGRAM_RATE_PER_S"))
    telegram_chat_rate_per_s: float = Field(1.0, gt=0, validation_alias=_env("TELEGRAM_CHAT_RATE_PER_S"))
    whatsapp_rate_per_s: float = Field(10.0, gt=0, validation_alias=_env("WHATSAPP_RATE_PER_S"))
    # a row `sending` longer than this was claimed by a worker that died; it goes back to queued
    outbox_claim_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("OUTBOX_CLAIM_TIMEOUT_S"))
    send_max_attempts: int = Field(6, ge=1, validation_alias=_env("SEND_MAX_ATTEMPTS"))
    send_batch: int = Field(50, ge=1, validation_alias=_env("SANAD_SEND_BATCH"))
    send_concurrency: int = Field(8, ge=1, validation_alias=_env("SANAD_SEND_CONCURRENCY"))

    # --- privacy
    retention_days: int = Field(365, ge=1, validation_alias=_env("RETENTION_DAYS"))
    pin_idle_s: float = Field(1800.0, gt=0, validation_alias=_env("PIN_IDLE_S"))

    @field_validator("rasa_url", "public_base_url", "telegram_api_base_url", "twilio_api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("webchat_limit_per_client", "webchat_limit_per_address", "link_failures_per_address",
                     "link_failures_global")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate limit such as '20/minute;200/hour'") from exc
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for entry in value:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an address or network") from exc
        return value

    @field_validator("platform_api_url", "demo_platform_url")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        return value.rstrip("/") or None if value else None

    @field_validator("mentor_office_hours")
    @classmethod
    def _office_hours(cls, value: str) -> str:
        from bot.mentoring.office_hours import parse

        parse(value)  # an OfficeHoursError (a ValueError) says what is wrong with the setting
        return value

    @field_validator("mentor_office_hours_by_language")
    @classmethod
    def _office_hours_by_language(cls, value: dict[str, str]) -> dict[str, str]:
        from bot.mentoring.office_hours import parse

        for spec in value.values():
            parse(spec)
        return value

    @field_validator("reminder_offsets_h", "forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _defaults_in_var_dir(self) -> Settings:
        # frozen: fill the defaults that depend on var_dir once, as the model is built
        if not self.database_url:
            self.__dict__["database_url"] = f"sqlite+aiosqlite:///{self.var_dir / 'sanad.db'}"
        if not self.rasa_tracker_store_url:
            self.__dict__["rasa_tracker_store_url"] = f"sqlite:///{self.var_dir / 'rasa_tracker.db'}"
        if not self.secret_key:
            self.__dict__["secret_key"] = load_or_create_secret(self.var_dir, "secret_key")
        return self

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_bot_token)

    @property
    def whatsapp_enabled(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_whatsapp_from)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def rasa_urls(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.rasa_url.split(",") if url.strip()]

    def mentor_group_for(self, language: str) -> int | None:
        """The Telegram mentor group of a language's hand-offs (its own, else the default one)."""
        return self.telegram_mentor_group_ids.get(language, self.telegram_mentor_group_id)

    @property
    def mentor_group_ids(self) -> frozenset[int]:
        """Every configured Telegram mentor group."""
        ids = set(self.telegram_mentor_group_ids.values())
        if self.telegram_mentor_group_id is not None:
            ids.add(self.telegram_mentor_group_id)
        return frozenset(ids)

    def office_hours_for(self, language: str) -> str:
        """The office hours of a language's mentors (its own, else the default; "" = any hour)."""
        return self.mentor_office_hours_by_language.get(language, self.mentor_office_hours)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, _PrefixedSource(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """Settings from `.env` and the process environment (which wins); `environ` replaces the latter (tests)."""
        env: dict[str, str] = {}
        path = dotenv if dotenv is not None else Path.cwd() / ".env"
        if path.is_file():
            env.update({key: value for key, value in dotenv_values(path).items() if value is not None})
        env.update(os.environ if environ is None else environ)
        given = {key: value for key, value in env.items() if value != ""}
        return cls.model_validate({**given, **_prefixed(given)})


def _prefixed(env: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
    """`WHATSAPP_TEMPLATE_REMINDER_AR=HX…` -> {"whatsapp_templates": {"REMINDER_AR": "HX…"}}."""
    found: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        for prefix, field in _PREFIXED.items():
            if key.upper().startswith(prefix) and value:
                suffix = key[len(prefix):].upper()
                if field in _PER_LANGUAGE:
                    if suffix.lower() not in LANGUAGES:
                        raise ValueError(f"{key}: {suffix.lower()} is not one of {', '.join(LANGUAGES)}")
                    suffix = suffix.lower()
                found.setdefault(field, {})[suffix] = value
    return found


class _PrefixedSource(PydanticBaseSettingsSource):
    """The variables named `<PREFIX><KIND>_<LANG>`, from `.env` and the environment (which wins)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env_file = self.config.get("env_file")
        from_file: dict[str, str | None] = {}
        if isinstance(env_file, str | Path) and Path(env_file).is_file():
            from_file = dotenv_values(env_file)
        return dict(_prefixed({**from_file, **os.environ}))


def load_or_create_secret(var_dir: Path, name: str) -> str:
    """A random secret generated once and kept in var/<name> (so sessions survive restarts)."""
    path = var_dir / name
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key, encoding="utf-8")
    path.chmod(0o600)
    return key
