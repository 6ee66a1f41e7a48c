"""The look-ahead show's channel accents (pi/show/stem_accents.py): each channel switches on at
the onsets of its own group of mel bands, inside the relay guard's budget, and only in
percussive songs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pi.show.lookahead import DEFAULT_LOOKAHEAD, onset_strength, plan_states
from pi.show.relay_rules import SwitchBudget, ToggleGuard
from pi.show.stem_accents import (BLOCK, band_group_signals, channel_peaks,
                                  match_groups, peakiness, plan_channel_accents,
                                  song_band_signals, song_mel_signals)

DT = 512 / 44100
HOLD = 10  # frames: 116 ms


def _switch_ons(col):
    return np.flatnonzero(col[1:] & ~col[:-1]) + 1


def _guard_defers(states):
    guard = ToggleGuard(states.shape[1], max_per_s=3, hold_s=0.10)
    out, _ = guard.apply(states, np.arange(len(states)) * DT)
    return guard.deferred, out


def test_band_group_signals_are_each_groups_mean_rise_and_level_in_blocks_or_not():
    rng = np.random.default_rng(0)
    bands = rng.normal(-40, 15, (BLOCK * 2 + 37, 128)).astype(np.float32)
    bands[5, 3] = 40.0  # the loudest cell sets the floor 80 dB below it
    flux, level = band_group_signals(bands_db=bands, n_groups=8)
    db = np.maximum(bands.astype(np.float64), 40.0 - 80.0)
    rise = np.vstack([np.zeros((1, 128)), np.maximum(np.diff(db, axis=0), 0)])
    np.testing.assert_allclose(flux, rise.reshape(len(db), 8, 16).mean(axis=2), atol=1e-9)
    np.testing.assert_allclose(level, db.reshape(len(db), 8, 16).mean(axis=2), atol=1e-9)
    # lag=3: the rise from 3 frames before, across the blocks' seams as well
    flux3, level3 = band_group_signals(bands_db=bands, n_groups=8, lag=3)
    rise3 = np.vstack([np.zeros((3, 128)), np.maximum(db[3:] - db[:-3], 0)])
    np.testing.assert_allclose(flux3, rise3.reshape(len(db), 8, 16).mean(axis=2), atol=1e-9)
    np.testing.assert_array_equal(level3, level)
    with pytest.raises(ValueError, match="expected at least 8 mel bands, found 4"):
        band_group_signals(bands_db=bands[:, :4], n_groups=8)


def test_match_groups_finds_the_permutation_behind_the_activations():
    rng = np.random.default_rng(1)
    levels = rng.normal(size=(2000, 8)).cumsum(axis=0)
    perm = rng.permutation(8)
    acts = levels[:, perm] * rng.uniform(0.5, 2.0, 8) + rng.normal(0, 0.5, (2000, 8))
    np.testing.assert_array_equal(match_groups(activations=acts, levels=levels,
                                               allowed=np.ones(2000, bool)), perm)
    # Beyond the exact search's size the greedy match still finds a clear one.
    levels12 = rng.normal(size=(2000, 12)).cumsum(axis=0)
    perm12 = rng.permutation(12)
    np.testing.assert_array_equal(match_groups(activations=levels12[:, perm12],
                                               levels=levels12,
                                               allowed=np.ones(2000, bool)), perm12)


def test_peakiness_tells_clicks_from_legato():
    rng = np.random.default_rng(2)
    legato = 1.0 + 0.2 * rng.random(3000)
    clicks = legato.copy()
    clicks[::12] += 10.0  # more than 5% of the frames: the 95th percentile is a click
    allowed = np.ones(3000, bool)
    assert peakiness(envelope=legato, allowed=allowed) < 1.5
    assert peakiness(envelope=clicks, allowed=allowed) > 3.0
    assert peakiness(envelope=clicks, allowed=np.zeros(3000, bool)) == 0.0


def test_channel_peaks_keep_the_strongest_apart_and_where_allowed():
    onset = np.zeros((1000, 2))
    onset[np.arange(50, 950, 10), 0] = np.linspace(1, 2, 90)  # every 10 frames
    onset[500, 1] = 5.0
    allowed = np.ones(1000, bool)
    allowed[900:] = False
    peaks = channel_peaks(onset=onset, allowed=allowed, rate=100.0, dt=DT, min_gap=25,
                          ratio=1.3, mean_frames=87)
    p = peaks[0]
    assert np.all(np.diff(p) > 25) and p.max() < 900 and 890 in p  # the strongest first
    assert peaks[1].tolist() == [500]
    few = channel_peaks(onset=onset, allowed=allowed, rate=0.5, dt=DT, min_gap=1,
                        ratio=1.3, mean_frames=87)
    assert len(few[0]) == int(0.5 * 900 * DT)


def test_accents_switch_on_at_their_peaks_within_the_guards_budget():
    n = 2000
    sections = np.zeros((n, 2), bool)
    sections[:, 1] = True  # channel 1 active throughout, channel 0 inactive
    peaks = [np.arange(100, 1900, 37), np.arange(120, 1900, 41)]  # more than the budget
    strength = [np.ones(len(p)) for p in peaks]
    landing = np.zeros(n, bool)
    landing[::7] = True
    out = plan_channel_accents(sections=sections, peaks=peaks, strength=strength,
                               landing=landing, dt=DT, hold=HOLD, max_frames=17,
                               max_per_s=3, window_s=1.0)
    deferred, _ = _guard_defers(out)
    assert deferred == 0
    for c in range(2):
        ons = _switch_ons(out[:, c])
        assert len(ons) > 0.6 * n * DT and set(ons.tolist()) <= set(peaks[c].tolist())
    # The other switch of each accent falls on a landing frame (or a hold after the peak).
    off0 = np.flatnonzero(out[:-1, 0] & ~out[1:, 0]) + 1
    assert all(landing[f] or f - 1 - _switch_ons(out[:, 0])[
        np.searchsorted(_switch_ons(out[:, 0]), f) - 1] + 1 == HOLD for f in off0)
    assert out[:, 1].mean() > 0.8 and out[:, 0].mean() < 0.2  # the sections still show


def _two_instruments(seconds=60.0, seed=3):
    """Mel bands of a song with a low and a high instrument that click at their own times,
    each louder in its own half of the song (percussive: clicks in 7% of the frames)."""
    rng = np.random.default_rng(seed)
    n = int(seconds / DT)
    bands = np.full((n, 128), -70.0) + rng.normal(0, 1, (n, 128))
    low = np.sort(rng.choice(np.arange(20, n - 20), int(seconds * 3), replace=False))
    high = np.sort(rng.choice(np.arange(20, n - 20), int(seconds * 3), replace=False))
    bands[: n // 2, 0:16] += 10.0
    bands[n // 2:, 112:128] += 10.0
    decay = -10.0 - 4 * np.arange(8)[:, None]  # a click: -10 dB, fading over 8 frames
    for onsets, cols in ((low, slice(0, 16)), (high, slice(112, 128))):
        for t in onsets:
            bands[t:t + 8, cols] = np.maximum(bands[t:t + 8, cols], decay)
    level = np.full(n, -20.0)
    # Activations: the smoothed levels of the groups, in another order, and six others.
    acts = rng.normal(0, 0.1, (n, 8))
    acts[:, 5] += np.r_[np.ones(n // 2), np.zeros(n - n // 2)]   # follows the low group
    acts[:, 2] += np.r_[np.zeros(n // 2), np.ones(n - n // 2)]   # follows the high group
    return acts, level, bands, low, high


def test_in_a_percussive_song_each_channel_switches_on_at_its_own_instruments_onsets():
    acts, level, bands, low, high = _two_instruments()
    plan = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                       silence_db=-60)
    shift = DEFAULT_LOOKAHEAD.stem_shift_frames

    def share_on(ons, onsets):  # switch-ons within 2 frames of the onsets, moved on
        return np.mean([np.abs(onsets + shift - o).min() <= 2 for o in ons])

    low_ch, high_ch = _switch_ons(plan.states[:, 5]), _switch_ons(plan.states[:, 2])
    assert len(low_ch) > 30 and len(high_ch) > 30
    assert share_on(low_ch, low) > 0.9 and share_on(low_ch, high) < 0.5
    assert share_on(high_ch, high) > 0.9 and share_on(high_ch, low) < 0.5
    deferred, _ = _guard_defers(plan.states)
    assert deferred == 0
    # Where an instrument is loud its channel is mostly on.
    n = len(acts)
    assert plan.states[: n // 2, 5].mean() > plan.states[n // 2:, 5].mean() + 0.3
    assert plan.states[n // 2:, 2].mean() > plan.states[: n // 2, 2].mean() + 0.3


def test_a_legato_song_or_an_inf_threshold_plans_without_channel_accents():
    acts, level, bands, *_ = _two_instruments()
    never = replace(DEFAULT_LOOKAHEAD, stem_peakiness=float("inf"))
    default = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                          silence_db=-60)
    off = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                      silence_db=-60, params=never)
    assert not np.array_equal(default.states, off.states)
    # Above the song's peakiness: the accents of pi/show/accents.py, as with inf.
    high = replace(DEFAULT_LOOKAHEAD, stem_peakiness=1e6)
    np.testing.assert_array_equal(
        plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                    silence_db=-60, params=high).states, off.states)
    # Without mel bands (only their onset strengths) there is nothing to follow either.
    from pi.show.lookahead import onset_strength
    no_bands = plan_states(activations=acts, level_db=level, bands_db=None, dt=DT,
                           silence_db=-60, onset_envelope=onset_strength(bands_db=bands),
                           accent_envelope=onset_strength(
                               bands_db=bands, span=DEFAULT_LOOKAHEAD.onset_span_frames))
    np.testing.assert_array_equal(no_bands.states, off.states)


def test_the_channel_to_group_match_is_the_best_permutation():
    """The dynamic programme finds the assignment a search of all k! permutations finds."""
    import itertools

    from pi.show.stem_accents import _best_assignment

    rng = np.random.default_rng(4)
    for k in (1, 2, 5, 8):
        for _ in range(10):
            corr = rng.normal(size=(k, k))
            perms = np.array(list(itertools.permutations(range(k))))
            best = perms[int(np.argmax(corr[np.arange(k), perms].sum(axis=1)))]
            np.testing.assert_array_equal(_best_assignment(corr.tolist()), best)


@pytest.mark.parametrize("n", [0, 1, 2, BLOCK, BLOCK + 1, 2 * BLOCK + 37])
def test_one_pass_over_the_bands_gives_the_onset_strength_and_band_signals_exactly(n):
    bands = np.random.default_rng(n).normal(-50, 20, (n, 128)).astype(np.float32)
    envelope, (flux, level) = song_mel_signals(bands_db=bands, k=8)
    ref_flux, ref_level = song_band_signals(bands_db=bands, k=8)
    assert np.array_equal(envelope, onset_strength(bands_db=bands))
    assert np.array_equal(flux, ref_flux) and np.array_equal(level, ref_level)


def _accents_in_one_strongest_first_pass(*, sections, peaks, strength, landing, dt, hold,
                                         max_frames, max_per_s, window_s):
    """plan_channel_accents as first written: every channel's peaks in one order."""
    out = np.array(sections, bool)
    n, k = out.shape
    budget = SwitchBudget(k=k, dt=dt, hold=hold, max_per_s=max_per_s, window_s=window_s)
    for c in range(k):
        budget.add(c, (np.flatnonzero(out[1:, c] != out[:-1, c]) + 1).tolist())
    land = np.flatnonzero(landing)
    order = sorted(((float(s), c, int(p)) for c in range(k)
                    for s, p in zip(strength[c], peaks[c])), key=lambda x: -x[0])
    for _, c, p in order:
        if p <= hold or p + hold >= n:
            continue
        col = out[:, c]
        if not col[p] and not col[p - 1]:
            ends = land[np.searchsorted(land, p + hold):
                        np.searchsorted(land, p + max_frames, side="right")].tolist()
            for r in ends + [p + hold]:
                if r < n and not col[p:r + 1].any() and budget.fits(c, [p, r]):
                    col[p:r] = True
                    budget.add(c, [p, r])
                    break
        elif col[p] and col[p - 1]:
            starts = land[np.searchsorted(land, p - max_frames):
                          np.searchsorted(land, p - hold, side="right")][::-1].tolist()
            for b in starts + [p - hold]:
                if b >= 1 and col[b - 1:p].all() and budget.fits(c, [b, p]):
                    col[b:p] = False
                    budget.add(c, [b, p])
                    break
    return out


@pytest.mark.parametrize("seed", range(6))
def test_channels_planned_one_by_one_equal_one_strongest_first_pass(seed):
    # A channel's accents touch only its own column and budget (equal strengths included).
    rng = np.random.default_rng(seed)
    n, k = 600, 8
    sections = np.cumsum(rng.random((n, k)) < 0.03, axis=0) % 2 == 1
    peaks = [np.sort(rng.choice(n, size=60, replace=False)) for _ in range(k)]
    kw = dict(sections=sections, peaks=peaks,
              strength=[np.round(rng.random(60) * 4) / 4 for _ in range(k)],
              landing=rng.random(n) < 0.2, dt=DT, hold=int(rng.integers(2, 12)),
              max_frames=int(rng.integers(5, 30)), max_per_s=int(rng.integers(1, 4)),
              window_s=1.0)
    assert np.array_equal(plan_channel_accents(**kw), _accents_in_one_strongest_first_pass(**kw))
