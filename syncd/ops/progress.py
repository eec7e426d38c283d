"""Progress of a long listing (backfill, audit): a rich progress bar on a
terminal, a plain line every two seconds otherwise (journald, CI, pipes)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Self

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class ProgressDisplay:
    """Call it with (resource, done, total) as pages go by; use it as a context."""

    def __init__(self, store: str, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self.on_tty = enabled and sys.stdout.isatty()
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not self.on_tty,
        )
        self._tasks: dict[str, TaskID] = {}
        self._last_line = 0.0

    def __call__(self, resource: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self.on_tty:
            if resource not in self._tasks:
                self._tasks[resource] = self._bar.add_task(resource, total=total)
            self._bar.update(self._tasks[resource], completed=done, total=total)
            return
        finished = total is not None and done >= total
        if time.monotonic() - self._last_line >= 2 or finished:
            self._last_line = time.monotonic()
            shown = total if total is not None else "?"
            print(f"{self.store}: {resource} {done}/{shown}", flush=True)

    def __enter__(self) -> Self:
        self._bar.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._bar.__exit__(kind, value, traceback)
