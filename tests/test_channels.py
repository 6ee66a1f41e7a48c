"""More than 8 channels and dimmers: the sacn/sacn_source/rpigpio config keys, channels split
over outputs (two boards, or a board and sACN), PWM levels on a fake RPi.GPIO, and the
mapper's dimmer levels."""
from __future__ import annotations


import numpy as np
import pytest

from pi.config.load import Config, ConfigError, check_config, sacn_addresses
from pi.show.features import frame_times, song_features
from pi.show.mapping import MIN_LEVEL, brightness
from pi.show.relay_rules import ChannelOverrides
from pi.app import make_outputs
from pi.outputs.base import ChannelSubset, MockOutput, OutputError
from pi.show.pipeline import BandsShow
from training.corpus.synth import synth_song

PINS16 = [17, 18, 27, 22, 23, 24, 25, 4, 5, 6, 13, 19, 26, 12, 16, 20]


# --- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("d, message", [
    ({"outputs": {"sacn": {"universe": 0}}}, r"outputs\.sacn\.universe: expected an integer "
                                             r"from 1 to 63999, found integer 0"),
    ({"outputs": {"sacn": {"destination": "239.255.0.1"}}},
     r'outputs\.sacn\.destination: expected "multicast" or an IPv4 address .*not a multicast'),
    ({"outputs": {"sacn": {"destination": "pi-garden.local"}}},
     r'outputs\.sacn\.destination: expected "multicast" or an IPv4 address .*found string '
     r'"pi-garden\.local"'),
    ({"outputs": {"sacn": {"fps": 60}}}, r"outputs\.sacn\.fps: expected an integer from 1 to "
                                         r"44 \(DMX512 refreshes at most 44 times a second\)"),
    ({"outputs": {"sacn": {"priority": 201}}}, r"outputs\.sacn\.priority: .*0 to 200"),
    ({"outputs": {"sacn": {"source_name": "x" * 64}}}, r"outputs\.sacn\.source_name: expected "
                                                       r"a name of 1 to 63 UTF-8 bytes"),
    ({"outputs": {"sacn": {"dimmer": "yes"}}}, r"outputs\.sacn\.dimmer: expected true or false"),
    ({"outputs": {"sacn": {"univers": 2}}}, r"outputs\.sacn\.univers: unknown key \(did you mean "
                                            r"outputs\.sacn\.universe\?\)"),
    ({"outputs": {"enabled": ["sacn"], "sacn": {"start_address": 510}}},
     r"outputs\.sacn\.start_address: channels from address 510 would end at 517; expected them "
     r"to end by DMX address 512"),
    ({"outputs": {"sacn": {"channels": [9]}}}, r"outputs\.sacn\.channels: channel 9 does not "
                                               r"exist"),
    ({"outputs": {"rpigpio": {"pwm_hz": 20}}}, r"outputs\.rpigpio\.pwm_hz: expected an integer "
                                               r"from 50 to 2000 Hz, or 0"),
    ({"outputs": {"rpigpio": {"channels": [1, 2]}}}, r"outputs\.rpigpio\.pins: expected one pin "
                                                     r"per channel \(outputs\.rpigpio\.channels "
                                                     r"lists 2\), found 8 pins"),
    ({"sacn_source": {"addresses": [1, 2]}}, r"sacn_source\.addresses: expected one DMX address "
                                             r"per channel \(show\.channels = 8\), found 2"),
    ({"sacn_source": {"addresses": [0] * 8}}, r"sacn_source\.addresses\[0\]: expected an integer "
                                              r"from 1 to 512 \(a DMX address\)"),
    ({"sacn_source": {"timeout_s": 0.1}}, r"sacn_source\.timeout_s: .*E1\.31 says 2\.5"),
    ({"sacn_source": {"interface": "eth0"}}, r"sacn_source\.interface: expected an IPv4 "
                                             r"address .*found string \"eth0\""),
])
def test_new_keys_are_checked_and_named(d, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(d)


def test_sixteen_channels_on_two_boards_or_board_plus_sacn(tmp_path):
    two_boards = Config.from_dict({"show": {"channels": 16},
                                   "outputs": {"rpigpio": {"pins": PINS16}}})
    assert len(two_boards.outputs.rpigpio.pins) == 16
    split = {"show": {"channels": 16}, "outputs": {
        "enabled": ["rpigpio", "sacn"], "rpigpio": {"channels": list(range(1, 9))},
        "sacn": {"channels": list(range(9, 17)), "universe": 2, "destination": "10.0.0.20"}}}
    cfg = Config.from_dict(split)
    assert cfg.outputs.sacn.channels == tuple(range(9, 17))
    receiver = Config.from_dict({"audio": {"source": "sacn", "playlist": []},
                                 "sacn_source": {"universe": 2, "addresses": [8, 7, 6, 5, 4,
                                                                              3, 2, 1]}})
    assert sacn_addresses(receiver) == (8, 7, 6, 5, 4, 3, 2, 1)
    assert sacn_addresses(Config()) == tuple(range(1, 9))
    path = tmp_path / "c.toml"
    path.write_text('[show]\nchannels = 16\n[outputs]\nenabled = ["rpigpio", "sacn"]\n'
                    '[outputs.rpigpio]\nchannels = [1, 2, 3, 4, 5, 6, 7, 8]\n'
                    '[outputs.sacn]\nchannels = [9, 10, 11, 12, 13, 14, 15, 16]\n'
                    'destination = "192.168.1.50"\nuniverse = 2\nstart_address = 101\n')
    text = check_config(path)
    assert "ch8=GPIO4" in text and "ch9=GPIO" not in text
    assert "sacn universe 2 unicast to 192.168.1.50" in text and "ch16=108" in text


# --- splitting channels over outputs ---------------------------------------------------------

def test_board_drives_channels_1_to_8_and_the_mock_sees_all_16(gpio, tmp_path):
    cfg = Config.from_dict({"show": {"channels": 16}, "outputs": {
        "enabled": ["rpigpio", "mock"], "rpigpio": {"channels": list(range(9, 17))},
        "mock": {"record": str(tmp_path / "r.jsonl")}}})
    out = make_outputs(cfg.outputs.enabled, cfg)
    with out:
        gpio.calls.clear()
        states = [False] * 8 + [True, False] * 4  # channels 9, 11, 13, 15 on
        out.set(states, t=0.0)
    outputs = [c for c in gpio.calls if c[0] == "output"]
    pins = cfg.outputs.rpigpio.pins
    assert outputs[:4] == [("output", pins[i], gpio.LOW) for i in (0, 2, 4, 6)]  # active low
    sets = [r for r in MockOutput.read(tmp_path / "r.jsonl") if r["event"] == "set"]
    assert [r["states"] for r in sets] == [states]


def test_channel_subset_checks_its_channels():
    with pytest.raises(OutputError, match=r"mock: expected 2 channel numbers from 1 to 4, "
                                          r"found \[4, 5\]"):
        ChannelSubset(MockOutput(2), [3, 4], 4)


def test_pwm_turns_levels_into_duty_cycles(gpio):
    from pi.outputs.gpio import RPiGPIOOutput

    out = RPiGPIOOutput([17, 18, 27], active_low=True, pwm_hz=200)
    with out:
        out.set([True, True, False], t=0.0, levels=[0.25, 1.0, 0.0])
        out.set([True, False, False], t=0.1)  # on/off only: full or nothing
    duties = [c[1:] for c in gpio.calls if c[0] == "duty"]
    # Active-low: the pin is low (relay on) for the level's share of each period.
    assert duties[3:6] == [(17, 75.0), (18, 0.0), (27, 100.0)]
    assert duties[6:9] == [(17, 0.0), (18, 100.0), (27, 100.0)]
    assert duties[-3:] == [(17, 100.0), (18, 100.0), (27, 100.0)]  # all off on close
    assert [c[0] for c in gpio.calls[-4:]] == ["stop", "stop", "stop", "cleanup"]


def test_mock_records_levels_and_rejects_bad_ones(tmp_path):
    rec = tmp_path / "r.jsonl"
    with MockOutput(2, rec) as out:
        out.set([True, False], t=0.0, levels=[0.61234, 0.0])
        with pytest.raises(OutputError, match=r"mock: expected 2 levels from 0 to 1"):
            out.set([True, False], t=0.1, levels=[1.5, 0.0])
    assert MockOutput.read(rec)[2]["levels"] == [0.6123, 0.0]


# --- dimmer levels from the mapper -----------------------------------------------------------

@pytest.fixture(scope="module")
def frames():
    y, _ = synth_song(seconds=12.0, seed=4, ending="fade")
    return song_features(y)


def test_levels_follow_states_hold_and_silence(frames):
    show = BandsShow(n_channels=8)
    states, _, levels = show.process(frames, frame_times(len(frames)))
    assert levels.shape == states.shape
    assert (levels[~states] == 0).all(), "off is dark"
    assert (levels[states] >= MIN_LEVEL).all() and (levels <= 1).all()
    assert len(np.unique(np.round(levels[states], 3))) > 5, "levels should be graded"
    # A level changes only when its channel's state does: same hold and silence rules.
    level_moves = np.diff(levels, axis=0) != 0
    state_moves = np.diff(states.astype(int), axis=0) != 0
    assert not (level_moves & ~state_moves).any()
    assert not levels[-20:].any(), "the fade-out ends dark"


def test_overridden_channels_are_full_or_dark(frames):
    show = BandsShow(n_channels=8, overrides=ChannelOverrides(invert=(0,), always_on=(1,),
                                                             always_off=(2,)))
    states, _, levels = show.process(frames, frame_times(len(frames)))
    assert (levels[:, 1] == 1).all() and (levels[:, 2] == 0).all()
    assert set(np.unique(levels[:, 0])) <= {0.0, 1.0} and (levels[:, 0] == states[:, 0]).all()


def test_brightness_is_logistic_and_floored():
    z = np.array([-50.0, -1.0, 0.0, 0.2, 3.0, 50.0])
    b = brightness(z)
    assert b[0] == MIN_LEVEL and b[2] == pytest.approx(0.5) and b[-1] == pytest.approx(1.0)
    assert (np.diff(b) >= 0).all()
