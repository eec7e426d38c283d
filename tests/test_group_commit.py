"""The receiver's group commit (``syncd.inbox.GroupCommitter``) on SQLite,
PostgreSQL and MariaDB: a batch with ids the inbox holds already."""

from __future__ import annotations

import asyncio
from typing import Any

from syncd.inbox import GroupCommitter, event_row
from syncd.shoperti import wire
from syncd.vocabulary import EventSource
from tests.factories import order_event
from tests.support import STORE, event_ids


def _row(event_id: str) -> dict[str, Any]:
    event = wire.parse_envelope(order_event(event_id, order_id=f"ord_{event_id}"))
    return event_row(STORE.name, event, source=EventSource.WEBHOOK, verified=False)


async def _put_all(committer: GroupCommitter, ids: list[str]) -> None:
    await asyncio.gather(*(committer.put(_row(event_id)) for event_id in ids))


def test_a_batch_with_stored_ids_commits_the_new_ones_and_keeps_the_stored(db: Any) -> None:
    async def run() -> None:
        committer = GroupCommitter(db.engine)
        await committer.start()
        try:
            await _put_all(committer, ["evt_a", "evt_b"])
            # Retried deliveries of both beside new events, and one id twice.
            await _put_all(committer, ["evt_a", "evt_c", "evt_b", "evt_d", "evt_d"])
        finally:
            await committer.stop()

    asyncio.run(run())
    assert event_ids(db.engine) == {"evt_a", "evt_b", "evt_c", "evt_d"}
