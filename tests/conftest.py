"""Fixtures several test files share."""
from __future__ import annotations

import sys
import types

import pytest


def _fake_rpi_gpio(*, lgpio_shim: bool = False) -> types.ModuleType:
    """A stand-in for the RPi.GPIO module that records every call in ``calls``: ``("setup",
    pin, mode, initial)``, ``("output", pin, level)``, ``("cleanup", pins)``, and for PWM
    ``("pwm", pin, hz)``, ``("start", pin, duty)``, ``("duty", pin, duty)``, ``("stop",
    pin)``. Pins listed in ``busy`` fail to set up, as a pin another program holds does."""
    gpio = types.ModuleType("RPi.GPIO")
    gpio.BCM, gpio.BOARD, gpio.OUT, gpio.IN, gpio.LOW, gpio.HIGH = 11, 10, 0, 1, 0, 1
    gpio.calls = []
    gpio.setwarnings = lambda flag: gpio.calls.append(("setwarnings", flag))
    gpio.setmode = lambda mode: gpio.calls.append(("setmode", mode))

    def setup(pin, mode, initial=None):
        if pin in getattr(gpio, "busy", ()):
            raise RuntimeError("GPIO busy")
        gpio.calls.append(("setup", pin, mode, initial))

    gpio.setup = setup
    gpio.output = lambda pin, level: gpio.calls.append(("output", pin, level))
    gpio.cleanup = lambda pins=None: gpio.calls.append(("cleanup", list(pins)))

    class PWM:
        def __init__(self, pin, hz):
            self.pin = pin
            gpio.calls.append(("pwm", pin, hz))

        def start(self, duty):
            gpio.calls.append(("start", self.pin, duty))

        def ChangeDutyCycle(self, duty):  # noqa: N802 - RPi.GPIO's name
            gpio.calls.append(("duty", self.pin, round(duty, 3)))

        def stop(self):
            gpio.calls.append(("stop", self.pin))

    gpio.PWM = PWM
    if lgpio_shim:
        gpio.lgpio = types.ModuleType("lgpio")  # what rpi-lgpio's module carries
    return gpio


@pytest.fixture(autouse=True)
def _plan_cache_in_tmp(tmp_path_factory, monkeypatch):
    """The daemon keeps look-ahead plans in the user's cache folder (pi/show/plans.py): never the
    real one in tests."""
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def fake_gpio(monkeypatch):
    """``fake_gpio(lgpio_shim=False)`` installs a fake ``RPi.GPIO`` and returns it."""
    def install(**kw):
        gpio = _fake_rpi_gpio(**kw)
        rpi = types.ModuleType("RPi")
        rpi.GPIO = gpio
        monkeypatch.setitem(sys.modules, "RPi", rpi)
        monkeypatch.setitem(sys.modules, "RPi.GPIO", gpio)
        monkeypatch.delitem(sys.modules, "RPi._GPIO", raising=False)
        return gpio
    return install


@pytest.fixture
def gpio(fake_gpio):
    """A fake ``RPi.GPIO`` (as on a Pi 4), installed."""
    return fake_gpio()
