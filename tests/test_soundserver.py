"""A real sound server: the test starts its own PulseAudio with a null sink. One daemon plays
songs into it in playlist mode (through PortAudio -> ALSA's pulse plugin), a second one
listens to the sink's monitor in line-in mode, and both must light a plausible show. The
player's lamps must be the show `render` plans for each song, at the position being heard.
Clicks at known song times measure the line-in latency, from an onset reaching the sink (on
the player's DAC clock) to the listener's relay command.

This test must run wherever the suite runs (.ci/run installs pulseaudio); it fails, never
skips, when PulseAudio is missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from pi.app import show_from_config
from pi.config.load import load_config
from pi.offline.render import render_song
from pi.outputs.base import MockOutput
from pi.show.plans import PlanCache, default_cache_dir, plan_song, show_key
from training.corpus.synth import synth_song

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
SINK = "lightshow_test"
CLICKS_S = (0.6, 1.4, 2.2, 3.0, 3.8, 4.6)
SONG_S = 6.0


def _wait_for(predicate, *, timeout: float, what: str, proc=None) -> None:
    """Poll in short steps until predicate() is true; fail after timeout or if proc dies."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode} first:\n"
                        f"{_read(proc)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _read(proc) -> str:
    log = getattr(proc, "log_path", None)
    return Path(log).read_text() if log else ""


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    exe, pactl = shutil.which("pulseaudio"), shutil.which("pactl")
    if exe is None or pactl is None:
        pytest.fail("expected PulseAudio for the real-sound-server test, found "
                    f"{'no pulseaudio' if exe is None else 'no pactl'}; install the Debian "
                    "packages pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 "
                    "(.ci/run does)")
    d = tmp_path_factory.mktemp("pulse")
    for sub in ("run", "home", "state"):
        (d / sub).mkdir(mode=0o700)
    sock = d / "pulse.sock"
    # A private server: its own runtime dir, home and socket, so it neither finds nor
    # disturbs a desktop's PulseAudio, and the daemons below reach only this one.
    env = {**os.environ, "HOME": str(d / "home"), "XDG_RUNTIME_DIR": str(d / "run"),
           "PULSE_RUNTIME_PATH": str(d / "run" / "pulse"), "PULSE_STATE_PATH": str(d / "state"),
           "PULSE_SERVER": f"unix:{sock}", "PULSE_SINK": SINK,
           "PULSE_SOURCE": f"{SINK}.monitor", "PYTHONUNBUFFERED": "1"}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    log_path = d / "pulseaudio.log"
    # -n: no default.pa (no hardware, no X11, no dbus modules); --system=false and
    # --disallow-exit also when run as root, as in CI containers.
    cmd = [exe, "-n", "--daemonize=no", "--system=false", "--exit-idle-time=-1",
           "--disallow-exit", "--log-target=stderr",
           "-L", f"module-null-sink sink_name={SINK} rate={RATE}",
           "-L", f"module-native-protocol-unix auth-anonymous=1 socket={sock}"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path

    def up() -> bool:
        return subprocess.run([pactl, "info"], env=env, capture_output=True,
                              timeout=5).returncode == 0

    try:
        _wait_for(up, timeout=20, what="PulseAudio answering pactl", proc=proc)
        yield SimpleNamespace(env=env, dir=d, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _daemon(pulse, cfg: Path, log_path: Path) -> subprocess.Popen:
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pi", "run", "--config", str(cfg)],
                                cwd=ROOT, env=pulse.env, stdout=subprocess.DEVNULL,
                                stderr=log)
    proc.log_path = log_path
    return proc


def _config(path: Path, *, source: str, block_ms: int, record: Path,
            playlist: list[Path] = ()) -> Path:
    songs = ", ".join(f'"{p}"' for p in playlist) or '"unused"'
    path.write_text(f'[audio]\nsource = "{source}"\ndevice = "pulse"\nplaylist = [{songs}]\n'
                    f'repeat = false\nblock_ms = {block_ms}\n[model]\nmapper = "bands"\n'
                    f'[outputs]\nenabled = ["mock"]\n[outputs.mock]\nrecord = "{record}"\n')
    return path


def _sets(path: Path):
    """Times and states of a record's set events; complete lines only (it may be growing)."""
    text = path.read_text() if path.exists() else ""
    records = [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]
    sets = [r for r in records if r["event"] == "set"]
    return (np.array([r["mono"] for r in sets]),
            np.array([r["states"] for r in sets], bool).reshape(len(sets), 8))


def _changing_channels(states: np.ndarray) -> int:
    return int(((np.diff(states.astype(int), axis=0) != 0).sum(axis=0) > 0).sum())


def _songs(d: Path) -> tuple[Path, Path]:
    y, _ = synth_song(seconds=SONG_S, seed=21, ending="hard_stop")
    song = d / "song.wav"
    sf.write(song, y, RATE)
    clicks = np.zeros(round(5.2 * RATE), np.float32)
    rng = np.random.default_rng(0)
    for c in CLICKS_S:  # 40 ms noise bursts at -6 dBFS: sharp onsets after silence
        i = round(c * RATE)
        clicks[i:i + round(0.04 * RATE)] = rng.uniform(-0.5, 0.5, round(0.04 * RATE))
    sf.write(d / "clicks.wav", clicks, RATE)
    return song, d / "clicks.wav"


def test_playlist_into_pulseaudio_and_line_in_from_its_monitor(pulse, tmp_path, capsys):
    song, clicks = _songs(tmp_path)
    rec_in, rec_play = tmp_path / "line-in.jsonl", tmp_path / "playlist.jsonl"
    # Small blocks on both sides: the null sink then renders in 5 ms chunks, which bounds how
    # much earlier than its nominal DAC time the monitor can deliver a sample.
    listener = _daemon(pulse, _config(tmp_path / "in.toml", source="line-in", block_ms=10,
                                      record=rec_in), tmp_path / "line-in.log")
    player = None
    try:
        _wait_for(lambda: len(_sets(rec_in)[0]) >= 20, timeout=30,
                  what="line-in audio flowing", proc=listener)
        play_cfg = _config(tmp_path / "play.toml", source="playlist", block_ms=5,
                           record=rec_play, playlist=[song, clicks])
        # Both plans are cached before the player starts, as on a Pi that has played the
        # songs before, so which show plays does not hang on how fast this machine plans.
        show = show_from_config(load_config(play_cfg))
        pulse.env["XDG_CACHE_HOME"] = os.environ["XDG_CACHE_HOME"]  # this test's (conftest)
        cache = PlanCache(default_cache_dir(), show_digest=show_key(show))
        for path in (song, clicks):
            cache.store(path, plan_song(path, show))
        player = _daemon(pulse, play_cfg, tmp_path / "playlist.log")
        assert player.wait(timeout=60) == 0, _read(player)
        listener.send_signal(signal.SIGTERM)
        assert listener.wait(timeout=20) == 0, _read(listener)
    finally:
        for proc in (listener, player):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    play_log = _read(player)
    starts = {Path(m[1]).name: float(m[2]) for m in re.finditer(
        r"now playing (\S+) \(at the DAC from monotonic ([\d.]+) s\)", play_log)}
    assert set(starts) == {"song.wav", "clicks.wav"}, play_log
    assert starts["clicks.wav"] - starts["song.wav"] == pytest.approx(SONG_S, abs=0.05)

    # Both shows are plausible and non-silent while the song plays.
    for name, rec in (("playlist", rec_play), ("line-in", rec_in)):
        mono, states = _sets(rec)
        during = (mono >= starts["song.wav"]) & (mono <= starts["song.wav"] + SONG_S)
        assert states[during].any(), f"{name}: no lamp lit while the song played"
        assert _changing_channels(states[during]) >= 4, f"{name}: a dull show"
        assert 0.05 < states[during].mean() < 0.95, name
    for rec in (rec_play, rec_in):
        records = MockOutput.read(rec)
        assert records[-2]["event"] == "all_off" and records[-1]["event"] == "close"

    # Playlist mode plays the show `render` makes of each song (planned ahead), each row when
    # its sound reaches the DAC: the recorded lamps agree with the rendered plan at the played
    # position wherever the plan holds still for a frame either side (a frame of jitter).
    mono, states = _sets(rec_play)
    for name in ("song.wav", "clicks.wav"):
        assert f"{name}: playing its look-ahead show" in play_log, play_log
        plan = render_song(tmp_path / name, show, lookahead=True)
        t = mono - starts[name]
        row = np.searchsorted(plan.times_s, t, side="right") - 1
        inside = (row >= 1) & (row < len(plan.times_s) - 1)
        r = row[inside]
        steady = ((plan.states[r - 1] == plan.states[r]) & (plan.states[r + 1] == plan.states[r])
                  ).all(axis=1)
        agree = (states[inside][steady] == plan.states[r][steady]).all(axis=1)
        assert steady.sum() > 50 and agree.mean() > 0.95, (name, steady.sum(), agree.mean())

    # Latency: each click's onset, on the player's DAC clock, to the listener's relay command.
    line_in = []
    mono, states = _sets(rec_in)
    lit = states.any(axis=1)
    for c in CLICKS_S:
        onset = starts["clicks.wav"] + c
        before = mono < onset - 0.005
        assert not lit[before][-1], f"line-in: lamps still on before the click at {c} s"
        first = np.flatnonzero(~before & lit)[0]
        line_in.append(1000 * (mono[first] - onset))
    line_in = np.array(line_in)
    with capsys.disabled():
        print(f"\nline-in latency through PulseAudio, onset at the sink -> relay command: "
              f"median {np.median(line_in):.1f} ms, range {line_in.min():.1f}.."
              f"{line_in.max():.1f} ms over {len(line_in)} clicks")
    # Each click lights the line-in lamps after it sounded and before the next click: the
    # show follows the sound through the real server. How fast (ITU-R BT.1359's 45 ms) is a
    # figure for `make bench` and the note, not an assert a busy machine could break.
    gap_ms = 1000 * min(np.diff(CLICKS_S))
    assert ((line_in > 0) & (line_in < gap_ms)).all(), line_in
