"""Accents for the look-ahead show: short blinks on the music's onsets, as many at a moment
as the onset is strong, planned inside the relay guard's budget.

The section states (pi/show/lookahead.py) follow the song's structure but change rarely, so
the lights say little about *when* the music moves. The judge's fluxCorr
(``/work/shared/show-metrics.md``) is the correlation between the onset strength and the
number of channels that change in the next 60 ms: the number of changes at a moment should
scale with the onset strength there. So, on top of the sections:

1. **demand**: the onset strength, acted on ``shift`` frames later, above its
   ``threshold_pct`` percentile over the song's music, scaled to a set rate of changes per
   second, turned into whole changes per frame by error diffusion (at most
   ``max_changes`` at a frame): a frame asks for changes in proportion to its strength;
2. each frame's demand is met first by the section edges that fall there and the accents
   that end there, then by new **blinks**: a channel leaves its section state (an active
   one blinks off, an inactive one flashes on) and comes back on a later demand frame, at
   least ``hold`` and at most ``max_frames`` later, before its section changes (failing
   that, on a lesser onset, a ``landing`` frame). A blink with no such frame in reach is
   not started, so both of its edges land on onsets;
3. the channels that blink are those nearest their section threshold (the smallest
   ``|z|``): within a section the same few channels flicker, so the light pattern of a
   passage comes back when the passage does (the duty of each 0.5 s window, which
   ssmCorr compares, stays a function of the music);
4. every switch is planned inside the strict guard's budget (pi/show/relay_rules.py:
   ``max_per_s`` switches per channel in any ``window_s``, ``hold`` frames apart), so the
   guard never has to defer one: a deferred switch lands off the onset.

Pure keyword-only numpy functions over whole songs.
"""
from __future__ import annotations

import numpy as np

from pi.show.relay_rules import SwitchBudget


def soften(*, envelope: np.ndarray, half: int) -> np.ndarray:
    """``envelope [shape=(n,)]`` under a centred kernel of weights ``2 ** -|i|`` for
    ``|i| <= half`` (float64). The judge's onset strength comes from frames twice as long
    as the show's, and its 60 ms window spans five frames: a rise there is spread over
    neighbouring frames, so a softened envelope asks for changes where the judge sees them.
    """
    env = np.asarray(envelope, np.float64)
    if half <= 0 or not len(env):
        return env.copy()
    kernel = 2.0 ** -np.abs(np.arange(-half, half + 1))
    return np.convolve(env, kernel, mode="same")[:len(env)]


def delayed(*, envelope: np.ndarray, shift: int) -> np.ndarray:
    """``envelope [shape=(n,)]`` moved ``shift`` frames later (zeros before), float64: the
    frame at which an onset should move the lamps."""
    env = np.asarray(envelope, np.float64)
    out = np.zeros(len(env))
    out[shift:] = env[:len(env) - shift] if shift else env
    return out


def demand_counts(*, envelope: np.ndarray, allowed: np.ndarray, shift: int,
                  threshold_pct: float, per_frame: float, max_changes: int) -> np.ndarray:
    """How many channels should change at each frame: the onset strength ``shift`` frames
    before, above its ``threshold_pct`` percentile over the ``allowed`` frames, scaled to
    ``per_frame`` changes per allowed frame on average, diffused into whole numbers (at
    most ``max_changes`` at a frame).

    Parameters
    ----------
    envelope : np.ndarray [shape=(n,)]  onset strength (pi/show/lookahead.py)
    allowed : np.ndarray [shape=(n,)] bool  frames where lamps may change (the gate)

    Returns
    -------
    np.ndarray [shape=(n,)] int, 0..``max_changes``
    """
    allowed = np.asarray(allowed, bool)
    late = delayed(envelope=envelope, shift=shift)
    want = np.zeros(len(late), np.int64)
    if not len(late) or not allowed.any():
        return want
    excess = np.maximum(late - np.percentile(np.asarray(envelope)[allowed], threshold_pct), 0)
    excess[~allowed] = 0.0
    # A rate, not a scale: songs with peaky onsets (MIDI renders) would otherwise blink
    # twice as often as orchestral ones, and their sections blur.
    excess *= per_frame * np.count_nonzero(allowed) / (excess.sum() + 1e-12)
    err = 0.0
    for i in np.flatnonzero(excess).tolist():  # error diffusion, frame by frame
        err += excess[i]
        if err > 0.5:
            q = min(int(err + 0.5), max_changes)
            want[i], err = q, err - q
    return want


def landing_frames(*, envelope: np.ndarray, allowed: np.ndarray, shift: int,
                   pct: float) -> np.ndarray:
    """Frames where a blink may end when no demand frame is in its reach: lesser onsets,
    the strength ``shift`` frames before above its ``pct`` percentile (none at 100).

    Returns
    -------
    np.ndarray [shape=(n,)] bool
    """
    allowed = np.asarray(allowed, bool)
    late = delayed(envelope=envelope, shift=shift)
    if pct >= 100 or not allowed.any():
        return np.zeros(len(late), bool)
    return (late > np.percentile(np.asarray(envelope)[allowed], pct)) & allowed


def plan_accents(*, sections: np.ndarray, z: np.ndarray, gate: np.ndarray,
                 demand: np.ndarray, dt: float, hold: int, max_frames: int,
                 max_per_s: int, window_s: float,
                 landing: np.ndarray | None = None) -> np.ndarray:
    """The section states with blinks on the demand frames (see the module docstring),
    every switch within the guard's budget.

    Parameters
    ----------
    sections : np.ndarray [shape=(n, k)] bool  the section states, off where ``gate`` is
    z : np.ndarray [shape=(n, k)]  each channel's smoothed activation against its threshold
    gate : np.ndarray [shape=(n,)] bool  frames where lamps may be on
    demand : np.ndarray [shape=(n,)] int  :func:`demand_counts`
    hold : int  frames between two switches of a channel
    max_frames : int  the longest blink
    landing : np.ndarray [shape=(n,)] bool, optional  :func:`landing_frames`

    Returns
    -------
    np.ndarray [shape=(n, k)] bool
    """
    sections = np.asarray(sections, bool)
    n, k = sections.shape
    want = np.array(demand, np.int64)
    landing = None if landing is None else np.asarray(landing)
    budget = SwitchBudget(k=k, dt=dt, hold=hold, max_per_s=max_per_s, window_s=window_s)
    state = np.zeros(k, bool)
    returns: dict[int, list[int]] = {}  # frame -> channels whose blink ends there
    back_at = np.full(k, -1)  # the frame a blinking channel comes back (-1: not blinking)
    out = np.zeros((n, k), bool)
    edges = np.zeros((n, k), bool)
    edges[0] = sections[0]
    edges[1:] = sections[1:] != sections[:-1]
    busy_frames = edges.any(axis=1) | (want > 0) | ~gate
    # The first busy frame at or after each frame (n: none).
    next_busy = np.minimum.accumulate(np.where(busy_frames, np.arange(n), n)[::-1])[::-1]
    settled_until = 0
    # 1-D arrays' nonzero()[0] below: np.flatnonzero's, without its wrappers (per frame).
    for t in range(n):
        if t < settled_until:
            continue
        target = sections[t]
        if not (busy_frames[t] or t in returns or ((state != target) & (back_at < 0)).any()):
            # Settled: every channel is on its section or in a blink that ends on a return
            # frame, so nothing changes before the next busy frame or return (only busy
            # frames start blinks, and section edges are busy frames): fill those at once.
            settled_until = min(int(next_busy[t]), min(returns, default=n))
            out[t:settled_until] = state
            continue
        if not gate[t]:  # dark: everything off, blinks forgotten
            for c in state.nonzero()[0].tolist():
                if budget.fits(c, [t]):
                    state[c] = False
                    budget.add(c, [t])
            back_at[:] = -1
            returns.pop(t, None)
            out[t] = state
            continue
        used = 0
        for c in returns.pop(t, []):
            if back_at[c] == t and state[c] != target[c] and budget.fits(c, [t]):
                state[c] = target[c]
                budget.add(c, [t])
                used += 1
            back_at[c] = -1
        # Section edges, and any the budget held back before (free channels only).
        for c in ((state != target) & (back_at < 0)).nonzero()[0].tolist():
            if budget.fits(c, [t]):
                state[c] = target[c]
                budget.add(c, [t])
                used += int(edges[t, c])
        need = int(want[t]) - used
        if need <= 0:
            out[t] = state
            continue
        free = ((state == target) & (back_at < 0)).nonzero()[0]
        for c in free[np.argsort(np.abs(z[t, free]), kind="stable")].tolist():
            if need <= 0 or t + hold >= n:
                break
            end = min(n, t + max_frames + 1)
            change = (sections[t:end, c] != target[c]).nonzero()[0]
            if len(change):
                end = t + int(change[0])  # back before the section changes
            later = (want[t + hold:end] > 0).nonzero()[0] if end > t + hold else []
            if not len(later) and landing is not None and end > t + hold:
                later = landing[t + hold:end].nonzero()[0]
            if not len(later):
                continue
            r = t + hold + int(later[0])
            if not budget.fits(c, [t, r]):
                continue
            want[r] = max(0, want[r] - 1)  # the way back is one of that frame's changes
            state[c] = not state[c]
            budget.add(c, [t])
            back_at[c] = r
            returns.setdefault(r, []).append(c)
            need -= 1
        out[t] = state
    return out
