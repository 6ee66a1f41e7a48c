"""``python -m training compare`` and its LightShowPi emulation (training/lightshowpi.py)."""
from __future__ import annotations

import numpy as np
import soundfile as sf

from training.compare import COLUMNS, ROWS, main as compare
from training.corpus.stems import sidecar, write_stems
from training.corpus.synth import synth_song_with_stems
from training.lightshowpi import (band_bins, brightness, chunk_levels, frequency_limits,
                                  lightshowpi_timeline)

SR = 44100


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_compare_prints_every_row_and_column(tmp_path, capsys):
    y, _, onsets = synth_song_with_stems(seconds=14.0, seed=5, ending="hard_stop")
    song = tmp_path / "song.wav"
    sf.write(song, y, SR)
    write_stems(sidecar(song), onsets)  # stems beside the song, as evaluate finds them
    listing = tmp_path / "songs.txt"
    listing.write_text(f"# the synthetic song\n{song}\n")
    assert compare(["--songs-from", str(listing)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert _cells(table[0]) == ["show"] + [h.label for h in COLUMNS]
    rows = {cells[0]: cells[1:] for cells in map(_cells, table[2:])}
    assert list(rows) == list(ROWS)
    for name, cells in rows.items():
        assert len(cells) == len(COLUMNS)
        # With stems every metric is defined, for every row (the null's too).
        assert all(c != "–" for c in cells), (name, cells)
    assert "shipped model (dense) / bands: ssmCorr" in out
    assert "1 songs (1 with stems); project shows: look-ahead" in out


def test_frequency_limits_are_lightshowpis():
    # calculate_channel_frequency with min 20 Hz, max 15000 Hz, 8 channels: each limit
    # 10 ** (0.3 * octaves_per_channel) times the last, so the top falls short of 15 kHz.
    limits = frequency_limits()
    assert limits[0, 0] == 20.0
    np.testing.assert_allclose(limits[1:, 0], limits[:-1, 1])
    np.testing.assert_allclose(limits[-1, 1], 14664.05, rtol=1e-5)
    assert band_bins(chunk=2048, sample_rate=SR).tolist()[:3] == [[0, 2], [2, 4], [4, 11]]


def test_a_tone_in_a_channels_band_lights_that_channel_only():
    # One second of a tone at the (geometric) centre of each channel's band in turn.
    limits = frequency_limits()
    t = np.arange(SR) / SR
    y = np.concatenate([0.5 * np.sin(2 * np.pi * np.sqrt(lo * hi) * t) for lo, hi in limits])
    timeline = lightshowpi_timeline(y, chunk=2048)
    first = np.arange(len(timeline.states)) * 2048  # each chunk's first sample
    for k in range(8):
        # Whole chunks inside second k (the short last chunk, with its own bin spacing,
        # ends after the song and so is never inside).
        inside = (first >= k * SR) & (first + 2048 <= (k + 1) * SR)
        states = timeline.states[inside]
        assert states[:, k].all(), k
        if k >= 4:
            # The four low bands are 2-14 bins wide, narrower than the Hann window's
            # leakage, so there a tone lights its neighbours too, in LightShowPi as here.
            others = np.delete(states, k, axis=1)
            assert not others.any(), k


def test_silence_and_a_channel_without_sound_stay_off():
    y = np.zeros(SR * 2)
    y[SR:] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(SR) / SR) * np.linspace(0, 1, SR)
    levels = chunk_levels(y, chunk=2048)
    assert np.all(levels[: SR // 2048] == 0)  # all-zero chunks: no levels at all
    assert np.all(brightness(levels)[: SR // 2048] == 0)
    assert not lightshowpi_timeline(y).states[: SR // 2048].any()


def test_the_hold_keeps_every_run_at_least_100_ms():
    rng = np.random.default_rng(0)
    # Noise whose loudness jumps every 25 ms: every channel wants to flicker.
    y = rng.standard_normal(1024 * 240) * np.repeat(rng.uniform(0.01, 0.5, 240), 1024)
    free = lightshowpi_timeline(y, chunk=1024)
    held = lightshowpi_timeline(y, chunk=1024, hold_s=0.1)
    assert np.array_equal(free.times_s, held.times_s)

    def shortest_run(states):
        changes = [np.flatnonzero(np.diff(states[:, c].astype(int))) for c in range(8)]
        return min(np.diff(ch).min() for ch in changes if len(ch) > 1)

    assert shortest_run(free.states) == 1          # as shipped: a chunk (23 ms) is possible
    assert shortest_run(held.states) == 5          # 5 chunks of 1024 = 116 ms >= 100 ms
