"""The receiver's body-read bound: one sweep for all reads, no timer each.
Pure asyncio, no server (the 408 over real sockets: tests/system/test_security.py)."""

from __future__ import annotations

import asyncio

import pytest

from syncd.receiver import BodyDeadlines


async def _read(deadlines: BodyDeadlines, takes: float) -> str:
    with deadlines.bound():
        await asyncio.sleep(takes)
    return "read"


def test_a_read_past_its_bound_raises_timeout_and_the_others_finish() -> None:
    async def scenario() -> tuple[list[str | BaseException], float]:
        deadlines = BodyDeadlines(0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = asyncio.create_task(_read(deadlines, 30))
        quick = [asyncio.create_task(_read(deadlines, 0.01 * n)) for n in range(20)]
        results = await asyncio.gather(slow, *quick, return_exceptions=True)
        return results, loop.time() - started

    results, took = asyncio.run(scenario())
    assert isinstance(results[0], TimeoutError)
    assert results[1:] == ["read"] * 20
    # Within the bound plus the sweep interval (a tenth of it), with slack for a loaded machine.
    assert 0.3 <= took < 1.5, took


def test_a_read_cancelled_from_outside_stays_cancelled() -> None:
    async def scenario() -> None:
        deadlines = BodyDeadlines(5)
        task = asyncio.create_task(_read(deadlines, 30))
        await asyncio.sleep(0.05)
        task.cancel()  # e.g. shutdown: not a timeout
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_the_sweep_stops_when_no_read_is_under_way_and_starts_again() -> None:
    async def scenario() -> None:
        deadlines = BodyDeadlines(0.2)
        assert await _read(deadlines, 0) == "read"
        assert deadlines.sweep.sweeping
        for _ in range(100):  # nothing left to watch: the sweep stops re-arming
            if not deadlines.sweep.sweeping:
                break
            await asyncio.sleep(0.02)
        assert not deadlines.sweep.sweeping
        with pytest.raises(TimeoutError):
            await _read(deadlines, 30)  # a new sweep bounds the next read

    asyncio.run(scenario())
