"""One progress display for every subcommand: a live bar on a terminal, plain lines in logs and pipes.

On a terminal (stderr is a TTY) rich draws a transient bar for the items (images, raws) and one for the
work inside the current item (tiles, with fractional progress inside a tile). Elsewhere a plain line
``progress: <item> 40% (12 s)`` goes to stderr once the item has run for 10 s, then whenever it has advanced
by another 10 % or 10 s have passed since the last line: a long run in a log is never silent, a short one
prints nothing but its result.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

#: Plain-line mode: nothing before this many seconds into an item, then a line at least this often ...
PLAIN_EVERY_S = 10.0
#: ... or whenever the current item has advanced by this fraction.
PLAIN_EVERY_FRACTION = 0.1


class ProgressDisplay:
    """Progress of ``total`` items and of the work inside the current one.

    ``with ProgressDisplay(console, total, enabled=not quiet) as p:`` then, per item, ``p.start(name)``,
    ``p.work(done, of)`` as the work advances (``done`` may be fractional) and ``p.finish()``.
    """

    def __init__(self, console: Console, total: int | None, *, enabled: bool = True, live: bool | None = None,
                 label: str = "images", stream: TextIO | None = None, clock: type[time.perf_counter] | None = None
                 ) -> None:
        self.enabled = enabled
        self.live = (console.is_terminal if live is None else live) and enabled
        self.total = total
        self._stream = stream
        self._clock = clock or time.perf_counter
        self._bar: Progress | None = None
        self._items: TaskID | None = None
        self._work: TaskID | None = None
        self._name = ""
        self._index = 0
        self._t0 = self._last_t = 0.0
        self._last_fraction = 0.0
        if self.live:
            self._bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"),
                                 TimeElapsedColumn(), console=console, transient=True)
            if total is not None and total > 1:
                self._items = self._bar.add_task(label, total=total)
            self._work = self._bar.add_task("", total=1.0)

    def __enter__(self) -> ProgressDisplay:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)

    def start(self, name: str) -> None:
        """A new item begins (its work at 0 %)."""
        self._index += 1
        self._name = name
        self._t0 = self._last_t = self._clock()
        self._last_fraction = 0.0
        if self._bar is not None and self._work is not None:
            self._bar.update(self._work, description=name, completed=0.0, total=1.0)

    def work(self, done: float, of: int) -> None:
        """``done`` of ``of`` units of the current item's work are finished."""
        if not self.enabled or of <= 0:
            return
        fraction = min(max(done / of, 0.0), 1.0)
        if self._bar is not None and self._work is not None:
            self._bar.update(self._work, completed=fraction)
            return
        now = self._clock()
        if now - self._t0 < PLAIN_EVERY_S:
            return
        due = fraction - self._last_fraction >= PLAIN_EVERY_FRACTION - 1e-9 or now - self._last_t >= PLAIN_EVERY_S
        if due and fraction > self._last_fraction and fraction < 1.0:
            self._line(f"{100 * fraction:.0f}% ({now - self._t0:.0f} s)")
            self._last_t, self._last_fraction = now, fraction

    def finish(self) -> None:
        """The current item is done."""
        if self._bar is not None and self._items is not None:
            self._bar.advance(self._items)

    def _line(self, text: str) -> None:
        of = f" [{self._index}/{self.total}]" if self.total is not None and self.total > 1 else ""
        print(f"progress: {self._name}{of} {text}", file=self._stream or sys.stderr, flush=True)
