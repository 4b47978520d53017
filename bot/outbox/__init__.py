"""Every outbound message is an outbox row first, then sent within each channel's limits."""
