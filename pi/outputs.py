"""Where channel states go: relays on GPIO, lamps in a terminal, or a recording for tests.

Relays are hardware, so every output is all-off right after open(), all-off before close(),
and an atexit net closes whatever the caller forgot (as gpiozero does). Minimum hold times are
the mapper's job; an output applies exactly the states it is given.
"""
from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import json
import os
import re
import sys
import threading
import time
import types
from pathlib import Path
from typing import IO, Callable, Sequence

import numpy as np

from pi.config import Config, ConfigError, check_bcm_pins

MODEL_PATH = "/proc/device-tree/model"
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


_PI5 = re.compile(r"Raspberry Pi (5|500)\b|Raspberry Pi Compute Module 5")


def _is_lgpio_shim(gpio: types.ModuleType) -> bool:
    """rpi-lgpio installs itself as RPi.GPIO; tell it from the original by what it imports."""
    if isinstance(getattr(gpio, "lgpio", None), types.ModuleType):
        return True  # rpi-lgpio does `import lgpio` at module level
    if "RPi._GPIO" in sys.modules:
        return False  # the original is a C extension, RPi._GPIO, re-exported by RPi.GPIO
    try:  # neither marker: ask the package metadata
        importlib.metadata.distribution("rpi-lgpio")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pi5_error(model: str) -> OutputError:
    return OutputError(
        f"rpigpio: this is a {model}, and the original RPi.GPIO cannot drive its GPIO (the "
        f"Pi 5 moved GPIO to the RP1 chip); expected rpi-lgpio, which provides the same "
        f"RPi.GPIO module: in the venv `pip uninstall -y RPi.GPIO && pip install rpi-lgpio`, "
        f"or system-wide `sudo apt install python3-rpi-lgpio`")


class RPiGPIOOutput(Output):
    """Relays on BCM GPIO pins via RPi.GPIO (Pi 3/4/Zero 2 W) or rpi-lgpio (Pi 5)."""

    name = "rpigpio"

    def __init__(self, pins: Sequence[int], *, active_low: bool,
                 model_path: str | Path = MODEL_PATH):
        try:
            self.pins = check_bcm_pins(list(pins), "rpigpio pins")
        except ConfigError as exc:
            raise OutputError(str(exc)) from None
        super().__init__(len(self.pins))
        self.active_low = bool(active_low)
        self.model_path = Path(model_path)
        self.gpio: types.ModuleType | None = None
        self._levels: list[int] | None = None
        self._set_up: list[int] = []

    def board_model(self) -> str:
        try:
            return self.model_path.read_bytes().rstrip(b"\0\n").decode(errors="replace")
        except OSError:
            return ""  # not a Pi (or no device tree): RPi.GPIO itself will say so

    def _import(self, model: str) -> types.ModuleType:
        try:
            return importlib.import_module("RPi.GPIO")
        except ModuleNotFoundError:
            raise OutputError(
                "rpigpio: expected the RPi.GPIO module, found it not installed; install it in "
                "the lightshow venv: `pip install RPi.GPIO` (Pi 3/4/Zero 2 W) or "
                "`pip install rpi-lgpio` (Pi 5), or `sudo make install` which picks one"
            ) from None
        except RuntimeError as exc:  # RPi.GPIO raises this at import when not on a Pi
            if _PI5.search(model):
                raise _pi5_error(model) from None
            raise OutputError(f"rpigpio: RPi.GPIO refused to load ({exc}); expected a "
                              f"Raspberry Pi, found {model or 'no Pi model'} "
                              f"in {self.model_path}") from None

    def _open(self) -> None:
        model = self.board_model()
        gpio = self._import(model)
        if _PI5.search(model) and not _is_lgpio_shim(gpio):
            raise _pi5_error(model)
        self.gpio = gpio
        self._off = gpio.HIGH if self.active_low else gpio.LOW
        self._on = gpio.LOW if self.active_low else gpio.HIGH
        # After a crash-restart the pins are still outputs; RPi.GPIO would warn "channel
        # already in use" on every start. We set every level explicitly, so it is noise.
        gpio.setwarnings(False)
        try:
            gpio.setmode(gpio.BCM)
        except ValueError as exc:  # another library in this process chose BOARD numbering
            raise OutputError(f"rpigpio: expected BCM pin numbering, found {exc}") from None
        for pin in self.pins:
            try:
                # initial= sets the level as the pin becomes an output: no glitch to ON.
                gpio.setup(pin, gpio.OUT, initial=self._off)
            except Exception as exc:
                self._cleanup()
                raise OutputError(
                    f"rpigpio: GPIO {pin} could not be set up as an output ({exc}); expected "
                    f"access to /dev/gpiomem or /dev/gpiochip* (is the user in group gpio?) "
                    f"and the pin not used by another program or overlay") from None
            self._set_up.append(pin)
        self._levels = [self._off] * len(self.pins)

    def _write(self, states: tuple[bool, ...], t: float | None) -> None:
        assert self.gpio is not None and self._levels is not None
        force = t is None  # all_off() writes every pin, whatever we believe they are
        for i, (pin, on) in enumerate(zip(self.pins, states)):
            level = self._on if on else self._off
            if force or level != self._levels[i]:
                self.gpio.output(pin, level)
                self._levels[i] = level

    def _release(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        # cleanup() turns the pins back into inputs; a floating input drives neither kind of
        # relay board, and other programs can use the pins after us.
        if self.gpio is not None and self._set_up:
            pins, self._set_up = self._set_up, []
            self.gpio.cleanup(pins)


def make_outputs(spec_list: Sequence[str], config: Config | None = None) -> MultiOutput:
    """Outputs by name ("rpigpio", "terminal", "mock"), configured from `config`."""
    config = config or Config()
    n = config.show.channels
    outputs: list[Output] = []
    for name in spec_list:
        if name == "rpigpio":
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
