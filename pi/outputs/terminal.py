"""Lamps drawn in a terminal: for trying a show out at a desk or over ssh."""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Callable

from pi.outputs.base import Output


class TerminalOutput(Output):
    """Lamps on one line, redrawn in place on a TTY; a plain line per change otherwise.
    Draws only on change and at most `max_fps` times a second (a terminal over ssh cannot
    keep up with 50 blocks a second); the last state is always drawn on close."""

    name = "terminal"

    def __init__(self, n_channels: int, stream: IO[str] | None = None, *,
                 max_fps: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__(n_channels)
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_gap = 1.0 / max_fps if self.tty else 0.1
        self.clock = clock
        self._shown: tuple[bool, ...] | None = None
        self._pending: tuple[tuple[bool, ...], float | None] | None = None
        self._last_draw = -float("inf")
        try:
            "●○".encode(getattr(self.stream, "encoding", None) or "ascii")
            self._glyphs = ("●", "○")
        except (UnicodeEncodeError, LookupError):
            self._glyphs = ("#", ".")

    def _write(self, states, levels, t) -> None:
        if states == self._shown:
            self._pending = None  # a flicker shorter than a frame: nothing to show
        elif self._pending is None or self._pending[0] != states:
            self._pending = (states, t)
        # Checked on every call, not only on change: the mapper calls set() every block, so a
        # change held back by the frame limit is drawn on the next call that is due.
        now = self.clock()
        if self._pending is not None and now - self._last_draw >= self.min_gap:
            self._draw(now)

    def _release(self) -> None:
        self._draw(self.clock())
        if self.tty:
            self._emit("\n")

    def _draw(self, now: float) -> None:
        if self._pending is None:
            return
        states, t = self._pending
        self._pending, self._shown, self._last_draw = None, states, now
        on, off = self._glyphs
        lamps = []
        for i, s in enumerate(states):
            if i and i % 8 == 0:
                lamps.append(" ")
            if self.tty:
                lamps.append(f"\x1b[1;33m{on}\x1b[0m" if s else f"\x1b[2m{off}\x1b[0m")
            else:
                lamps.append(on if s else off)
        when = f"{t:8.2f}s " if t is not None else "     off "
        if self.tty:
            self._emit(f"\r\x1b[K{when}{''.join(lamps)}")
        else:
            self._emit(f"{when}{''.join(lamps)}\n")

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            # `lightshow run | head` closed the pipe: lamps on screen are optional, the
            # relays are not, so stop drawing instead of stopping the show.
            self.tty, self.stream = False, open(os.devnull, "w")
