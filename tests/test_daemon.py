"""The whole pipeline on synthetic audio through mock outputs: the show, render's CSV, bad
config, bundle and audio files, SIGTERM, and what `pi` imports."""
from __future__ import annotations

import csv
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pi.cli import main as cli
from pi.show.features import frame_times, n_frames_for
from pi.outputs.base import MockOutput
from tests.helpers import modules_after
from training.corpus.synth import synth_song

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
SECONDS = 8.0


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    d = tmp_path_factory.mktemp("songs")
    y, _ = synth_song(seconds=SECONDS, seed=11, ending="hard_stop")
    sf.write(d / "song.wav", y, RATE)
    y, _ = synth_song(seconds=20.0, seed=12, ending="fade")
    sf.write(d / "long.flac", y, RATE)
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage")
    return d


def _run(*args: str) -> int:
    return cli.main(["run", "--source", "file", "--output", "mock", *args])


def _sets(path) -> list[dict]:
    return [r for r in MockOutput.read(path) if r["event"] == "set"]


def _assert_plausible_show(states: np.ndarray) -> None:
    changes = (np.diff(states.astype(int), axis=0) != 0).sum(axis=0)
    assert (changes > 0).sum() >= 4, f"channels that change: {changes}"
    assert 0.05 < states.mean() < 0.95


def test_file_pipeline_gives_a_plausible_show(songs, tmp_path):
    rec = tmp_path / "rec.jsonl"
    assert _run("--mapper", "bands", "--record", str(rec), str(songs / "song.wav")) == 0
    records = MockOutput.read(rec)
    assert [r["event"] for r in records[:2]] == ["open", "all_off"]  # all off first
    assert [r["event"] for r in records[-2:]] == ["all_off", "close"]  # and last
    assert not any(records[1]["states"]) and not any(records[-2]["states"])
    sets = [r for r in records if r["event"] == "set"]
    n = n_frames_for(round(SECONDS * RATE))
    assert len(sets) == n
    np.testing.assert_allclose([r["t"] for r in sets], frame_times(n))  # frame ends
    _assert_plausible_show(np.array([r["states"] for r in sets]))


def test_render_cli_writes_the_csv_and_matches_the_daemon(songs, tmp_path, capsys):
    out = tmp_path / "show.csv"
    assert cli.main(["render", str(songs / "song.wav"), "--csv", str(out),
                     "--mapper", "bands"]) == 0
    n = n_frames_for(round(SECONDS * RATE))
    assert f"wrote {n} frames" in capsys.readouterr().out
    rows = list(csv.reader(out.open()))
    assert rows[0] == (["time_s"] + [f"ch{i}" for i in range(1, 9)]
                       + [f"act{i}" for i in range(1, 9)])
    table = np.array(rows[1:], float)
    assert len(table) == n
    np.testing.assert_allclose(table[:, 0], frame_times(n), atol=1e-6)  # the frame ends
    assert table[0, 0] == pytest.approx(1024 / RATE, abs=1e-6)
    assert set(np.unique(table[:, 1:9])) <= {0.0, 1.0}
    # The daemon lights exactly what render writes: one pipeline, offline or live (from the
    # first frame when it waits for the song's plan: the appliance starts with the causal
    # show while the plan is made).
    rec = tmp_path / "rec.jsonl"
    assert _run("--mapper", "bands", "--plan-wait", "600", "--record", str(rec),
                str(songs / "song.wav")) == 0
    live = np.array([r["states"] for r in _sets(rec)], float)
    np.testing.assert_array_equal(live, table[:, 1:9])


@pytest.mark.parametrize("toml, key", [
    ("[show]\nhold_ms = 10\n", "show.hold_ms"),
    ('[audio]\nsorce = "file"\n', "audio.sorce"),
    ("[outputs]\nenabled = []\n", "outputs.enabled"),
])
def test_bad_config_exits_non_zero_naming_the_key(tmp_path, toml, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    for command in (["run"], ["check-config"]):
        p = subprocess.run([sys.executable, "-m", "pi", *command, "--config", str(cfg)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == cli.EXIT_CONFIG, p.stderr
        assert key in p.stderr and "expected" in p.stderr and str(cfg) in p.stderr
        assert "Traceback" not in p.stderr


def test_bad_option_value_is_checked_like_the_config(songs, caplog):
    assert _run(str(songs / "song.wav"), "") == cli.EXIT_CONFIG
    assert "audio.playlist[1]: expected a non-empty path string" in caplog.text


def test_bad_bundle_falls_back_to_bands_with_a_clear_log_line(songs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bundle = tmp_path / "broken-model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    (bundle / "encoder.npz").write_bytes(b"not a zip")
    rec = tmp_path / "rec.jsonl"
    assert _run("--model", str(bundle), "--record", str(rec), str(songs / "song.wav")) == 0
    line = next(r.getMessage() for r in caplog.records if "falling back" in r.getMessage())
    assert "falling back to the bands mapper" in line and str(bundle) in line
    assert "show bands" in caplog.text
    _assert_plausible_show(np.array([r["states"] for r in _sets(rec)]))


def test_corrupt_song_in_a_playlist_is_skipped_and_the_next_one_plays(songs, tmp_path,
                                                                      caplog):
    m3u = tmp_path / "party.m3u"
    m3u.write_text(f"#EXTM3U\n# the corrupt one first\n{songs / 'corrupt.wav'}\n"
                   f"{songs / 'song.wav'}\n")
    rec = tmp_path / "rec.jsonl"
    assert _run("--mapper", "bands", "--record", str(rec), str(m3u)) == 0
    assert "skipping a song that cannot be played" in caplog.text
    assert "corrupt.wav" in caplog.text
    assert len(_sets(rec)) == n_frames_for(round(SECONDS * RATE))

    assert _run("--record", str(rec), str(songs / "corrupt.wav")) == 1  # nothing playable
    assert "expected at least one playable song, found none" in caplog.text


def test_sigterm_switches_everything_off_and_exits_0(songs, tmp_path):
    rec = tmp_path / "rec.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pi", "run", "--source", "file", "--realtime",
         "--output", "mock", "--record", str(rec), "--mapper", "bands",
         str(songs / "long.flac")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the show is running with some lamps on
            sets = _sets(rec) if rec.exists() else []
            if len(sets) >= 20 and any(any(r["states"]) for r in sets):
                break
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no lamps lit within 30 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert rc == 0, stderr
    records = MockOutput.read(rec)
    assert records[-1]["event"] == "close"
    assert records[-2]["event"] == "all_off" and not any(records[-2]["states"])
    assert "lamps off" in stderr


def test_pi_imports_no_training_libraries(songs, tmp_path):
    modules = modules_after(
        "import pi.cli.main, pi.daemon.loop, pi.audio.sources, pi.audio.linein, pi.audio.playback\n"
        "import pi.audio.playlist\n"
        "import pi.show.pipeline, pi.offline.render, pi.offline.metrics, pi.outputs.gpio\n"
        "from pi.cli.main import main\n"
        f"assert main(['render', {str(songs / 'song.wav')!r}, '--csv', "
        f"{str(tmp_path / 'x.csv')!r}]) == 0\n")
    heavy = {"tensorflow", "keras", "sklearn", "scipy", "torch", "librosa", "training"}
    assert not [m for m in modules if m.split(".")[0] in heavy]
    assert "scipy.signal" not in modules
    assert "sounddevice" not in modules  # render works without PortAudio


def test_sd_notify_ready_status_watchdog_and_stopping(songs, tmp_path, monkeypatch):
    import socket

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "10000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert _run("--mapper", "bands", str(songs / "song.wav")) == 0
        sock.settimeout(0)
        got = []
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                break
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1"
    assert "WATCHDOG=1" in got and "STATUS=playing song.wav" in got


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "1e9"])
def test_plan_wait_out_of_range_is_refused_naming_what_was_expected(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--plan-wait", value, "song.wav"])
    assert exc.value.code == 2
    assert f"--plan-wait: expected 0 to 3600 seconds, found {value}" in capsys.readouterr().err
