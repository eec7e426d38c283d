"""The cyclic garbage collector, tuned for a daemon that moves many
short-lived objects.

CPython collects its youngest generation after every 700 container objects
allocated and not yet freed. An event in flight (its parsed body, its inbox
row, its future and deadline entry) or a backfill batch in hand (a thousand
orders, parsed) is alive for a few milliseconds to a second: at 700, nearly
every collection finds such objects alive and promotes them, the older
generations fill up, and full collections walk the whole heap (over a
hundred thousand objects of imported modules). Measured in ``syncd bench``'s
in-process receiver run: 0.37-0.41 s of every 10,000 webhooks went to the
collector (413 collections, 3 of them full); backfill of 20,000 orders
2.6 s (2,371 collections, 17 full). Nothing on these paths makes reference
cycles (checked with ``gc.DEBUG_SAVEALL``: none per request), so collecting
less often frees the same memory by reference counting and costs only
what the young generation may hold in between.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default: 700


def settle() -> None:
    """Call once start-up has imported and built what the process keeps:
    those objects are frozen out of every later collection, and the young
    generation is collected after YOUNG_THRESHOLD allocations, not 700."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
