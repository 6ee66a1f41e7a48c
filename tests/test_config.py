"""Config: defaults, the shipped documented file, strict keys and types, cross-key rules."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from pi.config.load import Config, ConfigError, check_config, load_config

SHIPPED = Path(__file__).resolve().parents[1] / "systemd" / "config.toml"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_defaults():
    cfg = load_config(None)
    assert cfg == Config() == Config.from_dict({})
    assert cfg.show.channels == 8 and cfg.show.hold_ms == 100
    assert cfg.outputs.enabled == ("rpigpio",)
    assert len(cfg.outputs.rpigpio.pins) == cfg.show.channels
    assert cfg.outputs.rpigpio.active_low is True


def test_shipped_config_equals_defaults_and_documents_every_key():
    assert load_config(SHIPPED) == Config()
    # Every key of the schema appears in the shipped file, so every key is documented there.
    data = tomllib.loads(SHIPPED.read_text())

    def keys(d, prefix=""):
        for k, v in d.items():
            yield from keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]

    assert set(keys(data)) == set(keys(Config().to_dict()))


def test_partial_file_keeps_other_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, '[show]\nhold_ms = 250\n[outputs.rpigpio]\n'
                                       'active_low = false\n'))
    assert cfg.show.hold_ms == 250 and cfg.outputs.rpigpio.active_low is False
    assert cfg.outputs.rpigpio.pins == Config().outputs.rpigpio.pins
    assert dataclasses.replace(cfg.show, hold_ms=100) == Config().show


@pytest.mark.parametrize("text,message", [
    ("[show]\nhodl_ms = 100\n", r"show\.hodl_ms: unknown key \(did you mean show\.hold_ms\?\)"),
    ("[sound]\nsource = 'line-in'\n", r"^.*config\.toml: sound: unknown key"),
    ("[outputs.rpigpio]\npin = [1]\n", r"outputs\.rpigpio\.pin: unknown key .*rpigpio\.pins"),
    ("[show]\nchannels = '8'\n", r"show\.channels: expected an integer from 1 to 16, "
                                 r"found string \"8\""),
    ("[show]\nchannels = true\n", r"show\.channels: .*found boolean true"),
    ("[show]\nhold_ms = 20\n", r"show\.hold_ms: expected an integer from 50 .*found integer 20"),
    ("[audio]\nsource = 'mic'\n", r'audio\.source: expected one of "line-in", "playlist", '
                                  r'"file", "sacn", found string "mic"'),
    ("[audio]\nplaylist = '/music'\n", r"audio\.playlist: expected a list"),
    ("[audio]\nshuffle = 'yes'\n", r"audio\.shuffle: expected true or false"),
    ("[audio]\ndevice = -1\n", r"audio\.device: expected a device name"),
    ("[show]\nlatency_ms = 'soon'\n", r'show\.latency_ms: expected "auto" or a number'),
    ("[show]\nlook_ahead = 'yes'\n", r"show\.look_ahead: expected true or false, found string"),
    ("[show]\ninvert = [0]\n", r"show\.invert\[0\]: expected an integer from 1"),
    ("[outputs]\nenabled = ['dmx']\n", r"outputs\.enabled\[0\]: expected one of \"rpigpio\""),
    ("[outputs]\nenabled = []\n", r"outputs\.enabled: expected at least one"),
    ("[outputs.rpigpio]\npins = [17, 18, 17, 22, 23, 24, 25, 4]\n",
     r"outputs\.rpigpio\.pins\[2\]: GPIO 17 is listed twice"),
    ("[outputs.rpigpio]\npins = [17, 18, 27, 22, 23, 24, 25, 40]\n",
     r"outputs\.rpigpio\.pins\[7\]: expected a BCM GPIO number from 0 to 27, found integer 40"),
    ("show = 3\n", r"show: expected a table, found integer 3"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize("d,message", [
    ({"show": {"channels": 4}}, r"outputs\.rpigpio\.pins: expected one pin per channel "
                                r"\(show\.channels = 4\), found 8 pins"),
    ({"show": {"invert": [9]}}, r"show\.invert: channel 9 does not exist"),
    ({"show": {"always_on": [2, 3], "always_off": [3]}},
     r"show\.always_on and show\.always_off: channel 3 is in both"),
    ({"show": {"always_on": [2, 2]}}, r"show\.always_on: expected each entry once, found 2 twice"),
    ({"audio": {"playlist": []}}, r"audio\.playlist: expected at least one file"),
])
def test_cross_key_checks(d, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(d)


def test_cross_key_checks_allow_valid_combinations():
    # Pins only matter when the GPIO output is used; line-in needs no playlist.
    cfg = Config.from_dict({"show": {"channels": 4, "invert": [4], "always_on": [1]},
                            "outputs": {"enabled": ["terminal", "mock"]},
                            "audio": {"source": "line-in", "playlist": [], "device": 2}})
    assert cfg.show.channels == 4 and cfg.audio.device == 2
    cfg16 = Config.from_dict({"show": {"channels": 16},
                              "outputs": {"rpigpio": {"pins": list(range(2, 18))}}})
    assert len(cfg16.outputs.rpigpio.pins) == 16


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: expected a TOML config file, found "
                                          r"nothing"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"config\.toml: expected valid TOML, found a syntax"):
        load_config(_write(tmp_path, "[show\n"))


def test_check_config_summary(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    p = _write(tmp_path, f'[audio]\nplaylist = ["{music}", "{tmp_path / "gone"}"]\n'
                         '[show]\nalways_on = [8]\n')
    text = check_config(p)
    assert text.splitlines()[0] == f"{p}: OK"
    assert "8 channels" in text and "ch1=GPIO17" in text and "always_on: channels 8" in text
    assert f"warning: audio.playlist: {tmp_path / 'gone'} does not exist" in text
    assert str(music) + " does not exist" not in text
    assert "(built-in defaults): OK" in check_config(None)
    with pytest.raises(ConfigError):
        check_config(_write(tmp_path, "[show]\nhold_ms = 1\n"))


def test_expected_errors_share_one_base_that_the_cli_reports_in_one_line(monkeypatch, caplog):
    import logging

    from pi.cli import main as cli
    from pi.show.bundle import BundleError
    from pi.daemon.control_socket import ControlError
    from pi.audio.decode import AudioFileError
    from pi.errors import LightshowError
    from pi.outputs.base import OutputError
    from pi.audio.sources import DeviceError, PlaylistError

    for cls in (ConfigError, BundleError, AudioFileError, DeviceError, PlaylistError,
                OutputError, ControlError):
        assert issubclass(cls, LightshowError), cls

    def fails(exc):
        def command(args):
            raise exc
        return command

    monkeypatch.setattr(cli, "cmd_devices", fails(BundleError("m: expected a bundle, found none")))
    with caplog.at_level(logging.ERROR):
        assert cli.main(["devices"]) == 1
    assert "m: expected a bundle, found none" in caplog.text
    monkeypatch.setattr(cli, "cmd_devices", fails(ZeroDivisionError("a bug")))
    with pytest.raises(ZeroDivisionError):  # a bug is not an expected error: a traceback
        cli.main(["devices"])
