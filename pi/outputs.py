"""Where channel states go: relays on GPIO, lamps in a terminal, or a recording for tests.

The GPIO relays live in pi/gpio.py, the terminal lamps in pi/terminal.py, sACN in
pi/sacn_output.py; this module keeps the interface and the safety rules.

Relays are hardware, so every output is all-off right after open(), all-off before close(),
and an atexit net closes whatever the caller forgot (as gpiozero does). Minimum hold times are
the mapper's job; an output applies exactly the states it is given.

Dimmable outputs (sACN dimmers, PWM) may also be given levels in [0, 1] next to the states;
relays look at the states only, so one call drives both kinds alike.
"""
from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Sequence

import numpy as np

from pi import stopping
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
            self._apply(coerced, lv, float(t))

    def all_off(self) -> None:
        """Every channel off now (recorded with show time None)."""
        with self._lock:
            if self.opened and not self.closed:
                self._write((False,) * self.n_channels, None)

    def close(self) -> None:
        """All off, then release; safe to call twice, and releases even if all_off fails.
        A stop signal (pi/stopping.py) that arrives meanwhile waits until it is done."""
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
        a = np.asarray(levels, dtype=float)
        # min/max, not an elementwise test: a lamp's levels arrive every frame; NaN fails both.
        if a.shape != (self.n_channels,) or not (a.min() >= 0 and a.max() <= 1):
            bad = a[~((a >= 0) & (a <= 1))] if a.shape == (self.n_channels,) else a.shape
            raise OutputError(f"{self.name}: expected {self.n_channels} levels from 0 to 1, "
                              f"found {bad!r}")
        return tuple(a.tolist())

    def _open(self) -> None: ...

    def _apply(self, states: tuple[bool, ...], levels: tuple[float, ...] | None,
               t: float) -> None:
        """Dimmable outputs override this; the others only ever see the states."""
        self._write(states, t)

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
            raise OutputError("outputs: expected the same channel count everywhere, found "
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
        with stopping.deferred(), self._lock:
            if self.closed:
                return
            self.closed = True
            if self in _OPEN:
                _OPEN.remove(self)
            self._each(Output.close)

    def _write(self, states: tuple[bool, ...], t: float | None) -> None:
        self._each(lambda o: o._write(states, t) if o.opened and not o.closed else None)

    def _apply(self, states, levels, t) -> None:
        self._each(lambda o: o._apply(states, levels, t) if o.opened and not o.closed else None)

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
        self._apply(states, None, t)

    def _apply(self, states, levels, t) -> None:
        mono = time.monotonic()
        self.records.append((mono, t, states))
        if self._file is None:  # nothing to write: skip building the line
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

    def _write(self, states, t) -> None:
        self.inner._write(self._pick(states), t)

    def _apply(self, states, levels, t) -> None:
        self.inner._apply(self._pick(states), self._pick(levels), t)

    def _release(self) -> None:
        self.inner.close()


def make_outputs(spec_list: Sequence[str], config: Config | None = None) -> MultiOutput:
    """Outputs by name ("rpigpio", "sacn", "terminal", "mock"), configured from `config`."""
    config = config or Config()
    n = config.show.channels
    outputs: list[Output] = []

    def some(out: Output, channels: Sequence[int]) -> Output:
        return ChannelSubset(out, [c - 1 for c in channels], n) if channels else out

    for name in spec_list:
        if name == "rpigpio":
            from pi.gpio import RPiGPIOOutput  # pi.gpio imports this module: import late

            g = config.outputs.rpigpio
            outputs.append(some(RPiGPIOOutput(g.pins, active_low=g.active_low,
                                              pwm_hz=g.pwm_hz, counter=_counter(config)),
                                g.channels))
        elif name == "sacn":
            from pi.sacn_output import SACNOutput

            d = config.outputs.sacn
            outputs.append(some(SACNOutput(len(d.channels) or n, universe=d.universe,
                                           start_address=d.start_address,
                                           destination=d.destination, port=d.port,
                                           priority=d.priority, source_name=d.source_name,
                                           fps=d.fps, dimmer=d.dimmer), d.channels))
        elif name == "terminal":
            from pi.terminal import TerminalOutput

            outputs.append(TerminalOutput(n))
        elif name == "mock":
            outputs.append(MockOutput(n, config.outputs.mock.record or None))
        else:
            raise OutputError(f"outputs: unknown output {name!r}; expected one of "
                              f"rpigpio, sacn, terminal, mock")
    return MultiOutput(outputs)


def _counter(config: Config):
    """The relays' persistent switch counter (pi/wear.py), or None when not counting."""
    from pi.config import relay_limits
    from pi.wear import SwitchCounter, counts_path

    g = config.outputs.rpigpio
    path = counts_path(g.switch_counts)
    if path is None:
        return None
    return SwitchCounter(path, [f"GPIO{p}" for p in g.pins], rated=relay_limits(config)[1])


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
