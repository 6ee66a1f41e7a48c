"""The relay-safety invariant of the show logic, as a property: whatever the music, a relay
that switched stays in its new state for at least the hold time."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from pi.show.features import DEFAULT_PARAMS, frame_times
from pi.show.mapping import FLUX_LAG, MappingParams, ShowMapper
from pi.show.relay_rules import ChannelOverrides

N_CHANNELS = 8


def _music(rng: np.random.Generator, n: int, *, loudness: float, silences: int):
    """Random dB frames with onsets (jumps) and silent stretches, and activations that
    wander, jump and sometimes sit on the threshold."""
    level = loudness + np.cumsum(rng.normal(0, 2, n)) * 0.2
    level[rng.random(n) < 0.15] += rng.uniform(5, 30)  # onsets
    for _ in range(silences):
        a = int(rng.integers(0, n))
        level[a:a + int(rng.integers(1, 60))] = -100.0  # digital silence
    frames = np.clip(level[:, None] + rng.normal(0, 6, (n, DEFAULT_PARAMS.n_bins)), -100, 0)
    acts = np.cumsum(rng.normal(0, 1, (n, N_CHANNELS)), axis=0) * 0.3
    acts += rng.normal(0, 1, (n, N_CHANNELS)) * rng.uniform(0.1, 3)
    acts[rng.random(n) < 0.05] *= -1  # sudden flips
    return frames.astype(np.float32), acts.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 600), seed=st.integers(0, 2**32 - 1),
       hold_s=st.floats(0.0, 0.6), delay_frames=st.integers(0, 3),
       changes_per_onset=st.floats(0.5, 8.0), idle_change_s=st.floats(0.0, 2.0),
       loudness=st.floats(-90.0, -5.0), silences=st.integers(0, 4),
       invert=st.lists(st.integers(0, N_CHANNELS - 1), unique=True, max_size=3),
       start_s=st.floats(0.0, 1e5))
def test_every_run_between_two_changes_lasts_at_least_the_hold_time(
        n, seed, hold_s, delay_frames, changes_per_onset, idle_change_s, loudness, silences,
        invert, start_s):
    rng = np.random.default_rng(seed)
    frames, acts = _music(rng, n, loudness=loudness, silences=silences)
    params = MappingParams.calibrate(acts[: max(1, n // 3)], delay_frames=float(delay_frames),
                                     changes_per_onset=changes_per_onset,
                                     idle_change_s=idle_change_s)
    mapper = ShowMapper(params, overrides=ChannelOverrides(invert=tuple(invert)),
                        hold_s=hold_s)
    times = start_s + frame_times(n)  # the daemon's show time need not start at 0
    states, _ = mapper.run(acts, frames, times_s=times)

    assert states.shape == (n, N_CHANNELS) and states.dtype == bool
    for c in range(N_CHANNELS):
        changes = times[1:][states[1:, c] != states[:-1, c]]
        runs = np.diff(changes)
        assert (runs >= hold_s - 1e-6).all(), (c, runs.min(), hold_s)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 400), seed=st.integers(0, 2**32 - 1),
       blocks=st.lists(st.integers(1, 5), min_size=1, max_size=8),
       invert=st.lists(st.integers(0, N_CHANNELS - 1), unique=True, max_size=2),
       always_on=st.lists(st.integers(0, N_CHANNELS - 1), unique=True, max_size=1))
def test_a_song_in_blocks_or_frame_by_frame_gives_the_same_show(n, seed, blocks, invert,
                                                                 always_on):
    """The daemon feeds the show logic one or two frames at a time, render whole blocks:
    the states and levels must not depend on that, bit for bit."""
    rng = np.random.default_rng(seed)
    frames, acts = _music(rng, n, loudness=-30.0, silences=2)
    params = MappingParams.calibrate(acts[: max(1, n // 3)], changes_per_onset=4.0)
    overrides = ChannelOverrides(invert=tuple(invert), always_on=tuple(always_on))
    times = frame_times(n)
    whole, whole_levels = ShowMapper(params, overrides=overrides).run(acts, frames,
                                                                      times_s=times)
    mapper, parts, i = ShowMapper(params, overrides=overrides), [], 0
    while i < n:
        k = blocks[len(parts) % len(blocks)]
        parts.append(mapper.run(acts[i:i + k], frames[i:i + k], times_s=times[i:i + k]))
        i += k
    assert np.array_equal(np.concatenate([s for s, _ in parts]), whole)
    assert np.array_equal(np.concatenate([lv for _, lv in parts]), whole_levels)
    stepper = ShowMapper(params, overrides=overrides)
    steps = [stepper.step(acts[j], frames[j], t=times[j]) for j in range(n)]
    assert np.array_equal(np.array(steps), whole)
    assert (whole_levels[whole] > 0).all() and (whole_levels[~whole] == 0).all()


def test_onsets_pick_the_moment_and_each_channels_own_activation_picks_the_channel():
    """Strong onsets twice a second for 12 s. Channel 0's activation rises past its threshold
    at 6 s; the others stay on theirs. Only channel 0 may switch, once, on an onset; lamps
    whose music did not change must not blink with the beat."""
    n = 1040  # 12 s of frames
    times = frame_times(n)
    frames = np.full((n, DEFAULT_PARAMS.n_bins), -30.0, np.float32)
    beat = (np.arange(n) % 43 == 20)  # every 0.5 s
    frames[beat] += 8.0  # a broadband hit: a strong onset (not loud enough to close the gate)
    acts = np.zeros((n, N_CHANNELS), np.float32)
    acts[times >= 6.0, 0] = 5.0
    params = MappingParams(center=np.zeros(N_CHANNELS, np.float32),
                           scale=np.ones(N_CHANNELS, np.float32))
    mapper = ShowMapper(params)
    mapper.onset_log = []
    states, _ = mapper.run(acts, frames, times_s=times)

    assert not states[:, 1:].any()
    switched = np.flatnonzero(np.diff(states[:, 0].astype(int)))
    assert len(switched) == 1 and states[-1, 0]
    on_at = switched[0] + 1  # the first frame lit
    onset_frames = np.flatnonzero(mapper.onset_log)
    assert times[on_at] > 6.0
    # Acted on an onset, shown delay_frames later.
    assert on_at - int(params.delay_frames) in onset_frames


def test_a_channel_stuck_far_from_its_threshold_catches_up_within_seconds():
    """Thresholds adapt over a minute, so that a lamp's duty follows the sections; but a song
    that keeps one channel's activation far below where the training music had it must not
    leave that lamp dark for minutes: after STUCK_S without a change it adapts faster."""
    n = 10340  # 120 s of frames
    times = frame_times(n)
    rng = np.random.default_rng(3)
    frames = np.full((n, DEFAULT_PARAMS.n_bins), -30.0, np.float32)
    frames[np.arange(n) % 43 == 20] += 8.0  # a beat every 0.5 s
    acts = rng.normal(0.0, 0.5, (n, N_CHANNELS)).astype(np.float32)
    acts[:, 0] -= 3.0  # six spreads below its calibrated threshold
    params = MappingParams(center=np.zeros(N_CHANNELS, np.float32),
                           scale=np.ones(N_CHANNELS, np.float32), adapt_s=60.0)
    states, _ = ShowMapper(params).run(acts, frames, times_s=times)
    assert states[times > 60.0, 0].mean() > 0.2
    assert states[times > 60.0, 1:].mean() > 0.2  # the others were never stuck


def test_the_onset_flux_rises_from_lag_frames_before_in_any_blocks():
    """Each frame's flux is the mean rectified rise from FLUX_LAG frames before (None for the
    first FLUX_LAG frames), whether the frames come one by one or in blocks of any size."""
    from pi.show.pipeline import make_show

    bands = np.random.default_rng(0).normal(-40, 10, size=(50, 128)).astype(np.float32)
    whole = make_show(mapper="bands").mapper.block_flux(bands)
    rise = np.maximum(bands[FLUX_LAG:] - bands[:-FLUX_LAG], 0.0).mean(axis=1)
    assert whole[:FLUX_LAG] == [None] * FLUX_LAG
    np.testing.assert_allclose(whole[FLUX_LAG:], rise, rtol=1e-6)
    for sizes in ([1] * 50, [2, 1, 3, 1, 1, 5, 7, 30]):
        mapper, got, start = make_show(mapper="bands").mapper, [], 0
        for size in sizes:
            got += mapper.block_flux(bands[start:start + size])
            start += size
        assert got == whole


def test_frame_signals_and_flux_are_the_textbook_ones_and_the_same_in_any_blocks():
    """The level, the mel bands and the flux are computed in few numpy calls (float32 exp and
    log, flux divided on Python floats): the textbook formulas within float32 rounding, and
    bit for bit the same for a block of any size, as the daemon's 1 or 2 frames and
    render's whole blocks must agree."""
    from pi.show.features import mel_basis

    rng = np.random.default_rng(5)
    frames, acts = _music(rng, 50, loudness=-30.0, silences=1)
    mapper = ShowMapper(MappingParams.calibrate(acts))
    level, bands = mapper.frame_signals(frames)
    power = 10.0 ** (frames.astype(np.float64) / 10.0)
    np.testing.assert_allclose(level, 10 * np.log10(power.sum(axis=1)) + mapper._rms_offset_db,
                               rtol=0, atol=1e-4)
    mel = np.maximum(power @ mel_basis().T, 1e-10)
    np.testing.assert_allclose(bands, 10 * np.log10(mel), rtol=0, atol=1e-4)
    flux = mapper.block_flux(bands)
    lag = FLUX_LAG
    expected = np.maximum(bands[lag:].astype(np.float64) - bands[:-lag], 0).mean(axis=1)
    assert flux[:lag] == [None] * lag
    np.testing.assert_allclose(flux[lag:], expected, rtol=1e-5, atol=1e-6)

    blocks, i = [], 0
    while i < 50:  # blocks of 1, 2 and 3 frames, one after the other
        blocks.append(slice(i, i + 1 + len(blocks) % 3))
        i = blocks[-1].stop
    again = ShowMapper(MappingParams.calibrate(acts))
    for rows in blocks:
        lv, bd = again.frame_signals(frames[rows])
        assert np.array_equal(lv, level[rows]) and np.array_equal(bd, bands[rows])
    assert sum((again.block_flux(bands[rows]) for rows in blocks), []) == flux
