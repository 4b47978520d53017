"""Which channels this deployment runs: one line per channel."""

from __future__ import annotations

from bot.channels.base import Channel
from bot.runtime.settings import Settings


def build_channels(settings: Settings) -> dict[str, Channel]:
    """Web chat always; Telegram and WhatsApp when their credentials are set."""
    from bot.channels.webchat.channel import WebChannel

    channels: dict[str, Channel] = {"web": WebChannel()}
    if settings.telegram_enabled:
        from bot.channels.telegram.channel import TelegramChannel

        channels["telegram"] = TelegramChannel(settings)
    if settings.whatsapp_enabled:
        from bot.channels.whatsapp.channel import WhatsAppChannel

        channels["whatsapp"] = WhatsAppChannel(settings)
    return channels
