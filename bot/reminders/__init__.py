"""Deadline reminders and staff broadcasts: planning, quiet hours, opt-out, admin API and CLI.

Importing the package registers the `reminders` gateway command and the STOP/START interceptor.
"""

from bot.reminders import optout as optout  # registers the command and the interceptor
