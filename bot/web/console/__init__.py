"""The mentor console: queue, conversations, live updates (server-rendered, at /console)."""
