"""Relay wear: the strict per-channel switch limit after the show logic (pi/show/relay_rules.py),
the relay kinds and their defaults, and the persistent switch counter (pi/outputs/wear.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pi.config.load import Config, ConfigError, check_config, relay_limits
from pi.show.features import SAMPLE_RATE
from pi.offline.render import render_blocks
from pi.show.pipeline import make_show
from pi.show.relay_rules import ToggleGuard
from pi.outputs.wear import SwitchCounter, read_counts

WINDOW = 1.0


def _switch_times(states: np.ndarray, times: np.ndarray) -> list[np.ndarray]:
    """Per channel, the times at which the state changed (from all-off at the start)."""
    s = np.vstack([np.zeros((1, states.shape[1]), bool), states])
    return [times[np.flatnonzero(s[1:, c] != s[:-1, c])] for c in range(states.shape[1])]


def _max_in_any_window(t: np.ndarray, window: float = WINDOW) -> int:
    """The most switchings in any half-open window (x - window, x]."""
    if not len(t):
        return 0
    return int(max(np.sum((t > x - window) & (t <= x)) for x in t))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.floats(0.0, 0.3),
       st.lists(st.tuples(st.floats(0.001, 0.4), st.lists(st.booleans(), min_size=3,
                                                            max_size=3)),
                min_size=1, max_size=120))
def test_guard_is_strict_for_any_input_and_never_loses_the_final_state(max_per_s, hold_s,
                                                                       steps):
    dt = np.array([d for d, _ in steps])
    times = np.cumsum(dt)
    wanted = np.array([s for _, s in steps], bool)
    # After the input, hold its last state for long enough that any wait is over.
    tail = times[-1] + np.arange(1, 40) * 0.05
    times = np.concatenate([times, tail])
    wanted = np.vstack([wanted, np.repeat(wanted[-1:], len(tail), axis=0)])
    guard = ToggleGuard(3, max_per_s=max_per_s, hold_s=hold_s)
    out = np.vstack([guard.apply(wanted[i:i + 7], times[i:i + 7])[0]
                     for i in range(0, len(times), 7)])  # in blocks, as the daemon calls it
    for c, t in enumerate(_switch_times(out, times)):
        assert _max_in_any_window(t) <= max_per_s, (c, t)
        assert np.all(np.diff(t) >= hold_s - 1e-9)
    prev = np.vstack([np.zeros((1, 3), bool), out[:-1]])
    assert np.all((out == prev) | (out == wanted))  # it only ever follows the show, late
    assert np.array_equal(out[-1], wanted[-1])  # deferred, never dropped


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.floats(0.0, 0.3),
       st.lists(st.tuples(st.floats(0.001, 0.2), st.lists(st.booleans(), min_size=3,
                                                            max_size=3),
                          st.lists(st.floats(0.2, 1.0), min_size=3, max_size=3)),
                min_size=1, max_size=150))
def test_guard_gives_the_same_states_and_levels_in_blocks_of_any_size(max_per_s, hold_s,
                                                                      steps):
    # A row at a time is the plain rule; larger blocks take the levels of runs of settled
    # rows at once (the planned show passes a whole song through in blocks of 1024 rows).
    times = np.cumsum([d for d, _, _ in steps])
    wanted = np.array([s for _, s, _ in steps], bool)
    levels = np.where(wanted, [lv for _, _, lv in steps], 0.0)
    outs = []
    for block in (1, 5, len(times)):
        guard = ToggleGuard(3, max_per_s=max_per_s, hold_s=hold_s)
        parts = [guard.apply(wanted[i:i + block], times[i:i + block], levels[i:i + block])
                 for i in range(0, len(times), block)]
        outs.append((np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts]),
                     guard._on_level))
    for states, lv, on_level in outs[1:]:
        np.testing.assert_array_equal(states, outs[0][0])
        np.testing.assert_array_equal(lv, outs[0][1])
        assert on_level == outs[0][2]


def test_dimmer_levels_follow_the_guarded_states():
    guard = ToggleGuard(1, max_per_s=1)
    wanted = np.array([[True], [False], [True], [False]])
    levels = np.array([[0.7], [0.0], [0.9], [0.0]])
    out, levels = guard.apply(wanted, np.array([0.0, 0.1, 0.2, 1.5]), levels)
    assert out[:, 0].tolist() == [True, True, True, False]  # the off waits out the second
    assert levels[:, 0].tolist() == [0.7, 0.7, 0.9, 0.0]


def test_steady_440_hz_tone_keeps_every_channel_at_3_per_second():
    """Issue 13 item 6: on this tone one channel toggled 7.45 times a second."""
    t = np.arange(30 * SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for mapper in ("model", "bands"):
        tl = render_blocks([tone[i:i + 4096] for i in range(0, len(tone), 4096)],
                           make_show(mapper=mapper))
        for c, sw in enumerate(_switch_times(tl.states, tl.times_s)):
            assert _max_in_any_window(sw) <= 3, (mapper, c, len(sw) / 30)


def test_relay_kinds_set_the_defaults_and_forbid_pwm_on_mechanical_relays():
    assert relay_limits(Config()) == (3, 100_000)
    ssr = Config.from_dict({"outputs": {"rpigpio": {"relay": "ssr", "pwm_hz": 200}}})
    assert relay_limits(ssr) == (20, 0)
    own = Config.from_dict({"outputs": {"rpigpio": {"max_toggles_per_s": 2,
                                                    "rated_switchings": 50_000}}})
    assert relay_limits(own) == (2, 50_000)
    with pytest.raises(ConfigError, match='pwm_hz = 200: software PWM would chatter '
                                          'mechanical relays to death; expected relay = "ssr"'):
        Config.from_dict({"outputs": {"rpigpio": {"pwm_hz": 200}}})
    with pytest.raises(ConfigError, match=r'outputs\.rpigpio\.relay: expected one of '
                                          r'"mechanical", "ssr", found string "reed"'):
        Config.from_dict({"outputs": {"rpigpio": {"relay": "reed"}}})
    with pytest.raises(ConfigError, match=r'max_toggles_per_s: expected "auto" or an integer '
                                          r'from 1 to 50'):
        Config.from_dict({"outputs": {"rpigpio": {"max_toggles_per_s": "fast"}}})


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_counter_persists_flushes_each_minute_and_warns_at_80_percent(tmp_path, caplog):
    path, clock = tmp_path / "counts.json", Clock()
    c = SwitchCounter(path, ["GPIO17", "GPIO18"], rated=10, clock=clock)
    for _ in range(3):
        c.count([False, False], [True, False])
        c.count([True, False], [False, False])
    assert not path.exists()  # not yet a minute
    clock.t = 61.0
    with caplog.at_level(logging.WARNING):
        c.count([False, False], [True, True])  # GPIO17's 7th, then the minute's flush
        c.count([True, True], [False, True])  # its 8th: 80% of 10
    assert read_counts(path) == {"GPIO17": 7, "GPIO18": 1}  # as of the flush, not later
    assert "relay on GPIO17 has switched 8 times, 80% of its rated 10" in caplog.text
    c.flush()  # at exit
    assert read_counts(path) == {"GPIO17": 8, "GPIO18": 1}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary file left
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = SwitchCounter(path, ["GPIO17", "GPIO18"], rated=10, clock=clock)
    assert again.counts == {"GPIO17": 8, "GPIO18": 1}  # across a restart
    assert "GPIO17 has switched 8 times" in caplog.text  # and warned at start


def test_a_damaged_count_file_is_kept_and_counting_goes_on(tmp_path, caplog):
    path = tmp_path / "counts.json"
    path.write_text('{"format": 1, "switchings": {"GPIO17": -5}}')
    with caplog.at_level(logging.ERROR):
        c = SwitchCounter(path, ["GPIO17"])
    assert c.counts == {"GPIO17": 0}
    assert (tmp_path / "counts.json.damaged").exists()
    assert "expected {\"GPIO17\": count, ...}" in caplog.text


def test_the_daemon_counts_each_pin_change_and_check_config_shows_it(gpio, tmp_path):
    from pi.daemon.loop import run
    from training.corpus.synth import synth_song

    import soundfile as sf

    y, _ = synth_song(seconds=6.0, seed=4, ending="hard_stop")
    sf.write(tmp_path / "song.wav", y, SAMPLE_RATE)
    counts = tmp_path / "state" / "counts.json"
    toml = tmp_path / "config.toml"
    toml.write_text(f'[audio]\nsource = "file"\nplaylist = ["{tmp_path / "song.wav"}"]\n'
                    f'[model]\nmapper = "bands"\n'
                    f'[outputs.rpigpio]\nswitch_counts = "{counts}"\nrated_switchings = 1000\n')
    from pi.config.load import load_config

    for _ in range(2):  # a restart adds to the counts
        assert run(load_config(toml)) == 0
    changes: dict[int, int] = {}
    level: dict[int, int] = {}
    for call in gpio.calls:
        if call[0] == "setup":
            level[call[1]] = call[-1]  # the initial level
        elif call[0] == "output" and call[2] != level[call[1]]:
            level[call[1]] = call[2]
            changes[call[1]] = changes.get(call[1], 0) + 1
    got = read_counts(counts)
    assert got == {f"GPIO{p}": changes.get(p, 0) for p in Config().outputs.rpigpio.pins}
    assert sum(got.values()) > 10
    text = check_config(toml)
    assert "relays:  mechanical, at most 3 switchings per second per channel, rated 1000" in text
    n1 = got["GPIO17"]
    assert f"ch1 (GPIO17): {n1}, {100 * n1 / 1000:.1f}% of its life" in text


def test_a_flickering_sacn_sender_cannot_wear_out_a_following_relay():
    from pi.net import e131
    from pi.audio.sacn_receiver import ON_LEVEL, SACNSource

    clock = Clock()
    src = SACNSource(universe=1, addresses=[1], port=0, multicast=False, hold_s=0.05,
                     max_toggles_per_s=3, clock=clock)
    shown, cid = [], b"F" * 16
    for i in range(200):  # 20 switchings a second for 10 s
        clock.t = i * 0.05
        src.take(e131.build(cid=cid, universe=1, slots=bytes([255 * (i % 2)]),
                            sequence=i), clock.t)
        out = src._update(clock.t)
        if out is not None:
            shown.append((clock.t, bool(out[0] >= ON_LEVEL)))
    states = [False] + [on for _, on in shown]
    times = np.array([t for (t, _), a, b in zip(shown, states, states[1:]) if a != b])
    assert _max_in_any_window(times) <= 3
    assert len(times) >= 25  # it still follows, at the limit


def test_ctl_status_shows_each_relays_count_and_life_used(gpio, tmp_path, capsys, caplog):
    """The running daemon's status (control socket): counts as they grow, the share of the
    rated life, and the 80% mark, on a board that drives channels 9..16 of 16."""
    import threading

    import soundfile as sf

    from pi.cli import main as cli
    from pi.config.load import load_config
    from pi.daemon.control_socket import request
    from pi.daemon.loop import Daemon
    from pi.outputs.wear import write_counts
    from tests.test_control import until
    from training.corpus.synth import synth_song

    y, _ = synth_song(seconds=20.0, seed=4, ending="hard_stop")
    sf.write(tmp_path / "song.wav", y, SAMPLE_RATE)
    counts, sock = tmp_path / "state" / "counts.json", tmp_path / "control.sock"
    pins = Config().outputs.rpigpio.pins
    write_counts(counts, {"GPIO17": 850, "GPIO4": 10})
    toml = tmp_path / "config.toml"
    toml.write_text(f'[audio]\nsource = "file"\nplaylist = ["{tmp_path / "song.wav"}"]\n'
                    f'[model]\nmapper = "bands"\n[show]\nchannels = 16\n'
                    f'[outputs]\nenabled = ["rpigpio"]\n'
                    f'[outputs.rpigpio]\nswitch_counts = "{counts}"\nrated_switchings = 1000\n'
                    f'channels = [9, 10, 11, 12, 13, 14, 15, 16]\n'
                    f'[control]\nsocket = "{sock}"\n')
    with caplog.at_level(logging.WARNING):
        d = Daemon(load_config(toml), realtime=True)
    assert "relay on GPIO17 has switched 850 times, 85% of its rated 1000" in caplog.text
    th = threading.Thread(target=d.run, daemon=True)
    th.start()
    try:
        wear = until(lambda: sock.exists() and (w := request(sock, "status")["status"].get("wear"))
                     and sum(r["switchings"] for r in w) > 870 and w, "relays switching")
        assert [(r["channel"], r["relay"]) for r in wear] == [
            (9 + i, f"GPIO{p}") for i, p in enumerate(pins)]
        ch9 = wear[0]
        assert ch9["switchings"] >= 850 and ch9["rated"] == 1000 and ch9["replace_soon"]
        assert ch9["life_used"] == pytest.approx(ch9["switchings"] / 1000, abs=1e-4)
        assert not wear[7]["replace_soon"]  # GPIO4: far from its rating
        assert cli.main(["ctl", "status", "--socket", str(sock)]) == 0
    finally:
        d.stop.set()
        th.join(30)
    out = capsys.readouterr().out
    assert "wear:    switchings per relay, rated 1000" in out
    line = next(x for x in out.splitlines() if "ch9 (GPIO17)" in x)
    n = int(line.split(": ")[1].split(",")[0])
    assert n >= 850 and f"{n / 10:.1f}% of its life  <- replace soon" in line
    assert read_counts(counts)["GPIO17"] >= n  # flushed at exit
