"""The web chat channel (the embedded default)."""
