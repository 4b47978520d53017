"""Telegram: webhook verification, parsing, sending through python-telegram-bot."""
