"""The message catalogue (every learner-facing string, five languages) and its locale files."""
