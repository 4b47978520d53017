"""The shared services of one Sanad process, built once and handed to every component."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from bot.analytics.cache import ReportCache
from bot.i18n.catalogue import Catalogue, get_catalogue
from bot.runtime.coordination import Coordinator, make_coordinator
from bot.runtime.settings import Settings
from bot.storage.db import Database

if TYPE_CHECKING:
    from bot.channels.base import Channel
    from integrations.platform import PlatformClient
    from integrations.rasa import RasaClient


@dataclass
class Services:
    """Settings, database, coordination, catalogue, channels and clients of this process."""

    settings: Settings
    db: Database
    coord: Coordinator
    catalogue: Catalogue
    channels: dict[str, Channel] = field(default_factory=dict)
    rasa: RasaClient | None = None
    # the counters of every rate limit and throttle (the `limits` library): shared through Redis when
    # configured, in this process otherwise
    rate_limits: Storage = field(default_factory=MemoryStorage)
    # analytics reports built in the last minute, shared by the page and its charts
    analytics_reports: ReportCache = field(default_factory=ReportCache)
    # components keep their own long-lived objects here (platform client, outbox sender, ...)
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, schema: str | None = None) -> Services:
        """Create every service from settings (channels are added by `bot.channels.registry`)."""
        from bot.channels.registry import build_channels
        from integrations.rasa import RasaClient

        services = cls(
            settings=settings,
            db=Database(settings.database_url, schema=schema),
            coord=make_coordinator(settings.redis_url, settings.redis_prefix),
            catalogue=get_catalogue(),
        )
        if settings.redis_url:
            services.rate_limits = RedisStorage(
                "async+" + settings.redis_url, implementation="redispy", key_prefix=settings.redis_prefix + "limits"
            )
        services.channels = build_channels(settings)
        services.rasa = RasaClient(settings.rasa_url, timeout_s=settings.rasa_timeout_s)
        return services

    def platform(self) -> PlatformClient:
        """The process's platform client, built on first use and kept in `extras["platform"]`."""
        from integrations.platform import PlatformClient, make_platform_client

        client = self.extras.get("platform")
        if client is None:
            client = make_platform_client(self.settings, self.coord)
            self.extras["platform"] = client
        if not isinstance(client, PlatformClient):
            raise TypeError("services.extras['platform'] is not a PlatformClient")
        return client

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        if self.rasa is not None:
            await self.rasa.close()
        for extra in self.extras.values():
            closer = getattr(extra, "aclose", None) or getattr(extra, "close", None)
            if closer is not None:
                result = closer()
                if hasattr(result, "__await__"):
                    await result
        await self.coord.close()
        await self.db.dispose()
