"""``syncd backfill``: import history from the API, with progress, resumably.

The work is :func:`syncd.reconcile.sync_resource` (snapshot events through
the inbox, a checkpoint per page); this module adds the progress display
(:class:`syncd.ops.progress.ProgressDisplay`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from sqlalchemy import Engine

from syncd.config import Settings, StoreConfig
from syncd.db.engine import check_schema_at_head, make_engine
from syncd.ops.progress import ProgressDisplay
from syncd.reconcile import exclusive, sync_resource
from syncd.resources import SNAPSHOTTED
from syncd.shoperti.client import ShopertiClient


def run_backfill(settings: Settings, store: StoreConfig, *, since: datetime | None) -> int:
    engine = make_engine(settings.database_url)
    try:
        check_schema_at_head(engine)
        return asyncio.run(_run(engine, settings, store, since))
    finally:
        engine.dispose()


async def _run(
    engine: object, settings: Settings, store: StoreConfig, since: datetime | None
) -> int:

    assert isinstance(engine, Engine)
    assert store.api_url is not None and store.api_key is not None
    started = time.monotonic()
    progress = ProgressDisplay(store.name)

    async with exclusive(engine, f"reconcile:{store.name}") as got:
        if not got:
            print(f"{store.name}: another process is reconciling or backfilling; try later")
            return 1
        async with ShopertiClient.for_store(store) as client:
            with progress:
                totals = {}
                for resource in SNAPSHOTTED:
                    totals[resource] = await sync_resource(
                        engine,
                        store,
                        client,
                        resource,
                        since,
                        progress=progress,
                        max_attempts=settings.max_attempts,
                    )
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{seen} {name} ({new} new)" for name, (seen, new) in totals.items())
    print(f"{store.name}: backfill done in {elapsed:.1f} s: {summary}")
    return 0
