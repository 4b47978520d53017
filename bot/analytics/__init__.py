"""Whether Sanad helps: what each learner message was understood as, daily roll-ups of the figures,
the reminder experiment (hold-out, outcome, effect with its interval), the report behind
`/console/analytics` and `GET /api/analytics`, and its charts.

May import `bot.storage`, `bot.runtime`, `bot.privacy.tracker_store` and `bot.review`; nothing here
sends a message.
"""
