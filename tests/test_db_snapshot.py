"""Detached snapshots of rows, as the pipeline hands them to every area."""

from __future__ import annotations

from sqlalchemy import inspect

from bot.storage.db import snapshot
from bot.storage.models import Contact


def test_a_snapshot_reads_like_the_row_and_tracks_later_changes() -> None:
    values = {c.name: None for c in Contact.__table__.columns}
    values.update(id=7, key="telegram:7", channel="telegram", address="7", mode="bot", language="ar")
    contact = snapshot(Contact, values)
    assert (contact.id, contact.key, contact.mode, contact.language, contact.pin_hash) == (
        7, "telegram:7", "bot", "ar", None)
    state = inspect(contact)
    assert not state.modified  # loaded values, not pending changes
    contact.language = "fa"
    history = state.attrs.language.history
    assert list(history.added) == ["fa"] and list(history.deleted) == ["ar"]
