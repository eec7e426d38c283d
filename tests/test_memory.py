"""The collector settings every long-running syncd process takes
(syncd.ops.memory), checked in processes of their own: fresh interpreters
(the apply child is spawned), whatever tests that run the CLI in process
did to this one."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from typing import Any

from syncd.config import load_settings
from syncd.ops.memory import YOUNG_THRESHOLD
from syncd.worker_process import ApplyProcess
from tests.support import STORE


def test_settle_freezes_what_start_up_made_and_collects_the_young_less_often() -> None:
    code = (
        "import gc; before = gc.get_threshold()\n"
        "from syncd.ops import memory; memory.settle()\n"
        "print(before, gc.get_threshold(), gc.get_freeze_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    before, after, frozen = out.strip().split(") ")
    assert before.startswith("(700,")
    assert after == f"({YOUNG_THRESHOLD}, 10, 10"
    assert int(frozen) > 0  # what start-up made, out of every collection


def test_the_apply_process_is_settled(sqlite_db: Any) -> None:
    settings = load_settings({"SYNCD_DATABASE_URL": sqlite_db.url})
    process = ApplyProcess(settings)
    try:
        threshold = asyncio.run(process._run(STORE, gc.get_threshold))
        frozen = asyncio.run(process._run(STORE, gc.get_freeze_count))
    finally:
        process.close()
    assert threshold[0] == YOUNG_THRESHOLD
    assert frozen > 0
