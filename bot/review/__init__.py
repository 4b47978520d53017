"""Improving Sanad from real conversations: the review inbox of messages the assistant did not
understand well, the reviewers' labels, and their export as Rasa training data (masked).

Items are created by `bot.analytics.understanding`; may import `bot.storage` and `bot.runtime`.
"""
