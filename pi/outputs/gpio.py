"""Relays on the Pi's GPIO header through RPi.GPIO (Pi 3/4/Zero 2 W) or rpi-lgpio (Pi 5).

RPi.GPIO is imported when the output opens, never at import time: render, the tests and every
other output must work on machines without it.

With ``pwm_hz`` the pins run RPi.GPIO's software PWM, so dimmer levels become brightness on
DC solid-state relays or MOSFET boards (never on mechanical relays, which it would destroy).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pi.config.values import ConfigError, check_bcm_pins
from pi.outputs.base import Output, OutputError

if TYPE_CHECKING:
    from pi.outputs.wear import SwitchCounter

MODEL_PATH = "/proc/device-tree/model"


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

    def __init__(self, pins: Sequence[int], *, active_low: bool, pwm_hz: int = 0,
                 model_path: str | Path = MODEL_PATH, counter: "SwitchCounter | None" = None):
        try:
            self.pins = check_bcm_pins(list(pins), "rpigpio pins")
        except ConfigError as exc:
            raise OutputError(str(exc)) from None
        super().__init__(len(self.pins))
        self.active_low = bool(active_low)
        self.pwm_hz = pwm_hz
        self._pwms: list = []
        self.model_path = Path(model_path)
        self.gpio: types.ModuleType | None = None
        self._levels: list[int] | None = None
        self._set_up: list[int] = []
        self.counter = counter  # pi/outputs/wear.py: each relay's switchings, kept across restarts
        self._states = (False,) * len(self.pins)

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
        if self.pwm_hz:
            try:
                self._pwms = [gpio.PWM(pin, self.pwm_hz) for pin in self.pins]
                for pwm in self._pwms:
                    pwm.start(self._duty(0.0))
            except Exception as exc:
                self._cleanup()
                raise OutputError(f"rpigpio: software PWM at {self.pwm_hz} Hz could not start "
                                  f"({exc}); expected RPi.GPIO's PWM on every pin") from None

    def _duty(self, level: float) -> float:
        """Duty cycle in percent of the time the pin is high."""
        return 100.0 * (1.0 - level if self.active_low else level)

    def _count(self, states: tuple[bool, ...]) -> None:
        if self.counter is not None:
            self.counter.count(self._states, states)
        self._states = states

    def _write(self, states, levels, t) -> None:
        self._count(states)
        if self._pwms:
            if levels is None:  # on/off only (all_off, the wiring test): full or nothing
                levels = tuple(1.0 if on else 0.0 for on in states)
            for pwm, level in zip(self._pwms, levels):
                pwm.ChangeDutyCycle(self._duty(level))
            return
        assert self.gpio is not None and self._levels is not None
        force = t is None  # all_off() writes every pin, whatever we believe they are
        for i, (pin, on) in enumerate(zip(self.pins, states)):
            level = self._on if on else self._off
            if force or level != self._levels[i]:
                self.gpio.output(pin, level)
                self._levels[i] = level

    def _release(self) -> None:
        try:
            self._cleanup()
        finally:
            if self.counter is not None:
                self.counter.flush()  # at exit, as well as every minute

    def _cleanup(self) -> None:
        # cleanup() turns the pins back into inputs; a floating input drives neither kind of
        # relay board, and other programs can use the pins after us.
        pwms, self._pwms = self._pwms, []
        for pwm in pwms:
            pwm.stop()
        if self.gpio is not None and self._set_up:
            pins, self._set_up = self._set_up, []
            self.gpio.cleanup(pins)
