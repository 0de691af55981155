"""Progress of a long step (done of total, rate, time left), for a person at a terminal or a log.

    bar = Progress("decoding images", sys.stderr)    # the caller owns where it goes
    verify_images(paths, progress=bar.update)        # the work calls update(done, total)
    bar.close()

On a terminal (`out.isatty()`) it redraws one bar in place; anywhere else (a job log, CI, a file, a
`logging.Logger`) it writes plain lines, the first at once, then one every `every_s` seconds or every
`every_pct` percent, whichever comes first, and always the last, so a log shows a sign of life without
filling up. With `delay_s`, a step that ends sooner says nothing at all (tqdm's `delay`). It never prints:
it writes to the stream (or logger) it was given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24


def duration(seconds: float) -> str:
    """3s, 4m05s, 2h07m: the time left, as a person reads it."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts `done` of `total` for one named step and renders it to `out` (a text stream or a logger)."""

    def __init__(
        self,
        label: str,
        out: TextIO | logging.Logger,
        *,
        unit: str = "images",
        every_s: float = 10.0,
        every_pct: float = 10.0,
        delay_s: float = 0.0,
        level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.out, self.unit, self.level, self.clock = label, out, unit, level, clock
        self.every_s, self.every_pct, self.delay_s = every_s, every_pct, delay_s
        self.terminal = not isinstance(out, logging.Logger) and bool(getattr(out, "isatty", lambda: False)())
        self.started: float | None = None
        self.done, self.total = 0, 0
        self._last_line = -float("inf")  # when the last plain line was written
        self._last_pct = -float("inf")
        self._drawn = False  # a bar is on the terminal's current line
        self._finished = False

    def update(self, done: int, total: int | None = None) -> None:
        """`done` of `total` (total once, or whenever it is known); the shape verify_images and the cache take."""
        now = self.clock()
        if self.started is None:
            self.started = now
        self.done = done
        if total is not None:
            self.total = total
        if now - self.started < self.delay_s:
            return  # a short step stays quiet, its end too
        if self.terminal:
            self._draw(now)
            return
        pct = 100.0 * done / self.total if self.total else 0.0
        last = self.total and done >= self.total
        due = now - self._last_line >= self.every_s or pct - self._last_pct >= self.every_pct
        if (due or last) and not self._finished:
            self._write(self.line(now))
            self._last_line, self._last_pct = now, pct
            self._finished = bool(last)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        """End the step: a terminal's bar gets its line end (nothing else is written)."""
        if self.terminal and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rate(self, now: float) -> float | None:
        """Units per second since the first update (None before a unit is done)."""
        elapsed = now - self.started if self.started is not None else 0.0
        return self.done / elapsed if self.done and elapsed > 0 else None

    def line(self, now: float) -> str:
        """`decoding images: 51200/202599 (25%), 1830 images/s, 1m23s left` (the plain form)."""
        text = f"{self.label}: {self.done}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        rate = self.rate(now)
        if rate:
            text += f", {rate:.0f} {self.unit}/s"
            left = max(0, self.total - self.done)
            text += f", {duration(left / rate)} left" if left else f", done in {duration(now - self.started)}"
        return text

    def _draw(self, now: float) -> None:
        filled = round(BAR_WIDTH * self.done / self.total) if self.total else 0
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        # \r and clear to the line's end: a shorter redraw leaves no tail of the longer one before it
        self.out.write(f"\r[{bar}] {self.line(now)}\x1b[K")
        self.out.flush()
        self._drawn = True

    def _write(self, text: str) -> None:
        if isinstance(self.out, logging.Logger):
            self.out.log(self.level, "%s", text)
            return
        self.out.write(text + "\n")
        self.out.flush()
