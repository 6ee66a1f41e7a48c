"""Playlists, the file source's pacing, and the sound-card sources against a fake sounddevice:
DAC-time scheduling, a device that is missing or lost, line-in resampling and overflows."""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from fake_sounddevice import CLOCK_OFFSET, FakeSoundDevice, VirtualClock, use_virtual_time
from pi.config.load import Config
from pi.daemon.loop import Daemon
from pi.audio.decode import read_song
from pi.show.features import n_frames_for
from pi.outputs.base import MockOutput
from pi.audio.playback import PlaybackSource
from pi.audio.playlist import Playlist, expand, read_m3u
from pi.audio.sources import END, Backoff, DeviceError, FileSource, PlaylistError, SongFeed
from training.corpus.synth import synth_song

RATE = 44100


def _music(*, seconds, seed, rate=RATE):
    """synth_song's drums and sections, cut to any length (it makes 4 s at least)."""
    y, _ = synth_song(seconds=max(4.0, seconds), seed=seed, ending="hard_stop",
                      sample_rate=rate)
    return y[:round(seconds * rate)]


def _song(path, *, seconds, seed, rate=RATE, stereo=False):
    y = _music(seconds=seconds, seed=seed, rate=rate)
    sf.write(path, np.stack([y, 0.5 * y], axis=1) if stereo else y, rate)
    return path


def _config(tmp_path, **sections) -> Config:
    d = {"model": {"mapper": "bands"},
         "outputs": {"enabled": ["mock"], "mock": {"record": str(tmp_path / "rec.jsonl")}}}
    for name, values in sections.items():
        d.setdefault(name, {}).update(values)
    return Config.from_dict(d)


def _sets(tmp_path):
    return [r for r in MockOutput.read(tmp_path / "rec.jsonl") if r["event"] == "set"]


def _changes(sets) -> np.ndarray:
    s = np.array([r["states"] for r in sets], int)
    return (np.diff(s, axis=0) != 0).sum(axis=0)


# --- playlists -------------------------------------------------------------------------------

def test_m3u_relative_paths_comments_nesting_and_missing_entries(tmp_path, caplog):
    music = tmp_path / "music"
    (music / "sub").mkdir(parents=True)
    for name in ("b.wav", "a.flac", "sub/c.mp3", "notes.txt"):
        (music / name).write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "inner.m3u8").write_text("../music/sub/c.mp3\n", encoding="utf-8")
    m3u = tmp_path / "lists" / "party.m3u"
    m3u.write_text("#EXTM3U\n#EXTINF:123,Artist - Song\n../music/b.wav\n\n  # a comment\n"
                   f"{music / 'a.flac'}\ninner.m3u8\nhttp://radio.example/stream\n"
                   "../music/gone.wav\n")
    assert read_m3u(m3u)[0] == tmp_path / "lists" / "../music/b.wav"
    songs = expand([m3u, music])
    assert [p.resolve() for p in songs] == [
        (music / "b.wav").resolve(), (music / "a.flac").resolve(),
        (music / "sub/c.mp3").resolve(),
        music / "a.flac", music / "b.wav", music / "sub/c.mp3"]  # a folder: sorted, no .txt
    assert "expected a local file, found a URL" in caplog.text
    assert "gone.wav" in caplog.text


def test_playlist_shuffles_every_round_and_repeats(tmp_path):
    for i in range(8):
        (tmp_path / f"{i}.wav").write_bytes(b"x")
    rounds = Playlist([tmp_path], shuffle=True, repeat=True, seed=3).passes()
    first, second = next(rounds), next(rounds)
    assert sorted(first) == sorted(second) == sorted(tmp_path.glob("*.wav"))
    assert first != second and first != sorted(first)
    assert len(list(Playlist([tmp_path]).passes())) == 1  # no repeat: one round


def test_song_feed_skips_bad_songs_and_gives_up_only_without_repeat(tmp_path, caplog):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\0\0\0\0WAVEnot really")
    good = _song(tmp_path / "good.wav", seconds=1, seed=1)
    feed = SongFeed(Playlist([bad, good]), sample_rate=RATE, block_frames=RATE)
    items = []
    while (item := feed.next()) is not END:
        items.append(item)
    assert {song for song, _ in items} == {good}
    assert sum(len(b) for _, b in items) == RATE
    assert "skipping a song that cannot be played: " in caplog.text and "bad.wav" in caplog.text

    with pytest.raises(PlaylistError, match="expected at least one playable song"):
        SongFeed(Playlist([bad]), sample_rate=RATE, block_frames=RATE).next()

    clock = [0.0]
    feed = SongFeed(Playlist([bad], repeat=True), sample_rate=RATE, block_frames=RATE,
                    retry=Backoff(2.0, 8.0), clock=lambda: clock[0])
    assert feed.next() is None  # waits 2 s before reading the playlist again...
    assert feed.next() is None
    clock[0] = 2.5
    assert feed.next() is None  # ...then 4 s: an empty music folder does not spin a core
    assert "reading it again in 2 s" in caplog.text and "reading it again in 4 s" in caplog.text


def test_file_source_realtime_paces_blocks_and_times_states(tmp_path):
    song = _song(tmp_path / "s.wav", seconds=0.6, seed=2)
    src = FileSource(Playlist([song]), rate=RATE, realtime=True)
    src.open()
    got, start = 0, time.monotonic()
    while (block := src.read(0.05)) is not END:
        if block is None:
            continue
        # a block is handed over at most LEAD_S before it is heard
        assert time.monotonic() >= src._t0 + got / RATE - src.LEAD_S - 1e-3
        got += len(block)
    assert got == round(0.6 * RATE)
    assert time.monotonic() - start >= 0.6 - src.LEAD_S - src.LEAD_S
    assert src.when(RATE // 2) == pytest.approx(src._t0 + 0.5)


# --- the playlist source: lamps at the DAC time -----------------------------------------------

def test_playlist_lamps_switch_when_their_frame_end_reaches_the_dac(tmp_path, monkeypatch,
                                                                    caplog):
    """A stereo 44.1 kHz song on a device that only takes 48 kHz: each state must be applied
    when its frame's end sample comes out of the DAC (LightShowPi was 4x late on stereo).

    On a virtual clock (fake_sounddevice.VirtualClock): time moves only while the daemon
    waits, so a busy machine cannot make the device run dry, and every time is exact."""
    song = _song(tmp_path / "stereo.wav", seconds=2.5, seed=5, stereo=True)
    clock = VirtualClock()
    sd = FakeSoundDevice(rates=(48000,), latency=0.1, clock=clock)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    stop = use_virtual_time(monkeypatch, clock)
    cfg = _config(tmp_path, audio={"source": "playlist", "playlist": [str(song)],
                                   "repeat": False, "device": "HDMI"})
    caplog.set_level(logging.WARNING)
    with clock.member():
        daemon = Daemon(cfg, stop=stop)
        assert daemon.run() == 0
    assert daemon.source.underflows == 0 and "underflows" not in caplog.text

    (stream,) = sd.streams
    assert stream.samplerate == 48000 and stream.channels == 2
    played = np.concatenate(stream.played)
    assert np.array_equal(played[:, 0], played[:, 1])  # the mono mix on both speakers
    played = played[:, 0]
    expected = read_song(song, sample_rate=48000)  # the whole song, nothing dropped or added
    s0 = int(np.flatnonzero(played)[0] - np.flatnonzero(expected)[0])
    assert s0 > 0  # silence while the device started, before the first song sample
    np.testing.assert_allclose(played[s0:s0 + len(expected)], expected, atol=1e-4)

    sets = _sets(tmp_path)
    assert len(sets) == n_frames_for(round(2.5 * RATE)) - 1  # one frame lost to resampling
    starts = np.arange(len(stream.played)) * stream.blocksize
    late = []
    for r in sets:
        e = s0 + round(r["t"] * RATE) * 48000 / RATE  # frame end, in stream samples
        k = (math.ceil(e) - 1) // stream.blocksize   # the buffer holding its last sample
        heard = stream.dac_times[k] + (e - starts[k]) / 48000 - CLOCK_OFFSET
        late.append(r["mono"] - heard)
    late_ms = 1000 * np.array(late)
    print(f"\nlamps after their sound: median {np.median(late_ms):.3f} ms, max "
          f"{late_ms.max():.3f} ms (virtual time)")
    assert late_ms.min() > -1e-6  # never before the sound
    # At most one look later than due: the state's DAC time is known once the callback has
    # taken its samples, and the daemon looks again every poll_s until then.
    assert late_ms.max() <= 1000 * PlaybackSource.poll_s + 1e-6, late_ms
    assert (_changes(sets) > 0).sum() >= 4


def test_missing_then_lost_device_is_retried_with_lamps_off(tmp_path, monkeypatch, caplog):
    song = _song(tmp_path / "s.wav", seconds=2, seed=7)
    sd = FakeSoundDevice(rates=(RATE,), fail_opens=2, die_after_s=1.2)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    cfg = _config(tmp_path, audio={"source": "playlist", "playlist": [str(song)],
                                   "repeat": False})
    assert Daemon(cfg, retry=Backoff(0.01, 0.05)).run() == 0

    assert caplog.text.count("audio device unavailable") == 3
    assert "Device unavailable" in caplog.text and "the playback stream stopped" in caplog.text
    assert len(sd.streams) == 2
    records = MockOutput.read(tmp_path / "rec.jsonl")
    events = [r["event"] for r in records]
    first_set = events.index("set")
    assert set(events[:first_set]) == {"open", "all_off"}  # off while the device was missing
    assert "all_off" in events[first_set:-2]               # and off when it was lost
    ts = [r["t"] for r in records if r["event"] == "set"]
    assert all(b > a for a, b in zip(ts, ts[1:]))  # show time never runs backwards
    # the song was played again from its start on the new stream
    assert np.flatnonzero(np.concatenate(sd.streams[1].played)[:, 0]).size > RATE


# --- line-in -----------------------------------------------------------------------------------

def test_line_in_at_48k_is_resampled_and_lit(tmp_path, monkeypatch):
    y = _music(seconds=2.5, seed=8, rate=48000)
    sd = FakeSoundDevice(signal=np.stack([y, y], axis=1), input_rate=48000)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    cfg = _config(tmp_path, audio={"source": "line-in", "device": "usb"})
    stop = threading.Event()
    threading.Thread(target=lambda: sd.input_done.wait(30) and stop.set(), daemon=True).start()
    daemon = Daemon(cfg, stop=stop)
    assert daemon.run() == 0
    (stream,) = sd.streams
    assert stream.samplerate == 48000 and stream.channels == 2
    sets = _sets(tmp_path)
    # every frame of the 2.5 s heard, at the show's 44.1 kHz (plus some silence after it)
    assert len(sets) >= n_frames_for(round(2.5 * RATE)) - 2
    assert (_changes(sets) > 0).sum() >= 4
    assert daemon.source.overflows == 0


def test_line_in_callback_only_queues_and_counts_overflows(monkeypatch):
    from pi.audio.linein import LineInSource

    sd = FakeSoundDevice(signal=np.zeros((480000, 2), np.float32))
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    src = LineInSource(device=0, rate=RATE, block_ms=20)
    src.open()
    src.close()
    while not src._queue.empty():
        src._queue.get_nowait()
    xruns = src.xruns
    block = np.zeros((960, 2), np.float32)
    info = SimpleNamespace(inputBufferAdcTime=0.0)
    for _ in range(src._queue.maxsize + 5):
        src._callback(block, 960, info, SimpleNamespace(input_overflow=True))
    assert src.overflows == 5 and src.xruns == xruns + src._queue.maxsize + 5
    assert src.counters()["overflows"] == 5
    while not src._queue.empty():
        src._queue.get_nowait()
    with pytest.raises(DeviceError, match="the capture stream stopped"):
        src.read(0.01)  # a stream that stopped is a lost device: the daemon retries
