"""The relay-safety invariant of the show logic, as a property: whatever the music, a relay
that switched stays in its new state for at least the hold time."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from pi.show.features import DEFAULT_PARAMS, frame_times
from pi.show.mapping import MappingParams, ShowMapper
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
