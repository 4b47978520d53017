"""The Telegram mentor group: a forum topic per hand-off, mirrored both ways (opt-in)."""
