"""Library ingest: streaming features + RMS, the content-keyed cache, bad songs, splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pi.audio.decode
from pi.show.features import DEFAULT_PARAMS, FeatureParams, n_frames_for, song_features
from training.corpus import ingest
from training.corpus.ingest import (SongFeatures, corpus_summary, is_excluded, load_library,
                             scan_library, split_by_song)


def write_song(path: Path, *, seconds: float, rate: int = 44100, channels: int = 1,
               level: float = 0.3, seed: int = 0) -> Path:
    """Noise with a slow tremolo, so the RMS actually moves from frame to frame."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)
    x = level * rng.standard_normal((n, channels)) * tremolo[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(x, -1, 1).astype(np.float32), rate)
    return path


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts :func:`pi.audio.decode.iter_song_blocks` calls per file name."""
    calls: list[str] = []
    real = pi.audio.decode.iter_song_blocks

    def counting(path, **kw):
        calls.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(pi.audio.decode, "iter_song_blocks", counting)
    return calls


def test_features_and_rms_use_the_same_frames_at_any_rate_and_channels(tmp_path):
    path = write_song(tmp_path / "a.wav", seconds=6.0, rate=48000, channels=2)
    song = ingest.extract_features(path)
    samples = pi.audio.decode.read_song(path)
    np.testing.assert_array_equal(song.frames, song_features(samples))
    windows = np.lib.stride_tricks.sliding_window_view(samples, DEFAULT_PARAMS.n_fft)
    windows = windows[:: DEFAULT_PARAMS.hop][: song.n_frames].astype(np.float64)
    expected = 10 * np.log10(np.mean(windows ** 2, axis=1))
    np.testing.assert_allclose(song.rms_db, expected, atol=1e-3)
    assert song.frames.dtype == np.float32 and song.frames.shape[1] == 513
    assert song.rms_db.shape == (song.n_frames,)
    assert (song.sample_rate_in, song.channels_in) == (48000, 2)
    assert song.duration_s == pytest.approx(6.0, abs=1e-3)


def test_scan_library_is_recursive_sorted_and_excludes(tmp_path):
    for name in ("b/song.flac", "a/deep/x.ogg", "c.wav", "silence.ogg", "victory2.ogg"):
        write_song(tmp_path / name, seconds=0.1)
    (tmp_path / "notes.txt").write_text("not audio")
    names = [p.relative_to(tmp_path).as_posix() for p in scan_library(tmp_path)]
    assert names == sorted(names) and "notes.txt" not in names and len(names) == 5
    kept = scan_library(tmp_path, exclude=ingest.JINGLE_PATTERNS)
    assert [p.name for p in kept] == ["x.ogg", "song.flac", "c.wav"]
    assert is_excluded("/m/Defeat.OGG") and not is_excluded("/m/battle.ogg")


def test_second_load_hits_the_cache_without_decoding(tmp_path, decode_calls):
    paths = [write_song(tmp_path / f"s{i}.wav", seconds=6.0, seed=i) for i in range(2)]
    first, _ = load_library(paths, cache_dir=tmp_path / "cache", progress=False)
    assert sorted(decode_calls) == ["s0.wav", "s1.wav"]
    decode_calls.clear()
    again, skipped = load_library(paths, cache_dir=tmp_path / "cache", progress=False)
    assert decode_calls == [] and skipped == []
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.rms_db, b.rms_db)
        assert (a.duration_s, a.sample_rate_in, a.channels_in, a.path) == \
               (b.duration_s, b.sample_rate_in, b.channels_in, b.path)
    assert not list((tmp_path / "cache").glob("*.tmp"))  # atomic writes leave no debris


def test_changed_params_miss_and_renamed_file_hits(tmp_path, decode_calls):
    path = write_song(tmp_path / "a.wav", seconds=6.0)
    cache = tmp_path / "cache"
    load_library([path], cache_dir=cache, progress=False)
    other = FeatureParams(hop=256)
    songs, _ = load_library([path], cache_dir=cache, params=other, progress=False)
    assert decode_calls == ["a.wav", "a.wav"]
    assert songs[0].n_frames == n_frames_for(6 * 44100, params=other)
    renamed = path.rename(tmp_path / "renamed.wav")
    songs, _ = load_library([renamed], cache_dir=cache, progress=False)
    assert decode_calls == ["a.wav", "a.wav"] and songs[0].path == renamed


def test_corrupt_cache_entry_is_recomputed(tmp_path, decode_calls):
    path = write_song(tmp_path / "a.wav", seconds=6.0)
    cache = tmp_path / "cache"
    (good,), _ = load_library([path], cache_dir=cache, progress=False)
    (entry,) = cache.glob("*.npz")
    for damage in (b"not a zip", entry.read_bytes()[:200]):
        entry.write_bytes(damage)
        (song,), skipped = load_library([path], cache_dir=cache, progress=False)
        np.testing.assert_array_equal(song.frames, good.frames)
        assert skipped == []
    assert decode_calls == ["a.wav"] * 3
    load_library([path], cache_dir=cache, progress=False)  # the rewritten entry is good again
    assert len(decode_calls) == 3


def test_bad_songs_are_skipped_and_reported_not_fatal(tmp_path, monkeypatch, capsys):
    good = write_song(tmp_path / "good.wav", seconds=6.0)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    flac = write_song(tmp_path / "truncated.flac", seconds=8.0)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(44100 * 6, np.float32), 44100)
    short = write_song(tmp_path / "short.wav", seconds=2.0)
    partway = write_song(tmp_path / "partway.wav", seconds=6.0, seed=1)
    real = pi.audio.decode.iter_song_blocks

    def failing(path, **kw):  # a decoder blowing up mid-song with an unexpected exception
        blocks = real(path, **kw)
        yield next(blocks)
        if Path(path).name == "partway.wav":
            raise MemoryError("simulated")
        yield from blocks

    monkeypatch.setattr(pi.audio.decode, "iter_song_blocks", failing)
    paths = [garbage, flac, good, silent, short, partway, tmp_path / "missing.ogg"]
    songs, skipped = load_library(paths, cache_dir=tmp_path / "cache", progress=True)
    assert [s.path for s in songs] == [good]
    reasons = {p.name: r for p, r in skipped}
    assert reasons.keys() == {"garbage.wav", "truncated.flac", "silent.wav", "short.wav",
                              "partway.wav", "missing.ogg"}
    for name in ("garbage.wav", "truncated.flac", "partway.wav", "missing.ogg"):
        assert reasons[name].startswith("unreadable:")
    assert "garbage.wav" in reasons["garbage.wav"]  # the decoder's message names the file
    assert reasons["silent.wav"].startswith("silent:")
    assert reasons["short.wav"].startswith("too short:") and "2.00 s" in reasons["short.wav"]
    assert "features" in capsys.readouterr().err  # tqdm went to stderr

    summary = json.loads(json.dumps(corpus_summary(songs, skipped)))
    assert summary["n_songs"] == 1 and summary["n_skipped"] == 6
    assert summary["total_minutes"] == pytest.approx(0.1, abs=1e-3)
    assert sorted(summary["skipped_by_reason"]["unreadable"]) == \
           ["garbage.wav", "missing.ogg", "partway.wav", "truncated.flac"]
    assert summary["skipped_by_reason"]["silent"] == ["silent.wav"]


def test_min_seconds_is_applied_after_the_cache(tmp_path, decode_calls):
    path = write_song(tmp_path / "a.wav", seconds=6.0)
    songs, _ = load_library([path], cache_dir=tmp_path / "c", min_seconds=10, progress=False)
    assert songs == []
    songs, _ = load_library([path], cache_dir=tmp_path / "c", min_seconds=5, progress=False)
    assert len(songs) == 1 and decode_calls == ["a.wav"]


def _fake(name: str) -> SongFeatures:
    return SongFeatures(Path(name), np.zeros((1, 513), np.float32), np.zeros(1, np.float32),
                        1.0, 44100, 1)


def test_split_is_by_song_deterministic_and_order_free():
    songs = [_fake(f"/m/{i:02d}.wav") for i in range(10)]
    train, val = split_by_song(songs, val_fraction=0.2, seed=3)
    assert len(val) == 2 and len(train) == 8
    assert {s.path for s in train}.isdisjoint({s.path for s in val})
    again = split_by_song(list(reversed(songs)), val_fraction=0.2, seed=3)
    assert {s.path for s in again[1]} == {s.path for s in val}
    other_seeds = {tuple(sorted(str(s.path) for s in split_by_song(songs, seed=k)[1]))
                   for k in range(5)}
    assert len(other_seeds) > 1
    assert [len(p) for p in split_by_song(songs[:2], val_fraction=0.01)] == [1, 1]
    assert [len(p) for p in split_by_song(songs[:1])] == [1, 0]
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_song(songs, val_fraction=1.0)


def test_unwritable_cache_warns_but_keeps_the_song(tmp_path, monkeypatch):
    path = write_song(tmp_path / "a.wav", seconds=6.0)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest.np, "savez", full_disk)
    with pytest.warns(UserWarning, match="No space left"):
        songs, skipped = load_library([path], cache_dir=tmp_path / "cache", progress=False)
    assert len(songs) == 1 and skipped == []
    assert not list((tmp_path / "cache").iterdir())  # no half-written or temp files
