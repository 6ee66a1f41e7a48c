"""Where channel states go: relays on GPIO, lamps in a terminal, or a recording for tests.

The GPIO relays live in pi/outputs/gpio.py, the terminal lamps in pi/outputs/terminal.py, sACN in
pi/outputs/sacn.py; this module keeps the interface and the safety rules.

Relays are hardware, so every output is all-off right after open(), all-off before close(),
and an atexit net closes whatever the caller forgot (as gpiozero does). Minimum hold times are
the mapper's job; an output applies exactly the states it is given.

Dimmable outputs (sACN dimmers, PWM) may also be given levels in [0, 1] next to the states;
relays look at the states only, so one call drives both kinds alike.
"""
from __future__ import annotations

import atexit
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Sequence

import numpy as np

from pi.daemon import stopping
from pi.errors import LightshowError

_OPEN: list["Output"] = []  # opened and not yet closed, oldest first
# numpy's dtypes of native bools and floats are singletons: `is` is the cheapest test.
_BOOL, _FLOAT64 = np.dtype(bool), np.dtype(np.float64)


class OutputError(LightshowError):
    """An output that cannot start or run; the message names the pin/package/thing."""


class Output:
    """Tiny interface: open(), set(states, t=...), all_off(), close(). Subclasses implement
    _open, _write (the one method that drives the lamps) and _release; this class keeps the
    safety rules and the open/close bookkeeping in one place."""

    name = "output"

    def __init__(self, n_channels: int):
        if isinstance(n_channels, bool) or not isinstance(n_channels, int) or n_channels < 1:
            raise OutputError(f"{self.name}: expected a channel count >= 1, "
                              f"found {n_channels!r}")
        self.n_channels = n_channels
        self.opened = False
        self.closed = False
        # The audio thread may be in set() while SIGTERM closes us from the main thread; a
        # set() that lands after close()'s all-off would leave a relay on.
        self._lock = threading.RLock()

    def open(self) -> None:
        with self._lock:
            if self.opened:
                return
            if self.closed:
                raise OutputError(f"{self.name}: expected a fresh output, found it closed")
            self._open()
            self.opened = True
            _register(self)
            self.all_off()

    def set(self, states: Sequence[bool] | np.ndarray, *, t: float,
            levels: Sequence[float] | np.ndarray | None = None) -> None:
        """Apply channel states (True = lamp on); `t` is the show time, for records.
        `levels` (optional, 0..1 per channel) is the brightness for dimmable outputs."""
        coerced = self._coerce(states)
        lv = None if levels is None else self._coerce_levels(levels)
        with self._lock:
            if not self.opened or self.closed:
                raise OutputError(f"{self.name}: set() needs an open output, found it "
                                  f"{'closed' if self.closed else 'not opened'}")
            self._write(coerced, lv, float(t))

    def all_off(self) -> None:
        """Every channel off now (recorded with show time None)."""
        with self._lock:
            if self.opened and not self.closed:
                self._write((False,) * self.n_channels, None, None)

    def close(self) -> None:
        """All off, then release; safe to call twice, and releases even if all_off fails.
        A stop signal (pi/daemon/stopping.py) that arrives meanwhile waits until it is done."""
        with stopping.deferred(), self._lock:
            if self.closed:
                return
            try:
                self.all_off()
            finally:
                self.closed = True
                if self in _OPEN:
                    _OPEN.remove(self)
                if self.opened:
                    self._release()

    def __enter__(self) -> "Output":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _coerce(self, states: Sequence[bool] | np.ndarray) -> tuple[bool, ...]:
        # The show's own forms first (a row of a bool array; the tuple a MultiOutput passes
        # on): they arrive every frame, and the checks below cost more than the output.
        if type(states) is np.ndarray and states.dtype is _BOOL \
                and states.shape == (self.n_channels,):
            return tuple(states.tolist())
        if type(states) is tuple and len(states) == self.n_channels \
                and all(type(x) is bool for x in states):
            return states
        a = np.asarray(states)
        if a.shape != (self.n_channels,):
            raise OutputError(f"{self.name}: expected {self.n_channels} channel states, "
                              f"found shape {a.shape}")
        if a.dtype != bool:
            # 0/1 integers are fine; 0.7 means a caller forgot to threshold.
            if not np.isin(a, (0, 1)).all():
                raise OutputError(f"{self.name}: expected booleans (or 0/1), found "
                                  f"{a[~np.isin(a, (0, 1))][0].item()!r}")
        return tuple(a.tolist()) if a.dtype == bool else tuple(bool(x) for x in a.tolist())

    def _coerce_levels(self, levels: Sequence[float] | np.ndarray) -> tuple[float, ...]:
        if type(levels) is np.ndarray and levels.dtype is _FLOAT64 \
                and levels.shape == (self.n_channels,):
            values = levels.tolist()
            # In range, and no NaN (which min and max may pass over, but not the sum).
            if 0.0 <= min(values) and max(values) <= 1.0 and not math.isnan(sum(values)):
                return tuple(values)
        elif type(levels) is tuple and len(levels) == self.n_channels \
                and all(type(x) is float and 0.0 <= x <= 1.0 for x in levels):
            return levels
        a = np.asarray(levels, dtype=float)
        values = a.tolist()
        # Checked on the Python floats: a lamp's levels arrive every frame, and for a few
        # channels this costs less than numpy's min and max. NaN fails the comparison.
        if a.shape != (self.n_channels,) or not all(0.0 <= x <= 1.0 for x in values):
            bad = a[~((a >= 0) & (a <= 1))] if a.shape == (self.n_channels,) else a.shape
            raise OutputError(f"{self.name}: expected {self.n_channels} levels from 0 to 1, "
                              f"found {bad!r}")
        return tuple(values)

    def _open(self) -> None: ...

    def _write(self, states: tuple[bool, ...], levels: tuple[float, ...] | None,
               t: float | None) -> None:
        """Drive the lamps: ``states``; ``levels`` (0..1) for dimmable outputs, None for
        on/off; ``t`` the show time, None for all_off (write every channel, whatever the
        output believes they are)."""
        raise NotImplementedError

    def _release(self) -> None: ...


class MultiOutput(Output):
    """Several outputs driven together (e.g. relays plus terminal lamps)."""

    name = "outputs"

    def __init__(self, outputs: Sequence[Output]):
        if not outputs:
            raise OutputError("outputs: expected at least one output, found none")
        n = {o.n_channels for o in outputs}
        if len(n) != 1:
            raise OutputError("outputs: expected the same channel count everywhere, found "
                              + ", ".join(f"{o.name}={o.n_channels}" for o in outputs))
        super().__init__(n.pop())
        self.outputs = list(outputs)

    def _open(self) -> None:
        try:
            for o in self.outputs:
                o.open()
        except BaseException as exc:
            try:
                self._each(Output.close)  # the ones that did open must not stay live
            except Exception as close_exc:  # noqa: BLE001 - the open error matters more
                exc.add_note(f"closing the other outputs also failed: {close_exc}")
            self.closed = True
            raise

    def _write(self, states, levels, t) -> None:
        self._each(lambda o: None if not o.opened or o.closed else
                   o.all_off() if t is None else o.set(states, t=t, levels=levels))

    def _release(self) -> None:
        """Close every output (each goes all-off first), even when an earlier one fails."""
        self._each(Output.close)

    def _each(self, fn: Callable[[Output], object]) -> None:
        """Run fn on every output; one failing must not spare the rest (their lamps would
        stay in whatever state they were). The first error is re-raised, others noted."""
        errors: list[BaseException] = []
        for o in self.outputs:
            try:
                fn(o)
            except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also failed: {type(other).__name__}: {other}")
            raise errors[0]


class MockOutput(Output):
    """Records (monotonic_time, show_time, states) for every set/all_off in ``records``; with
    `record`, as a JSON line in that file instead, flushed at once so another process can
    read it after a crash (and a recorded run of hours holds none of it in memory)."""

    name = "mock"

    def __init__(self, n_channels: int, record: str | Path | None = None):
        super().__init__(n_channels)
        self.records: list[tuple[float, float | None, tuple[bool, ...]]] = []
        self.path = Path(record) if record else None
        self._file: IO[str] | None = None

    def _open(self) -> None:
        if self.path is not None:
            self._file = self.path.open("w", encoding="utf-8")
            self._dump({"event": "open", "mono": time.monotonic(), "t": None, "states": None})

    def _write(self, states, levels, t) -> None:
        mono = time.monotonic()
        if self._file is None:  # no file: the list is the record
            self.records.append((mono, t, states))
            return
        line = {"event": "set" if t is not None else "all_off", "mono": mono, "t": t,
                "states": list(states)}
        if levels is not None:
            line["levels"] = [round(x, 4) for x in levels]
        self._dump(line)

    def _release(self) -> None:
        self._dump({"event": "close", "mono": time.monotonic(), "t": None, "states": None})
        if self._file is not None:
            self._file.close()

    def _dump(self, line: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        """The JSON lines a MockOutput wrote (for tests that run the show in a subprocess)."""
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


class ChannelSubset(Output):
    """Some of the show's channels on an output of their own, e.g. channels 9..16 on a second
    board. `channels` are 0-based, in the inner output's channel order."""

    def __init__(self, inner: Output, channels: Sequence[int], n_channels: int):
        super().__init__(n_channels)
        if len(channels) != inner.n_channels or not all(0 <= c < n_channels for c in channels):
            raise OutputError(f"{inner.name}: expected {inner.n_channels} channel numbers "
                              f"from 1 to {n_channels}, found "
                              f"{[c + 1 for c in channels]}")
        self.inner, self.channels, self.name = inner, list(channels), inner.name

    def _pick(self, values):
        return None if values is None else tuple(values[c] for c in self.channels)

    def _open(self) -> None:
        self.inner.open()

    def _write(self, states, levels, t) -> None:
        if t is None:
            self.inner.all_off()
        else:
            self.inner.set(self._pick(states), t=t, levels=self._pick(levels))

    def _release(self) -> None:
        self.inner.close()


def _register(out: Output) -> None:
    _OPEN.append(out)
    # atexit runs newest first: registering again after each open (i.e. after the GPIO
    # library was imported) puts our all-off before any exit handler that library adds.
    atexit.unregister(_close_all)
    atexit.register(_close_all)


@atexit.register
def _close_all() -> None:
    """Safety net at interpreter exit: newest first, and one failure spares none of the rest."""
    while _OPEN:
        out = _OPEN[-1]
        try:
            out.close()
        except Exception as exc:  # noqa: BLE001 - at exit all we can do is report
            print(f"lightshow: closing {out.name} at exit failed: {exc}", file=sys.stderr)
        finally:
            if out in _OPEN:
                _OPEN.remove(out)
