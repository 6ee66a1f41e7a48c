"""The look-ahead show's accents (pi/show/accents.py): blinks on the onsets, as many as the
onset is strong, both edges on onset frames, inside the relay guard's budget."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from pi.show.accents import demand_counts, plan_accents
from pi.show.lookahead import DEFAULT_LOOKAHEAD, hysteresis_states, plan_states
from pi.show.pipeline import make_show
from pi.show.plans import show_key
from pi.show.relay_rules import ToggleGuard

DT = 512 / 44100
HOLD = 10  # frames: 116 ms


def _changes(states):
    """(frame, channel) of every change, the first row against all-off."""
    prev = np.vstack([np.zeros((1, states.shape[1]), bool), states[:-1]])
    return np.argwhere(states != prev)


def test_demand_scales_with_the_onset_strength_and_respects_gate_and_shift():
    env = np.full(1000, 0.1)
    spikes = np.arange(20, 980, 48)
    env[spikes] = np.linspace(0.5, 6.0, len(spikes))  # weak to strong
    allowed = np.ones(1000, bool)
    allowed[spikes[-1] - 5:] = False  # the strongest is where the gate is closed
    want = demand_counts(envelope=env, allowed=allowed, shift=3, threshold_pct=90,
                         per_frame=0.05, max_changes=6)
    assert set(np.flatnonzero(want).tolist()) <= set((spikes + 3).tolist())
    got = want[spikes[:-1] + 3]
    assert np.corrcoef(got, env[spikes[:-1]])[0, 1] > 0.9
    assert got[:3].mean() + 3 < got[-3:].mean() and got.max() <= 6
    assert want[spikes[-1] + 3] == 0 and want[:20].sum() == 0  # the floor asks for nothing
    assert abs(want.sum() - 0.05 * allowed.sum()) <= 6  # the rate asked for


def test_hysteresis_holds_a_channel_between_the_two_thresholds():
    z = np.array([0.1, 0.3, 0.1, -0.1, -0.3, 0.1, 0.3])[:, None]
    assert hysteresis_states(z=z, width=0.2)[:, 0].tolist() == [
        True, True, True, True, False, False, True]


def _sections_and_demand(n=3000, k=8, seed=4):
    rng = np.random.default_rng(seed)
    sections = np.zeros((n, k), bool)
    for c in range(k):  # a few long sections per channel
        edges = np.sort(rng.choice(np.arange(100, n - 100, 50), size=4, replace=False))
        for a, b in zip(edges[::2], edges[1::2]):
            sections[a:b, c] = True
    env = rng.exponential(0.1, n)
    env[::25] += rng.uniform(0.5, 3.0, size=len(env[::25]))  # an onset every 25 frames
    gate = np.ones(n, bool)
    want = demand_counts(envelope=env, allowed=gate, shift=0, threshold_pct=80,
                         per_frame=0.15, max_changes=6)
    z = rng.normal(size=(n, k))
    return sections, z, gate, want, env


def test_blinks_land_on_demand_frames_hold_and_the_guard_never_defers():
    sections, z, gate, want, env = _sections_and_demand()
    edges = np.vstack([sections[:1], sections[1:] != sections[:-1]])
    out = plan_accents(sections=sections, z=z, gate=gate, demand=want, dt=DT, hold=HOLD,
                       max_frames=26, max_per_s=3, window_s=1.0)
    changes = _changes(out)
    blink = ~edges[changes[:, 0], changes[:, 1]]
    assert blink.sum() > 100  # there are accents
    # Every blink edge falls on a frame that asked for changes, and no frame gets more
    # blink edges than it asked for.
    frames = changes[blink, 0]
    assert (want[frames] > 0).all()
    assert (np.bincount(frames, minlength=len(want)) <= want).all()
    # Strong onsets move more channels than weak ones.
    per_frame = np.bincount(changes[:, 0], minlength=len(want))
    onset = np.arange(0, len(env), 25)
    strong = onset[env[onset] > np.percentile(env[onset], 75)]
    weak = onset[env[onset] < np.percentile(env[onset], 25)]
    assert per_frame[strong].mean() > 2 * per_frame[weak].mean() + 0.5
    # Each blink is at least the hold and at most the longest blink, and comes back.
    for c in range(out.shape[1]):
        diff = np.r_[False, out[:, c] != sections[:, c], False]
        starts = np.flatnonzero(diff[1:] & ~diff[:-1])
        ends = np.flatnonzero(~diff[1:] & diff[:-1])
        blinks = ~edges[starts, c]  # the others: a section edge the budget held back
        assert blinks.sum() > 5
        length = (ends - starts)[blinks]
        assert (length >= HOLD).all() and (length <= 26).all()
    # Where no demand frame is in reach, a blink may end on a lesser onset instead.
    landing = np.zeros(len(want), bool)
    landing[5::25] = True
    wider = plan_accents(sections=sections, z=z, gate=gate, demand=want, dt=DT, hold=HOLD,
                         max_frames=26, max_per_s=3, window_s=1.0, landing=landing)
    more = _changes(wider)
    more = more[~edges[more[:, 0], more[:, 1]], 0]
    assert len(more) > len(frames) and ((want[more] > 0) | landing[more]).all()
    # Duty still follows the sections.
    assert (out == sections).mean() > 0.8
    guard = ToggleGuard(out.shape[1], max_per_s=3, hold_s=0.10)
    guarded, _ = guard.apply(out, np.arange(len(out)) * DT)
    assert guard.deferred == 0
    np.testing.assert_array_equal(guarded, out)


def test_a_planned_song_passes_the_guard_untouched_and_switches_on_its_onsets():
    rng = np.random.default_rng(0)
    n = 4000
    acts = np.cumsum(rng.normal(size=(n, 8)), axis=0)  # slow wanders: sections
    bands = rng.normal(-40, 3, size=(n, 128))
    strength = rng.uniform(5, 30, size=len(range(0, n, 20)))
    bands[::20] += strength[:, None]  # an onset every 20 frames, of varied strength
    level = np.full(n, -20.0)
    # Blinks end on demand frames only (no lesser onsets: this noise has no such thing).
    params = replace(DEFAULT_LOOKAHEAD, onset_shift_frames=0, accent_land_pct=100.0)
    plan = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                       silence_db=-60.0, min_hold_s=0.10, params=params)
    guard = ToggleGuard(8, max_per_s=3, hold_s=0.10)
    guarded, _ = guard.apply(plan.states, np.arange(n) * DT)
    assert guard.deferred == 0
    np.testing.assert_array_equal(guarded, plan.states)
    per_frame = np.bincount(_changes(plan.states)[:, 0], minlength=n)
    # Each onset's changes: on its frame, or within the two frames either side over which
    # the planner spreads its strength (accent_soften).
    near = np.convolve(per_frame, np.ones(5), mode="same")[::20]
    on_onset = near.sum() / per_frame.sum()
    assert on_onset > 0.9, f"{on_onset:.2f} of the changes fall on onsets"
    # The strongest onsets move more channels than the weakest.
    order = np.argsort(strength)
    assert near[order[-50:]].mean() > near[order[:50]].mean() + 0.5
    quiet = replace(params, accent_rate=0.0)
    sections = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                           silence_db=-60.0, min_hold_s=0.10, params=quiet)
    assert per_frame.sum() > 1.5 * len(_changes(sections.states))  # the accents add changes


def test_accent_settings_are_part_of_the_plan_cache_key():
    show = make_show(mapper="bands")
    assert show_key(show) != show_key(show, replace(DEFAULT_LOOKAHEAD, accent_rate=2.0))
    assert show_key(show) != show_key(show, replace(DEFAULT_LOOKAHEAD, hysteresis=0.3))


def test_the_switch_budget_is_the_guards_rule_for_switches_in_any_order():
    """SwitchBudget.fits against the rule itself over all of a channel's switches: no two
    closer than hold, no max_per_s + 1 within a window; in time order (plan_accents) and in
    any order (the channel accents), for a relay's 3 a second and an SSR's 20."""
    from pi.show.relay_rules import SwitchBudget

    dt, hold = 512 / 44100, 9

    def allowed(times, max_per_s):
        times = sorted(times)
        return (all(b - a >= hold for a, b in zip(times, times[1:]))
                and all((times[i + max_per_s] - times[i]) * dt >= 1.0 + 1e-6
                        for i in range(len(times) - max_per_s)))

    rng = np.random.default_rng(0)
    for max_per_s in (3, 20):
        for in_order in (True, False):
            budget = SwitchBudget(k=1, dt=dt, hold=hold, max_per_s=max_per_s, window_s=1.0)
            taken, t = [], 0
            for _ in range(400):
                t += int(rng.integers(1, 40))
                new = [t] if in_order else sorted(
                    rng.choice(20000, size=int(rng.integers(1, 3)), replace=False).tolist())
                fits = budget.fits(0, new)
                assert fits == allowed(taken + new, max_per_s), (taken, new)
                if fits:
                    budget.add(0, new)
                    taken += new
            assert len(taken) > 20
