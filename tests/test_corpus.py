"""The synthetic corpus: deterministic, correctly annotated endings, idempotent on disk."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from pi.audio.decode import read_song
from pi.show.features import HOP, N_FFT, song_features
from training.corpus import demo as corpus, synth
from training.corpus.demo import generate_corpus
from training.corpus.synth import ENDINGS, synth_song

SR = 44100
PEAK = 10 ** (-3 / 20)
LSB = 1 / 32768  # one step of 16-bit PCM


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-30))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """(folder, specs, {file name: synth_song's output}) of a 4-song corpus."""
    out = tmp_path_factory.mktemp("corpus")
    specs = generate_corpus(out, n_songs=4, seconds=14.0, seed=3)
    return out, specs, {s.path.name: synth_song(seconds=s.seconds, seed=s.seed, ending=s.ending)
                        for s in specs}


def test_same_seed_same_samples_other_seed_other_samples():
    a, end_a = synth_song(seconds=8.0, seed=5, ending="fade")
    b, end_b = synth_song(seconds=8.0, seed=5, ending="fade")
    c, _ = synth_song(seconds=8.0, seed=6, ending="fade")
    assert a.dtype == np.float32 and a.shape == (8 * SR,)
    assert np.array_equal(a, b) and end_a == end_b
    assert not np.allclose(a, c, atol=1e-3)


def test_files_and_annotations_match_the_specs(small_corpus):
    out, specs, synth = small_corpus
    assert [s.path.name for s in specs] == ["song_00_fade.wav", "song_01_quiet_tail.wav",
                                            "song_02_hard_stop.wav", "song_03_fade.wav"]
    with open(out / "annotations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "end_seconds"]
    assert [r["file"] for r in rows] == [s.path.name for s in specs]
    for row, spec in zip(rows, specs):
        assert float(row["end_seconds"]) == spec.music_end_s
        assert 80 <= spec.tempo_bpm <= 160 and spec.seconds == 14.0
        assert 0.5 * spec.seconds < spec.music_end_s < spec.seconds
        assert abs(spec.music_end_s * SR - round(spec.music_end_s * SR)) < 1e-6  # on a sample
        samples = read_song(spec.path)
        expected, end = synth[spec.path.name]
        assert end == spec.music_end_s
        assert samples.shape == expected.shape
        assert np.abs(samples - expected).max() <= LSB  # only the 16-bit rounding


def test_every_ending_kind_is_present():
    assert ENDINGS == ("fade", "quiet_tail", "hard_stop")
    assert {ENDINGS[i % 3] for i in range(3)} == set(ENDINGS)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ending", ENDINGS)
def test_the_music_ends_at_music_end_s(ending, seed):
    y, end_s = synth_song(seconds=12.0, seed=seed, ending=ending)
    end = int(round(end_s * SR))
    before, after = y[end - 3 * SR: end - int(0.03 * SR)], y[end:]
    assert len(after) >= SR // 2
    assert PEAK * 0.99 <= np.abs(y).max() <= PEAK + 1e-3, "peak near -3 dBFS, no clipping"
    if ending == "fade":
        music, gain, noise, end2, _ = synth._song_parts(seconds=12.0, seed=seed,
                                                         ending=ending, sample_rate=SR)
        assert end2 == end and noise is None
        k = np.abs(y).max() / np.abs(music * gain).max()
        assert np.allclose(y, music * gain * k, atol=1e-6)
        assert gain[end] == pytest.approx(0.01, rel=1e-5), "-40 dB at music_end_s"
        assert np.all(np.diff(gain) <= 0) and gain[-1] == 0.0
        fade_start = int(np.flatnonzero(gain < 1.0)[0]) - 1  # the gain is 0 dB there
        assert 3 * SR <= end - fade_start <= 0.3 * 12 * SR + 1  # 3-8 s, capped at 30 %
        assert rms_db(y[: fade_start]) > rms_db(y[end - SR // 2: end]) + 20  # a real fade
    else:
        assert rms_db(before) > -40.0, "the music plays right up to music_end_s"
        assert rms_db(after) < rms_db(before) - 40.0
    if ending == "hard_stop":
        assert not np.any(after), "digital silence"
    if ending == "quiet_tail":
        assert -73.0 < rms_db(after) < -67.0, "room noise around -70 dBFS"


def test_endings_have_their_documented_lengths():
    # synth.song_timing is what synth_song and generate_corpus both use for the ending.
    for seed in range(50):
        for ending, (lo, hi) in {"fade": (0.5, 3), "quiet_tail": (3, 10),
                                 "hard_stop": (2, 6)}.items():
            n, tempo, end, fade_start = synth.song_timing(np.random.default_rng(seed), 40.0,
                                                       ending, SR)
            assert n == 40 * SR and 80 <= tempo <= 160
            assert lo <= (n - end) / SR <= hi
            if ending == "fade":
                assert 3 <= (end - fade_start) / SR <= 8
            else:
                assert fade_start == end
    _, end_s = synth_song(seconds=8.0, seed=4, ending="hard_stop")
    n, _, end, _ = synth.song_timing(np.random.default_rng(4), 8.0, "hard_stop", SR)
    assert end_s == end / SR and 8.0 - end_s <= 0.25 * 8.0  # capped for short songs


def test_songs_are_varied_and_drums_give_onsets_on_the_beat(small_corpus):
    _, specs, synth = small_corpus
    for spec in specs:
        y, end_s = synth[spec.path.name]
        n_music = int((end_s * SR - N_FFT) // HOP)
        feats = song_features(y)[:n_music]
        assert feats.shape[1] == 513
        assert feats.std(axis=0).mean() > 8.0, "per-bin dB level varies across frames"
        flux = np.maximum(np.diff(feats, axis=0), 0).sum(axis=1)
        centres = (np.arange(1, n_music) * HOP + N_FFT / 2) / SR
        beat = 60.0 / spec.tempo_bpm
        phase = (centres / beat) % 1.0
        near_beat = np.minimum(phase, 1 - phase) * beat < 0.015
        assert flux[near_beat].mean() > 2.0 * flux[~near_beat].mean()
    tempos = [s.tempo_bpm for s in specs]
    assert len(set(np.round(tempos))) == len(tempos)


def test_generate_corpus_is_idempotent_and_tracks_its_parameters(tmp_path):
    specs = generate_corpus(tmp_path, n_songs=3, seconds=6.0, seed=1)
    files = [s.path for s in specs] + [tmp_path / "annotations.csv", tmp_path / "corpus.json"]
    old = 1_000_000_000
    for f in files:
        os.utime(f, ns=(old, old))
    again = generate_corpus(tmp_path, n_songs=3, seconds=6.0, seed=1)
    assert again == specs
    assert all(f.stat().st_mtime_ns == old for f in files), "nothing rewritten"

    # A truncated file is noticed and rewritten.
    specs[0].path.write_bytes(specs[0].path.read_bytes()[:1000])
    generate_corpus(tmp_path, n_songs=3, seconds=6.0, seed=1)
    assert len(read_song(specs[0].path)) == 6 * SR
    assert specs[1].path.stat().st_mtime_ns == old

    # Other parameters regenerate; songs no longer in the corpus are removed.
    fewer = generate_corpus(tmp_path, n_songs=2, seconds=7.0, seed=1)
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == [s.path.name for s in fewer]
    assert all(len(read_song(s.path)) == 7 * SR for s in fewer)
    manifest = json.loads((tmp_path / "corpus.json").read_text())
    assert sorted(manifest["songs"]) == [s.path.name for s in fewer]
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_writes_the_demo_song(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--songs", "1", "--seconds", "6", "--seed", "7"]
    assert corpus.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "song_00_fade.wav" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["annotations.csv", "corpus.json",
                                                     "song_00_fade.stems.json",
                                                     "song_00_fade.wav"]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="ending"):
        synth_song(seconds=10.0, seed=0, ending="abrupt")
    with pytest.raises(ValueError, match="seconds"):
        synth_song(seconds=1.0, seed=0, ending="fade")
    with pytest.raises(SystemExit):
        corpus.main(["--out", "unused", "--songs", "0"])
