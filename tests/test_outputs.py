"""Outputs: mock records, terminal drawing, RPi.GPIO against a fake module, fan-out safety."""
from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pi.outputs import base as outputs_mod
from pi.config.load import Config
from pi.outputs.gpio import RPiGPIOOutput
from pi.app import make_outputs
from pi.outputs.base import MockOutput, MultiOutput, Output, OutputError
from pi.outputs.terminal import TerminalOutput

PINS = [17, 18, 27, 22, 23, 24, 25, 4]
ON = np.array([1, 0, 1, 0, 0, 0, 0, 1], dtype=bool)


@pytest.fixture
def pi4_model(tmp_path):
    p = tmp_path / "model"
    p.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    return p


@pytest.fixture
def pi5_model(tmp_path):
    p = tmp_path / "model"
    p.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    return p


def _outputs(gpio):
    return [c[1:] for c in gpio.calls if c[0] == "output"]


# --- mock ------------------------------------------------------------------------------------

def test_mock_records_open_off_set_and_close_off(tmp_path):
    record = tmp_path / "rec.jsonl"
    in_memory, to_file = MockOutput(8), MockOutput(8, record)
    for out in (in_memory, to_file):
        out.open()
        out.set(ON, t=1.5)
        out.set([True] * 8, t=1.52)
        out.close()
        out.close()  # idempotent
    states = [r[2] for r in in_memory.records]
    assert states == [(False,) * 8, tuple(ON.tolist()), (True,) * 8, (False,) * 8]
    assert [r[1] for r in in_memory.records] == [None, 1.5, 1.52, None]
    monos = [r[0] for r in in_memory.records]
    assert monos == sorted(monos)
    lines = MockOutput.read(record)
    assert [ln["event"] for ln in lines] == ["open", "all_off", "set", "set", "all_off", "close"]
    assert lines[2]["states"] == ON.tolist() and lines[2]["t"] == 1.5
    monos = [ln["mono"] for ln in lines]
    assert monos == sorted(monos)
    assert not to_file.records  # a recorded run (hours of it) holds nothing in memory


def test_mock_record_is_flushed_and_atexit_turns_lights_off(tmp_path):
    """A script that opens an output, sets lamps on and exits without closing: the atexit net
    must leave everything off, and the JSONL shows it."""
    record = tmp_path / "rec.jsonl"
    script = textwrap.dedent(f"""
        from pi.outputs.base import MockOutput
        out = MockOutput(4, {str(record)!r})
        out.open()
        out.set([1, 1, 0, 1], t=0.25)
        raise SystemExit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 3, proc.stderr
    lines = MockOutput.read(record)
    assert lines[-2]["event"] == "all_off" and lines[-2]["states"] == [False] * 4
    assert lines[-1]["event"] == "close"


def test_set_checks_shape_and_values():
    with MockOutput(8) as out:
        with pytest.raises(OutputError, match="expected 8 channel states, found shape"):
            out.set([True] * 7, t=0.0)
        with pytest.raises(OutputError, match=r"expected booleans \(or 0/1\), found 0.7"):
            out.set(np.full(8, 0.7), t=0.0)
        out.set(np.array([0, 1] * 4), t=0.1)  # 0/1 integers are accepted
        assert out.records[-1][2] == (False, True) * 4
    with pytest.raises(OutputError, match="closed"):
        out.set(ON, t=0.2)


@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.1, np.inf])
def test_levels_out_of_range_or_nan_are_refused_in_every_form(bad):
    """The per-frame forms (a float64 row, a tuple of floats) skip numpy's checks, not the
    range check: NaN anywhere in the row, not only first, is refused too."""
    for c in (0, 5):
        row = np.full(8, 0.5)
        row[c] = bad
        with MockOutput(8) as out:
            for levels in (row, tuple(row.tolist()), row.tolist()):
                with pytest.raises(OutputError, match="expected 8 levels from 0 to 1"):
                    out.set(np.ones(8, bool), t=0.0, levels=levels)
            assert out.records[-1][2] == (False,) * 8  # nothing was set: all off from open


def test_a_tuple_of_states_must_be_booleans():
    with MockOutput(4) as out:
        out.set((True, False, True, False), t=0.0, levels=(0.5, 0.0, 1.0, 0.0))
        assert out.records[-1][2] == (True, False, True, False)
        with pytest.raises(OutputError, match=r"expected booleans \(or 0/1\), found 2"):
            out.set((True, 2, False, False), t=0.1)


# --- terminal --------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _TTY(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


def test_terminal_plain_text_one_line_per_change():
    buf, clock = io.StringIO(), _Clock()
    out = TerminalOutput(8, buf, clock=clock)
    out.open()
    for i in range(5):  # unchanged states draw nothing
        clock.now += 0.2
        out.set(ON, t=i * 0.2)
    out.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3, lines  # off at open, the change, off at close
    assert "\x1b" not in buf.getvalue()
    glyphs = lines[1].split()[-1]
    assert len(glyphs) == 8 and glyphs[0] == glyphs[2] == glyphs[7] != glyphs[1]


def test_terminal_tty_redraws_in_place_and_throttles():
    buf, clock = _TTY(), _Clock()
    out = TerminalOutput(8, buf, clock=clock, max_fps=30)
    out.open()
    draws = buf.getvalue().count("\r")
    # 10 changes within one frame: at most one more draw, the rest wait.
    for i in range(10):
        clock.now += 0.001
        out.set(np.roll(ON, i), t=i * 0.001)
    assert buf.getvalue().count("\r") - draws <= 1
    clock.now += 0.1
    out.set(np.roll(ON, 9), t=0.1)  # same states as pending: drawn now that a frame passed
    text = buf.getvalue()
    assert text.count("●") >= 3 and "\x1b[1;33m" in text
    out.close()
    assert buf.getvalue().endswith("\n")
    last_line = buf.getvalue().rstrip("\n").split("\r")[-1]
    assert "●" not in last_line  # the line ends showing everything off


def test_terminal_ascii_fallback_and_broken_pipe():
    class Ascii(io.StringIO):
        encoding = "ascii"

    buf, clock = Ascii(), _Clock()
    with TerminalOutput(8, buf, clock=clock) as out:
        clock.now = 1.0
        out.set(ON, t=0.0)
    assert "#" in buf.getvalue() and "●" not in buf.getvalue()

    class Broken(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    with TerminalOutput(8, Broken()) as out:  # must not raise: lamps on screen are optional
        out.set(ON, t=0.0)


# --- RPi.GPIO --------------------------------------------------------------------------------

@pytest.mark.parametrize("active_low,off,on", [(True, 1, 0), (False, 0, 1)])
def test_rpigpio_levels_and_cleanup(fake_gpio, pi4_model, active_low, off, on):
    gpio = fake_gpio()
    out = RPiGPIOOutput(PINS, active_low=active_low, model_path=pi4_model)
    out.open()
    assert ("setmode", gpio.BCM) in gpio.calls
    setups = [c for c in gpio.calls if c[0] == "setup"]
    assert setups == [("setup", p, gpio.OUT, off) for p in PINS]  # relays start off
    gpio.calls.clear()
    out.set(ON, t=0.5)
    assert _outputs(gpio) == [(p, on) for p, s in zip(PINS, ON) if s]  # only changed pins
    gpio.calls.clear()
    out.set(ON, t=0.52)
    assert _outputs(gpio) == []
    gpio.calls.clear()
    out.close()
    assert gpio.calls == [("output", p, off) for p in PINS] + [("cleanup", PINS)]
    out.close()
    assert gpio.calls[-1] == ("cleanup", PINS) and len(gpio.calls) == len(PINS) + 1


@pytest.mark.parametrize("pins,message", [
    ([17, 18, 17], r"GPIO 17 is listed twice"),
    ([17, 28], r"pins\[1\]: expected a BCM GPIO number from 0 to 27, found integer 28"),
    ([-1], r"found integer -1"),
    ([], r"expected at least one"),
])
def test_rpigpio_bad_pins_name_the_pin(pins, message):
    with pytest.raises(OutputError, match=message):
        RPiGPIOOutput(pins, active_low=True)


def test_rpigpio_on_pi5_with_classic_rpi_gpio_says_install_rpi_lgpio(fake_gpio, pi5_model):
    gpio = fake_gpio()
    out = RPiGPIOOutput(PINS, active_low=True, model_path=pi5_model)
    with pytest.raises(OutputError) as err:
        out.open()
    msg = str(err.value)
    assert "Raspberry Pi 5" in msg and "rpi-lgpio" in msg and "python3-rpi-lgpio" in msg
    assert not [c for c in gpio.calls if c[0] == "setup"]
    out.close()  # never opened: nothing to release, no error


def test_rpigpio_on_pi5_with_rpi_lgpio_works(fake_gpio, pi5_model):
    gpio = fake_gpio(lgpio_shim=True)
    with RPiGPIOOutput(PINS, active_low=True, model_path=pi5_model) as out:
        out.set(ON, t=0.0)
    assert gpio.calls[-1] == ("cleanup", PINS)


def test_rpigpio_missing_module_names_the_package(monkeypatch, pi4_model):
    monkeypatch.setitem(sys.modules, "RPi", None)  # makes `import RPi.GPIO` fail
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    with pytest.raises(OutputError, match=r"pip install RPi.GPIO.*rpi-lgpio"):
        RPiGPIOOutput(PINS, active_low=True, model_path=pi4_model).open()


def test_rpigpio_setup_failure_names_pin_and_releases_earlier_pins(fake_gpio, pi4_model):
    gpio = fake_gpio()
    gpio.busy = {27}
    out = RPiGPIOOutput(PINS, active_low=True, model_path=pi4_model)
    with pytest.raises(OutputError, match=r"GPIO 27 could not be set up.*group gpio"):
        out.open()
    assert gpio.calls[-1] == ("cleanup", [17, 18])


# --- fan-out and factory ---------------------------------------------------------------------

class _Exploding(MockOutput):
    name = "exploding"

    def _release(self):
        raise RuntimeError("boom on close")


def test_multi_closes_all_even_if_one_raises():
    a, bad, b = MockOutput(8), _Exploding(8), MockOutput(8)
    multi = MultiOutput([a, bad, b])
    multi.open()
    multi.set(ON, t=1.0)
    assert all(o.records[-1][2] == tuple(ON.tolist()) for o in (a, bad, b))
    with pytest.raises(RuntimeError, match="boom on close"):
        multi.close()
    assert a.closed and b.closed and bad.closed
    assert a.records[-1][2] == b.records[-1][2] == bad.records[-1][2] == (False,) * 8
    multi.close()  # idempotent, no second error
    assert not outputs_mod._OPEN


def test_multi_open_failure_closes_the_ones_already_open(fake_gpio, pi5_model):
    fake_gpio()
    mock = MockOutput(8)
    multi = MultiOutput([mock, RPiGPIOOutput(PINS, active_low=True, model_path=pi5_model)])
    with pytest.raises(OutputError, match="rpi-lgpio"):
        multi.open()
    assert mock.closed and mock.records[-1][2] == (False,) * 8
    assert not outputs_mod._OPEN


def test_multi_rejects_mismatched_channel_counts():
    with pytest.raises(OutputError, match="same channel count.*mock=8.*mock=16"):
        MultiOutput([MockOutput(8), MockOutput(16)])


def test_make_outputs_by_name(tmp_path, fake_gpio):
    cfg = Config.from_dict({"outputs": {"enabled": ["mock", "terminal"],
                                        "mock": {"record": str(tmp_path / "r.jsonl")}}})
    multi = make_outputs(["mock", "terminal", "rpigpio"], cfg)
    kinds = [type(o) for o in multi.outputs]
    assert kinds == [MockOutput, TerminalOutput, RPiGPIOOutput]
    assert multi.outputs[0].path == tmp_path / "r.jsonl"
    assert multi.outputs[2].pins == tuple(PINS) and multi.outputs[2].active_low
    with pytest.raises(OutputError, match="unknown output 'dmx'; expected one of"):
        make_outputs(["dmx"], cfg)


def test_base_class_is_tiny():
    public = {n for n in vars(Output) if not n.startswith("_")}
    assert {"open", "set", "all_off", "close"} <= public
