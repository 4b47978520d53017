"""The shared services of one Sanad process, built once and handed to every component.

Everything a process keeps for its lifetime hangs off `Services`, typed: the database, the
clients of the systems Sanad talks to, the outbox sender of a process that sends right away,
and the conversation scheduler. No component keeps state of its own in module globals. See
docs/architecture.md ("Processes").
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from bot.analytics.cache import ReportCache
from bot.i18n.catalogue import Catalogue, get_catalogue
from bot.runtime.coordination import Coordinator, make_coordinator
from bot.runtime.settings import Settings
from bot.storage.db import Database

if TYPE_CHECKING:
    from bot.channels.base import Channel
    from bot.conversation.scheduler import ConversationScheduler
    from bot.outbox.rates import SendRates
    from bot.outbox.sender import OutboxSender
    from integrations.platform import PlatformClient
    from integrations.rasa import RasaClient


def default_instance_id() -> str:
    """A process without a configured `SANAD_INSTANCE_ID`: unique, so it never takes another's leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Services:
    """Settings, database, coordination, catalogue, channels, clients and per-process state."""

    settings: Settings
    db: Database
    coord: Coordinator
    catalogue: Catalogue
    channels: dict[str, Channel] = field(default_factory=dict)
    rasa: RasaClient | None = None
    # the learning platform (one client, one connection pool per process); see `make_platform_client`
    platform_client: PlatformClient | None = None
    # the counters of every rate limit and throttle (the `limits` library): shared through Redis when
    # configured, in this process otherwise
    rate_limits: Storage = field(default_factory=MemoryStorage)
    # analytics reports built in the last minute, shared by the page and its charts
    analytics_reports: ReportCache = field(default_factory=ReportCache)
    # the outbox sender of a process that sends right away (gateway, worker); None: the worker sends
    sender: OutboxSender | None = None
    # this process's stable name (`SANAD_INSTANCE_ID`) and the lease token derived from it
    instance_id: str = field(default_factory=default_instance_id)
    instance_token: str = field(init=False)
    conversations: ConversationScheduler = field(init=False)
    # the send rate limits of this process's senders (outbox, mentor group), over `rate_limits`
    send_rates: SendRates = field(init=False)

    def __post_init__(self) -> None:
        from bot.conversation.lease import process_token
        from bot.conversation.scheduler import ConversationScheduler
        from bot.outbox.rates import SendRates

        self.instance_token = process_token(self.instance_id)
        self.conversations = ConversationScheduler(self)
        self.send_rates = SendRates(self.settings, self.rate_limits)

    @classmethod
    def build(cls, settings: Settings, schema: str | None = None) -> Services:
        """Create every service from settings."""
        from bot.channels.registry import build_channels
        from integrations.platform import make_platform_client
        from integrations.rasa import RasaClient

        coord = make_coordinator(settings.redis_url, settings.redis_prefix)
        services = cls(
            settings=settings,
            db=Database(settings.database_url, schema=schema, pool_size=settings.db_pool_size,
                        max_overflow=settings.db_max_overflow),
            coord=coord,
            catalogue=get_catalogue(),
            channels=build_channels(settings),
            rasa=RasaClient(settings.rasa_url, timeout_s=settings.rasa_timeout_s, token=settings.rasa_token),
            platform_client=make_platform_client(settings, coord),
            instance_id=settings.instance_id or default_instance_id(),
            rate_limits=RedisStorage(
                "async+" + settings.redis_url, implementation="redispy", key_prefix=settings.redis_prefix + "limits"
            ) if settings.redis_url else MemoryStorage(),
        )
        return services

    @property
    def platform(self) -> PlatformClient:
        """The process's platform client."""
        if self.platform_client is None:
            raise RuntimeError("no platform client configured")
        return self.platform_client

    async def close(self) -> None:
        await self.conversations.drain()
        for channel in self.channels.values():
            await channel.close()
        if self.rasa is not None:
            await self.rasa.close()
        if self.platform_client is not None:
            await self.platform_client.aclose()
        await self.coord.close()
        await self.db.dispose()
