"""Where channel states go: relays on GPIO, lamps in a terminal, or a recording for tests.

The GPIO relays live in pi/gpio.py; this module keeps the interface and the safety rules.

Relays are hardware, so every output is all-off right after open(), all-off before close(),
and an atexit net closes whatever the caller forgot (as gpiozero does). Minimum hold times are
the mapper's job; an output applies exactly the states it is given.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Sequence

import numpy as np

from pi.config import Config

_OPEN: list["Output"] = []  # opened and not yet closed, oldest first


class OutputError(Exception):
    """An output that cannot start or run; the message names the pin/package/thing."""


class Output:
    """Tiny interface: open(), set(states, t=...), all_off(), close(). Subclasses implement
    _open/_write/_release; this class keeps the safety rules in one place."""

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

    def set(self, states: Sequence[bool] | np.ndarray, *, t: float) -> None:
        """Apply channel states (True = lamp on); `t` is the show time, for records."""
        coerced = self._coerce(states)
        with self._lock:
            if not self.opened or self.closed:
                raise OutputError(f"{self.name}: set() needs an open output, found it "
                                  f"{'closed' if self.closed else 'not opened'}")
            self._write(coerced, float(t))

    def all_off(self) -> None:
        """Every channel off now (recorded with show time None)."""
        with self._lock:
            if self.opened and not self.closed:
                self._write((False,) * self.n_channels, None)

    def close(self) -> None:
        """All off, then release; safe to call twice, and releases even if all_off fails."""
        with self._lock:
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
        a = np.asarray(states)
        if a.shape != (self.n_channels,):
            raise OutputError(f"{self.name}: expected {self.n_channels} channel states, "
                              f"found shape {a.shape}")
        if a.dtype != bool:
            # 0/1 integers are fine; 0.7 means a caller forgot to threshold.
            if not np.isin(a, (0, 1)).all():
                raise OutputError(f"{self.name}: expected booleans (or 0/1), found "
                                  f"{a[~np.isin(a, (0, 1))][0].item()!r}")
        return tuple(bool(x) for x in a)

    def _open(self) -> None: ...

    def _write(self, states: tuple[bool, ...], t: float | None) -> None:
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
            raise OutputError(f"outputs: expected the same channel count everywhere, found "
                              + ", ".join(f"{o.name}={o.n_channels}" for o in outputs))
        super().__init__(n.pop())
        self.outputs = list(outputs)

    def open(self) -> None:
        # Each output switches itself off as it opens; no second all-off round needed.
        with self._lock:
            if self.opened:
                return
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
            self.opened = True
            _register(self)

    def close(self) -> None:
        """Close every output (each goes all-off first), even when an earlier one fails."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self in _OPEN:
                _OPEN.remove(self)
            self._each(Output.close)

    def _write(self, states: tuple[bool, ...], t: float | None) -> None:
        self._each(lambda o: o._write(states, t) if o.opened and not o.closed else None)

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
    """Records (monotonic_time, show_time, states) for every set/all_off. With `record`, each
    one is also a JSON line, flushed at once so another process can read it after a crash."""

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

    def _write(self, states: tuple[bool, ...], t: float | None) -> None:
        mono = time.monotonic()
        self.records.append((mono, t, states))
        self._dump({"event": "set" if t is not None else "all_off", "mono": mono, "t": t,
                    "states": list(states)})

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

    def _write(self, states: tuple[bool, ...], t: float | None) -> None:
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


def make_outputs(spec_list: Sequence[str], config: Config | None = None) -> MultiOutput:
    """Outputs by name ("rpigpio", "terminal", "mock"), configured from `config`."""
    config = config or Config()
    n = config.show.channels
    outputs: list[Output] = []
    for name in spec_list:
        if name == "rpigpio":
            from pi.gpio import RPiGPIOOutput  # pi.gpio imports this module: import late

            outputs.append(RPiGPIOOutput(config.outputs.rpigpio.pins,
                                         active_low=config.outputs.rpigpio.active_low))
        elif name == "terminal":
            outputs.append(TerminalOutput(n))
        elif name == "mock":
            outputs.append(MockOutput(n, config.outputs.mock.record or None))
        else:
            raise OutputError(f"outputs: unknown output {name!r}; expected one of "
                              f"rpigpio, terminal, mock")
    return MultiOutput(outputs)


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
