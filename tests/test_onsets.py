"""The look-ahead show's onsets (pi/show/lookahead.py): the onset strength of the show's own
frames, over one frame or a span, against the judge's (pi/offline/metrics.py), and the
peaks picked from it."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pi.show.features import song_features
from pi.show.lookahead import ONSET_BLOCK, onset_strength, pick_onsets
from pi.show.pipeline import make_show
from training.corpus.synth import synth_song


@pytest.fixture(scope="module")
def one_song(tmp_path_factory):
    path = tmp_path_factory.mktemp("songs") / "one.wav"
    y, _ = synth_song(seconds=8.0, seed=21, ending="hard_stop")
    sf.write(path, y, 44100)
    return path


def test_onset_strength_agrees_with_the_judges(one_song):
    """The show's own onset strength (1024-sample frames, pi/show/lookahead.py) and the judge's
    (pi/offline/metrics.py, librosa's definition at 2048 samples) move together: frame i is centred
    on hop i + 1, and the judge shifts its values by 3 hops; its longer frames see a rise
    a hop early or late, so the best match is at a shift of 2 or 3, and none elsewhere."""
    from pi.audio.decode import read_song
    from pi.offline.metrics import onset_strength as judge_onsets

    y = read_song(one_song)
    show = make_show(mapper="bands")
    _, bands = show.mapper.frame_signals(song_features(y))
    ours = onset_strength(bands_db=bands)
    judge = judge_onsets(y)
    n = len(judge) - 8
    corr = {s: np.corrcoef(ours[:n], judge[s:s + n])[0, 1] for s in range(1, 6)}
    assert max(corr[2], corr[3]) > 0.7 and max(corr[1], corr[4], corr[5]) < 0.3, corr


def test_pick_onsets_shifts_and_respects_the_gate():
    env = np.zeros(200)
    env[[50, 100, 150]] = 5.0
    allowed = np.ones(200, bool)
    allowed[90:110] = False
    got = pick_onsets(envelope=env, allowed=allowed, ratio=1.5, mean_frames=41, shift_frames=3)
    assert got.tolist() == [53, 153]


def test_onset_strength_over_a_span_is_the_rise_of_the_averaged_power():
    """span=3: each frame's mel power averaged with the two before it (the 2048 samples the
    judge frames), then librosa's steps; taken in blocks, the same as over the whole song."""
    rng = np.random.default_rng(3)
    bands = rng.normal(-40.0, 15.0, size=(2 * ONSET_BLOCK + 7, 16))
    power = 10.0 ** (bands / 10.0)
    total = power.copy()
    total[1:] += power[:-1]
    total[2:] += power[:-2]
    db = 10.0 * np.log10(total / np.minimum(np.arange(1, len(bands) + 1), 3)[:, None])
    db = np.maximum(db, bands.max() - 80.0)
    expected = np.concatenate([[0.0], np.maximum(np.diff(db, axis=0), 0.0).mean(axis=1)])
    np.testing.assert_allclose(onset_strength(bands_db=bands, span=3), expected, rtol=1e-12)
    assert np.array_equal(onset_strength(bands_db=bands, span=1), onset_strength(bands_db=bands))


def test_onset_strength_over_three_frames_follows_the_judges_more_closely(one_song):
    from pi.audio.decode import read_song
    from pi.offline.metrics import onset_strength as judge_onsets

    y = read_song(one_song)
    _, bands = make_show(mapper="bands").mapper.frame_signals(song_features(y))
    judge = judge_onsets(y)
    n = len(judge) - 8

    def best(span):
        ours = onset_strength(bands_db=bands, span=span)
        return max(np.corrcoef(ours[:n], judge[s:s + n])[0, 1] for s in range(1, 6))

    assert best(3) > best(1)
