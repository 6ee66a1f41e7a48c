"""Structure metrics: a straightforward librosa + mir_eval + scipy reference, and the cases
the definitions single out."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from pi.offline.metrics import HOP
from pi.offline.structure import (max_assignment, mfcc, onset_f_measure, shuffled_null,
                          structure_metrics, switch_on_times)

SR = 44100


def reference_structure(y, times_s, states, stems, sr=SR):
    """The md's steps, written the plain way with the libraries it names."""
    librosa = pytest.importorskip("librosa")
    mir_eval = pytest.importorskip("mir_eval")
    optimize = pytest.importorskip("scipy.optimize")
    from pi.offline.metrics import music_end_hop  # checked against librosa in test_metrics

    end = music_end_hop(y, sr=sr)
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)            # (20, n_hops)
    t = librosa.frames_to_time(np.arange(m.shape[1]), sr=sr, hop_length=512)
    win = np.floor(t / 0.5).astype(int)
    n_win = win.max() + 1
    A = np.stack([m[:, win == i].mean(axis=1) for i in range(n_win)])
    A = (A - A.mean(axis=0)) / A.std(axis=0)
    rows = np.searchsorted(times_s, t, side="right") - 1
    hop_on = np.where(rows[:, None] >= 0, states[np.maximum(rows, 0)], 0).astype(float)
    keep = win[end] + 1

    def cos(X):
        n = np.linalg.norm(X, axis=1, keepdims=True)
        n[n == 0] = np.inf
        return (X / n) @ (X / n).T

    def ssm(show):
        rows_on = np.where(rows[:, None] >= 0, show[np.maximum(rows, 0)], 0).astype(float)
        L = np.stack([rows_on[win == i].mean(axis=0) for i in range(n_win)]) - 0.5
        i, j = np.triu_indices(keep, k=4)
        return np.corrcoef(cos(A[:keep])[i, j], cos(L[:keep])[i, j])[0, 1]

    def stemf(show):
        prev = np.vstack([np.zeros((1, show.shape[1]), bool), show[:-1]])
        F = np.zeros((show.shape[1], len(stems)))
        for c in range(show.shape[1]):
            ons = times_s[show[:, c] & ~prev[:, c]]
            for k, s in enumerate(stems.values()):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    F[c, k] = mir_eval.onset.f_measure(np.asarray(s), ons, window=0.07)[0]
        r, c = optimize.linear_sum_assignment(F, maximize=True)
        return F[r, c].mean()

    del hop_on
    nulls = []
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        state = np.zeros(states.shape[1], bool)
        null = np.zeros_like(states)
        prev = np.zeros(states.shape[1], bool)
        for i, row in enumerate(states):
            n = int(np.sum(row != prev))
            prev = row
            if n:
                state[rng.choice(states.shape[1], size=n, replace=False)] ^= True
            null[i] = state
        nulls.append(null)
    ssm_null = np.mean([ssm(n) for n in nulls])
    stem_null = np.mean([stemf(n) for n in nulls])
    return {"ssmCorr": ssm(states), "ssmLift": ssm(states) - ssm_null,
            "stemF": stemf(states), "stemLift": stemf(states) - stem_null}


def sectioned_song(seed=0, seconds=24.0):
    """A song in sections A B A B with a low and a high instrument, and its stems."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    y = np.zeros(n)
    stems = {"low": [], "high": []}
    t_sec = seconds / 4
    for sec in range(4):
        freq, beat = (110.0, 0.5) if sec % 2 == 0 else (1760.0, 0.25)
        name = "low" if sec % 2 == 0 else "high"
        for onset in np.arange(sec * t_sec, (sec + 1) * t_sec, beat):
            i = int(onset * SR)
            length = min(int(0.2 * SR), n - i)
            env = np.exp(-np.arange(length) / (0.05 * SR))
            y[i:i + length] += 0.4 * env * np.sin(2 * np.pi * freq * np.arange(length) / SR)
            stems[name].append(onset)
    y += 0.002 * rng.normal(size=n)
    return y.astype(np.float64), {k: np.array(v) for k, v in stems.items()}


def follow_show(seconds, stems, n_channels=4, hop_s=HOP / SR, seed=0):
    """Rows every hop: channel 0 flashes on the low stem, 1 on the high, the others random."""
    rng = np.random.default_rng(seed)
    times = np.arange(0, seconds, hop_s)
    on = np.zeros((len(times), n_channels), bool)
    for c, name in enumerate(("low", "high")):
        for t in stems[name]:
            i = np.searchsorted(times, t + rng.uniform(-0.03, 0.03))
            on[i:i + 8, c] = True
    on[:, 2:] = rng.random((len(times), n_channels - 2)) < 0.02
    return times, on


def _matches_reference(y, times, on, stems) -> dict:
    """Our structure metrics, each equal to the library reference's."""
    ours = structure_metrics(y, times_s=times, states=on, stems=stems)
    ref = reference_structure(y, times, on, stems)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    return ours


def test_matches_the_library_reference():
    y, stems = sectioned_song()
    times, on = follow_show(24.0, stems)
    ours = _matches_reference(y, times, on, stems)
    # The show follows the sections and the instruments, so it is far above its null.
    assert ours["ssmCorr"] > 0.5 and ours["stemLift"] > 0.3


def test_matches_the_reference_on_a_random_show():
    y, stems = sectioned_song(seed=3)
    rng = np.random.default_rng(5)
    times = np.sort(rng.uniform(0, 24, 400))
    on = rng.random((400, 8)) < 0.5
    _matches_reference(y, times, on, stems)


def test_mfcc_matches_librosa():
    librosa = pytest.importorskip("librosa")
    y, _ = sectioned_song(seconds=4.0)
    np.testing.assert_allclose(mfcc(y), librosa.feature.mfcc(y=y, sr=SR).T, atol=1e-4)


def test_onset_f_measure_matches_mir_eval_at_the_window_edges():
    mir_eval = pytest.importorskip("mir_eval")
    rng = np.random.default_rng(0)
    for _ in range(200):
        ref = np.sort(rng.uniform(0, 5, rng.integers(0, 30)))
        est = np.sort(np.round(ref + rng.choice([-0.07, 0.07, 0.0699, 0.0701, 0.3], ref.size),
                               4) if rng.random() < 0.5 else rng.uniform(0, 5, 20))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = mir_eval.onset.f_measure(ref, est, window=0.07)[0]
        assert onset_f_measure(ref, est) == pytest.approx(expected, abs=1e-12)


def test_assignment_matches_scipy():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    for shape in [(8, 5), (5, 8), (8, 8), (1, 3), (3, 1)] * 20:
        score = rng.integers(0, 4, shape).astype(float) if rng.random() < 0.5 \
            else rng.random(shape)
        rows, cols = max_assignment(score)
        r2, c2 = optimize.linear_sum_assignment(score, maximize=True)
        assert score[rows, cols].sum() == pytest.approx(score[r2, c2].sum())
        assert len(set(rows.tolist())) == len(rows) == min(shape)
        assert len(set(cols.tolist())) == len(cols)


def test_null_keeps_the_number_of_changes_per_row():
    rng = np.random.default_rng(1)
    on = rng.random((300, 8)) < 0.3
    null = shuffled_null(on, seed=0)
    changes = np.count_nonzero(np.diff(on, axis=0, prepend=False), axis=1)
    assert np.array_equal(np.count_nonzero(np.diff(null, axis=0, prepend=False), axis=1),
                          changes)
    assert not np.array_equal(null, on)
    assert np.array_equal(null, shuffled_null(on, seed=0))


def test_switch_ons_count_a_channel_on_in_the_first_row():
    on = np.array([[1, 0], [1, 1], [0, 1], [1, 0]], bool)
    ons = switch_on_times(np.array([0.0, 1.0, 2.0, 3.0]), on)
    assert ons[0].tolist() == [0.0, 3.0] and ons[1].tolist() == [1.0]


def test_without_stems_or_music_the_metrics_are_undefined():
    y, stems = sectioned_song(seconds=6.0)
    times, on = follow_show(6.0, stems)
    out = structure_metrics(y, times_s=times, states=on)
    assert out["stemF"] is None and out["stemLift"] is None and out["ssmCorr"] is not None
    silent = structure_metrics(np.zeros(SR * 3), times_s=times[:10], states=on[:10])
    assert silent["ssmCorr"] is None and silent["ssmLift"] is None
