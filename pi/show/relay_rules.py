"""The relay-safety rules, in one module for every path that drives lamps (the show logic,
pi/show/mapping.py, and the sACN receiver, pi/audio/sacn_receiver.py):

* :class:`ChannelOverrides`: the user's invert, always-on and always-off channels, numbered
  from 1 in the config (as on the relay boards' labels) and from 0 here;
* :class:`ToggleGuard`: the last word on relay wear: each channel switches at most
  ``max_per_s`` times in any window of one second, and never sooner than ``hold_s`` after its
  last switch;
* :class:`SwitchBudget`: the same rule for a planner (pi/show/accents.py,
  pi/show/stem_accents.py) placing switches in frames, in any order, so that the guard
  defers none of them.

The show logic aims for a pleasant show and keeps the *average* rate down; the guard runs
after it, on the states themselves, and holds a strict per-channel limit for any music, any
model and any sACN sender. A switch that would break the limit is deferred, never dropped:
the channel keeps its state until the window has room, then takes whatever the show wants by
then. So a channel the show switched off ends off at most a second later.

Stdlib plus numpy.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

WINDOW_S = 1.0


@dataclass
class ChannelOverrides:
    """User config applied after the show logic. Channel indices are 0-based here."""

    invert: tuple[int, ...] = ()
    always_on: tuple[int, ...] = ()
    always_off: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, *, invert: Sequence[int] = (), always_on: Sequence[int] = (),
                    always_off: Sequence[int] = ()) -> "ChannelOverrides":
        """From the config's channel numbers, which count from 1 like the boards' labels."""
        return cls(invert=tuple(c - 1 for c in invert),
                   always_on=tuple(c - 1 for c in always_on),
                   always_off=tuple(c - 1 for c in always_off))

    def states(self, states: np.ndarray) -> np.ndarray:
        """On/off states ``[shape=(n_channels,)]`` with the overrides applied (a copy)."""
        out = states.copy()
        if self.invert:
            out[list(self.invert)] ^= True
        if self.always_on:
            out[list(self.always_on)] = True
        if self.always_off:
            out[list(self.always_off)] = False
        return out

    def states_list(self, states: list[bool]) -> list[bool]:
        """:meth:`states` for a plain list (the show logic's per-frame form), as a new list."""
        out = list(states)
        for c in dict.fromkeys(self.invert):  # once each, as numpy's out[list] ^= True
            out[c] = not out[c]
        for c in self.always_on:
            out[c] = True
        for c in self.always_off:
            out[c] = False
        return out

    def levels(self, levels: np.ndarray) -> np.ndarray:
        """Dimmer levels 0..1 ``[shape=(n_channels,)]`` with the overrides applied (a copy):
        an inverted channel is ``1 - level``."""
        out = levels.copy()
        if self.invert:
            out[list(self.invert)] = 1.0 - out[list(self.invert)]
        if self.always_on:
            out[list(self.always_on)] = 1.0
        if self.always_off:
            out[list(self.always_off)] = 0.0
        return out


class ToggleGuard:
    """Per-channel switch budget. ``apply(states, times_s)`` for frames; ``may_switch`` /
    ``switched`` / ``free_at`` for callers that keep their own states (the sACN receiver)."""

    def __init__(self, n_channels: int, *, max_per_s: int, hold_s: float = 0.0,
                 window_s: float = WINDOW_S):
        if isinstance(max_per_s, bool) or not isinstance(max_per_s, int) or max_per_s < 1:
            raise ValueError(f"max_toggles_per_s: expected an integer >= 1, found "
                             f"{max_per_s!r}")
        self.n, self.max_per_s, self.hold_s, self.window_s = n_channels, max_per_s, hold_s, \
            window_s
        self._times = [deque() for _ in range(n_channels)]  # recent switch times, oldest first
        self._out = [False] * n_channels  # outputs start all-off
        self._on_level = [1.0] * n_channels  # the level a held-on dimmer keeps
        self.deferred = 0  # channel-frames in which a wanted switch had to wait

    def _expire(self, c: int, t: float) -> deque:
        times = self._times[c]
        while times and times[0] <= t - self.window_s:
            times.popleft()
        return times

    def may_switch(self, c: int, t: float) -> bool:
        times = self._expire(c, t)
        return len(times) < self.max_per_s and (not times or t - times[-1] >= self.hold_s - 1e-9)

    def switched(self, c: int, t: float) -> None:
        self._times[c].append(t)

    def free_at(self, c: int) -> float:
        """The earliest time channel ``c`` may switch again (``-inf``: now)."""
        times = self._times[c]
        if not times:
            return -math.inf
        at = times[-1] + self.hold_s
        if len(times) >= self.max_per_s:
            at = max(at, times[len(times) - self.max_per_s] + self.window_s)
        return at

    def apply(self, states: np.ndarray, times_s: np.ndarray,
              levels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``[shape=(k, n)]`` wanted states at ``times_s`` -> ``(states, levels)`` to apply.
        ``levels`` (same shape, dimmer levels) come back fixed to match: a channel held on
        keeps the level it came on with, one held off is 0 (None stays None)."""
        wanted = np.asarray(states, bool)
        rows, level_rows = self.apply_rows(
            wanted.tolist(), np.asarray(times_s, float).tolist(),
            None if levels is None else np.asarray(levels, float).tolist())
        return (np.array(rows, bool).reshape(wanted.shape),
                None if level_rows is None
                else np.array(level_rows, float).reshape(wanted.shape))

    def apply_rows(self, wanted: list[list[bool]], times: list[float],
                   level_rows: list[list[float]] | None = None
                   ) -> tuple[list[list[bool]], list[list[float]] | None]:
        """:meth:`apply` on Python lists, row by row (the show logic's own form: a block is
        one or two frames of 8 channels, where numpy calls cost more than the work). The
        rows given are not changed; a row of levels that needs fixing is replaced."""
        # Most rows equal the outputs and end at once.
        cur, on_level, rows = self._out, self._on_level, []
        fixed = None if level_rows is None else list(level_rows)
        # A channel wanted and shown on keeps its level, row by row. In a run of rows equal
        # to the outputs only the run's last row counts (the outputs do not change in it),
        # so on_level takes it when the run ends (`settled`), not at every row.
        settled = -1
        for i, row in enumerate(wanted):
            if row == cur:  # most frames: nothing wants to switch, nothing is held
                rows.append(cur)
                settled = i
                continue
            if level_rows is not None:
                if settled >= 0:
                    on_level = [lv if o else ol
                                for o, lv, ol in zip(cur, level_rows[settled], on_level)]
                on_level = [lv if w and o else ol
                            for w, o, lv, ol in zip(row, cur, level_rows[i], on_level)]
            settled = -1
            t, new = times[i], cur[:]  # a new list: cur is in rows already
            for c, (w, o) in enumerate(zip(row, cur)):
                if w == o:
                    continue
                if self.may_switch(c, t):
                    new[c] = w
                    self.switched(c, t)
                    if w and level_rows is not None:
                        on_level[c] = level_rows[i][c]
                else:
                    self.deferred += 1
            cur = new
            rows.append(cur)
            if fixed is not None and cur != row:
                fixed[i] = [(on_level[c] if o else 0.0) if w != o else lv
                            for c, (w, o, lv) in enumerate(zip(row, cur, level_rows[i]))]
        if level_rows is not None and settled >= 0:
            on_level = [lv if o else ol for o, lv, ol in zip(cur, level_rows[settled], on_level)]
        self._out, self._on_level = cur, on_level
        return rows, fixed


class SwitchBudget:
    """:class:`ToggleGuard`'s rule for each of ``k`` channels, in frames ``dt`` apart, over
    switches planned in any order: at most ``max_per_s`` in any window of ``window_s``, each
    ``hold`` frames or more from the next."""

    def __init__(self, *, k: int, dt: float, hold: int, max_per_s: int, window_s: float):
        self.times: list[list[int]] = [[] for _ in range(k)]
        self.dt, self.hold, self.max_per_s, self.window_s = dt, hold, max_per_s, window_s

    def fits(self, c: int, new: list[int]) -> bool:
        """Whether channel ``c`` may also switch at the frames ``new``."""
        times, m = self.times[c], self.max_per_s
        # A microsecond's margin: the guard works on the frames' float times.
        span = self.window_s + 1e-6
        if len(new) == 1 and (not times or new[0] >= times[-1]):
            # The common case, a switch after all the others: only the last m matter.
            t = new[0]
            return not times or (t - times[-1] >= self.hold
                                 and (len(times) < m or (t - times[-m]) * self.dt >= span))
        merged = times[max(bisect.bisect_left(times, min(new)) - m, 0):
                       bisect.bisect_right(times, max(new)) + m] + list(new)
        merged.sort()
        # Plain loops: generators under any()/all() cost most of a plan's accents.
        hold, prev = self.hold, merged[0]
        for t in merged[1:]:
            if t - prev < hold:
                return False
            prev = t
        # max_per_s + 1 switches in a row must span a whole window.
        dt = self.dt
        for i in range(len(merged) - m):
            if (merged[i + m] - merged[i]) * dt < span:
                return False
        return True

    def add(self, c: int, new: list[int]) -> None:
        for t in new:
            bisect.insort(self.times[c], t)
