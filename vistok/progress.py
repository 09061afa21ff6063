"""Progress of a long job: a rich progress bar (rate, ETA) on a terminal, a plain line every few seconds
when the output is not a terminal (logs, CI), nothing when quiet. Only the driver process reports.

    with Progress("shards", total=12, unit="inputs", stream=sys.stderr) as p:
        p.advance(50, info="3 errors")
"""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text


class _Rate(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} {self.unit}/s", style="progress.data.speed")


class Progress:
    """`total` units of work (0: unknown). `advance(n, info=...)` after each piece; `info` is shown beside
    the bar (and in plain lines). Plain lines come every `interval` seconds (default 10) and at the end."""

    def __init__(self, description: str, total: int, unit: str = "items", stream: IO[str] | None = None,
                 quiet: bool = False, interval: float = 10.0):
        self.description, self.total, self.unit = description, int(total), unit
        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.interval = quiet, interval
        self.tty = not quiet and self.stream.isatty()
        self.done, self.info = 0, ""
        self.t0 = self.last = time.monotonic()
        self._bar: RichProgress | None = None

    def __enter__(self) -> Progress:
        if self.tty:
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     _Rate(self.unit), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                     console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total or None, info="")
        return self

    def advance(self, n: int = 1, info: str | None = None, total: int | None = None) -> None:
        """`n` more units done; `info` replaces the text beside the bar; `total` re-plans the work."""
        self.done += n
        if info is not None:
            self.info = info
        if total is not None:
            self.total = int(total)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=self.info, total=self.total or None)
            return
        now = time.monotonic()
        if now - self.last >= self.interval or (self.total and self.done >= self.total):
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def each(self, items):
        """`items`, advancing the bar by one as each is taken."""
        for x in items:
            yield x
            self.advance(1)

    def line(self, now: float | None = None) -> str:
        """The plain-text report: done/total, rate, ETA and the latest info."""
        dt = max((now or time.monotonic()) - self.t0, 1e-9)
        rate = self.done / dt
        eta = f"{(self.total - self.done) / rate:.0f}s" if rate > 0 and self.total else "?"
        total = f"/{self.total}" if self.total else ""
        return (f"{self.description} {self.done}{total} {self.unit}  {rate:.1f} {self.unit}/s  ETA {eta}"
                + (f"  {self.info}" if self.info else ""))

    def note(self, message: str) -> None:
        """A one-off message above the bar (or a plain line)."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
