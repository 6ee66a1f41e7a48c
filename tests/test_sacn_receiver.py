"""sACN end to end on loopback: a receiver daemon follows sender daemons (the README's
configs), goes off when the sender stops or falls silent, takes the higher priority, and
carries 16 dimmer channels from a 16-channel model. The harness is tests/sacn_daemons.py.

The receiver goes off because the sender terminated its stream, or because of the data-loss
timeout, as its log says. The receiver's timers themselves are tested on a fake clock in
tests/test_e131.py, so a loaded machine (training on both cores) cannot fail these tests."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from pi.net import e131
from pi.outputs.base import MockOutput
from tests.sacn_daemons import (PY, ROOT, SSR, U, WAIT_S, Daemon, assert_follows, changes,
                                free_port, lag_figures, last_set, readme_configs,
                                readme_sender, records, run_readme_sender, rx_config, song,
                                start_rx, tx_config, wait_for, write_config)
from training.corpus.synth import synth_song

import sacn  # noqa: E402,F401 - the extra is installed in CI: missing is a failure, not a skip


@pytest.fixture
def daemons():
    started = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=10)


def test_readme_configs_are_valid_and_the_tests_use_them(tmp_path):
    from pi.config.load import load_config

    sender, receiver = readme_configs()
    for text in (sender, receiver):
        load_config(write_config(tmp_path / "c.toml", text))
    tx = load_config(readme_sender(tmp_path, 5569)).outputs.sacn
    assert (tx.universe, tx.destination, tx.port) == (U, "127.0.0.1", 5569)
    rx = load_config(rx_config(tmp_path, 5569))
    assert rx.audio.source == "sacn" and rx.sacn_source.universe == U
    assert (rx.sacn_source.interface, rx.sacn_source.multicast) == ("127.0.0.1", False)


def test_receiver_follows_the_sender_and_goes_off_when_it_stops(tmp_path, daemons):
    port = free_port()
    rx = start_rx(tmp_path, port)
    daemons.append(rx)
    good = e131.build(cid=bytes(16), universe=U, slots=bytes([255]))
    junk = [good[:60], good[:18] + b"\0\0\0\x05" + good[22:],
            e131.build(cid=bytes(16), universe=U + 1), b"\xff garbage " * 9]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for raw in junk:
            s.sendto(raw, ("127.0.0.1", port))
    # 10 s, most of it played: the look-ahead show's channel accents keep the whole 8-channel
    # state for 0.3 s only a few times in a synthetic song's first 5 s; assert_follows needs
    # at least 5 such states, and most of them taken.
    tx = run_readme_sender(tmp_path, port, 10.0)
    daemons.append(tx)
    # The README's sender repeats its playlist, as the service does: stop it as systemd would.
    wait_for("the song played", lambda: any((r["t"] or 0) > 9.0 for r in records(tx.record)),
             WAIT_S, tx.proc)
    assert tx.stop() == 0, tx.stderr
    tx_recs = MockOutput.read(tmp_path / "tx.jsonl")
    closed = last_set(tx_recs)
    off = wait_for("receiver all-off after the sender stopped",
                   lambda: [r for r in records(rx.record)
                            if r["event"] == "all_off" and r["mono"] > closed], WAIT_S, rx.proc)
    assert rx.stop() == 0
    # Off because the stream was terminated, not after the 2.5 s data-loss timeout.
    assert "stopped its stream (stream terminated)" in rx.stderr
    assert "no packet from" not in rx.stderr
    print(f"\nall-off {(off[0]['mono'] - closed) * 1e3:.0f} ms after the sender's last state")
    # Malformed and foreign packets: counted, logged, never fatal.
    assert "sACN packets ignored in total: 1 truncated, 1 bad_vector, 1 other_universe, " \
           "1 not_e131" in rx.stderr
    lags = assert_follows(changes(tx_recs), changes(records(rx.record)), until=closed)
    print(f"sender -> receiver lag over loopback: {lag_figures(lags)}")


def test_receiver_is_all_off_after_the_timeout_when_the_sender_is_killed(tmp_path, daemons):
    port = free_port()
    rx = start_rx(tmp_path, port)
    daemons.append(rx)
    tx = run_readme_sender(tmp_path, port, 20.0)
    daemons.append(tx)
    wait_for("lamps lit on the receiver", lambda: sum(
        r["event"] == "set" and any(r["states"]) for r in records(rx.record)) >= 3, WAIT_S,
        rx.proc)
    tx.stop(signal.SIGKILL)  # no blackout, no stream-terminated: only the timeout helps
    killed = time.monotonic()
    off = wait_for("receiver all-off", lambda: [r for r in records(rx.record)
                                                if r["event"] == "all_off"
                                                and r["mono"] > killed], WAIT_S, rx.proc)
    assert rx.stop() == 0
    after_kill = off[0]["mono"] - killed
    # The cause: the data-loss timeout (the receiver measures the silence itself; its
    # timer's exactness is tested on a fake clock in tests/test_e131.py).
    silent = float(re.search(r"no packet from 'audio-pi' for (\d+\.\d+) s",
                             rx.stderr).group(1))
    print(f"\nall-off {after_kill:.3f} s after SIGKILL, {silent:.2f} s after the last packet")
    assert silent >= 2.5 and "stopped its stream" not in rx.stderr
    assert not any(any(r["states"] or ()) for r in records(rx.record)
                   if r["mono"] > off[0]["mono"])


def test_the_higher_priority_sender_wins(tmp_path, daemons):
    port = free_port()
    rx = start_rx(tmp_path, port)
    daemons.append(rx)
    everything = "always_on = [1, 2, 3, 4, 5, 6, 7, 8]"
    lo = Daemon(tmp_path, "lo", tx_config(tmp_path, "lo", port, song(tmp_path, 30.0, 5),
                                          priority=100, extra=everything),
                "--realtime", ready=False)
    daemons.append(lo)
    all_on = [True] * 8
    wait_for("the low-priority sender followed", lambda: any(
        r["states"] == all_on for r in records(rx.record)), WAIT_S, rx.proc)
    hi = subprocess.run([PY, "-m", "pi", "run", "--config",
                         str(tx_config(tmp_path, "hi", port, song(tmp_path, 10.0), priority=150)),
                         "--realtime"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert hi.returncode == 0, hi.stderr
    hi_recs = MockOutput.read(tmp_path / "hi.jsonl")
    closed = last_set(hi_recs)
    wait_for("hi's stream terminated", lambda: "'hi' stopped its stream" in rx.stderr, WAIT_S,
             rx.proc)
    wait_for("back to the low-priority sender", lambda: changes(records(rx.record))[-1]
             ["value"] == all_on, WAIT_S, rx.proc)
    rx_ch = changes(records(rx.record))
    lags = assert_follows(changes(hi_recs), rx_ch, until=closed)
    print(f"\nhigh-priority sender -> receiver lag: {lag_figures(lags)}")
    assert lo.stop() == 0  # SIGTERM: the low sender terminates its stream too
    wait_for("receiver off after the last sender", lambda: records(rx.record)[-1]["event"]
             == "all_off", WAIT_S, rx.proc)
    assert rx.stop() == 0
    assert "'lo' stopped its stream" in rx.stderr and "no packet from" not in rx.stderr


# --- 16 channels from the workshop to the relays ---------------------------------------------

@pytest.fixture(scope="module")
def model16(tmp_path_factory):
    """A 16-channel bundle from the real `make train` pipeline (--bottleneck 16), kept tiny."""
    tmp = tmp_path_factory.mktemp("m16")
    music = tmp / "music"
    music.mkdir()
    for i, ending in enumerate(("fade", "hard_stop", "quiet_tail")):
        y, _ = synth_song(seconds=15.0, seed=20 + i, ending=ending)
        sf.write(music / f"s{i}.wav", y, 44100)
    out = subprocess.run([PY, "-m", "training", "train", "--music-dir", str(music),
                          "--bottleneck", "16", "--epochs", "1", "--max-frames", "1000",
                          "--no-ablations", "--models-dir", str(tmp), "--cache-dir",
                          str(tmp / "cache"), "--name", "m16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "m16"


def test_sixteen_channel_model_drives_sixteen_dimmer_channels(tmp_path, daemons, model16):
    port = free_port()
    rx = start_rx(tmp_path, port, channels=16, tables=SSR)
    daemons.append(rx)
    cfg = tx_config(tmp_path, "tx", port, song(tmp_path, 6.0, 21), channels=16, dimmer=True,
                    extra=SSR)
    cfg.write_text(cfg.read_text().replace('mapper = "bands"', f'path = "{model16}"'))
    tx = subprocess.run([PY, "-m", "pi", "run", "--config", str(cfg), "--realtime"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert tx.returncode == 0, tx.stderr
    assert "show model:m16, 16 channels" in tx.stderr
    tx_recs = MockOutput.read(tmp_path / "tx.jsonl")
    closed = last_set(tx_recs)
    wait_for("receiver off", lambda: [r for r in records(rx.record)
                                      if r["event"] == "all_off" and r["mono"] > closed],
             WAIT_S, rx.proc)
    assert rx.stop() == 0
    levels = np.array([r["levels"] for r in tx_recs if r["event"] == "set"])
    assert levels.shape[1] == 16
    assert ((levels > 0) & (levels < 1)).any(), "dimmer levels should be graded"
    assert (np.diff(levels[:, 8:], axis=0) != 0).any(), "channels 9..16 never changed"

    def same_dmx(x, y):  # the records round levels to 4 decimals: allow one DMX step
        return abs(x - y) * 255 <= 1.01

    assert_follows(changes(tx_recs, "levels"), changes(records(rx.record), "levels"),
                   until=closed, same=same_dmx, held_s=0.1)  # levels change often
