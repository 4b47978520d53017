"""Defences against abuse and bad input: throttles, the client's address behind proxies, bearer tokens,
bounded decoding of untrusted input, and security alerts for the mentors' leads.

May import `bot.runtime`, `bot.storage`, `bot.mentoring.audit` and `bot.mentoring.events`; nothing here
imports the web app, so channels, linking and the console can all use it."""
