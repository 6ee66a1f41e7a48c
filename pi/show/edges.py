"""Editing whole songs' relay states: a centred moving average, on/off edges moved to onsets,
and runs too short for a relay merged away. Shared by the look-ahead planner
(pi/show/lookahead.py) and its channel accents (pi/show/stem_accents.py).

Pure keyword-only numpy functions.
"""
from __future__ import annotations

import numpy as np


def moving_average(*, x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0, over ``width`` rows (odd; shrunk at the ends).

    Parameters
    ----------
    x : np.ndarray [shape=(n,) or (n, k)]
    width : int  rows averaged; 1 returns a float64 copy

    Returns
    -------
    np.ndarray, float64, the shape of ``x``
    """
    x = np.asarray(x, np.float64)
    if width <= 1 or len(x) == 0:
        return x.copy()
    flat = x.reshape(len(x), -1)
    # The running sums and the result written in place: a song's (n, 8) float64 arrays are
    # 1.3 MB each, and this runs at a plan's peak of memory.
    c = np.empty((len(x) + 1, flat.shape[1]))
    c[0] = 0.0
    np.cumsum(flat, axis=0, out=c[1:])
    n, half = len(x), width // 2
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    out = c[hi]
    out -= c[lo]
    out /= (hi - lo)[:, None]
    return out.reshape(x.shape)


def snap_edges(*, want: np.ndarray, onsets: np.ndarray, max_move: int,
               min_gap: int = 1) -> np.ndarray:
    """Move every on/off edge of ``want`` to the nearest onset within ``max_move`` frames
    (or leave it), keeping each channel's edges in order: an edge that would land less
    than ``min_gap`` after the one before it cancels with it, unless no later onset is
    within its reach;
    then it goes to its own frame or ``min_gap`` after the one before, whichever is later,
    so that a lone burst (a click after silence) still lights its lamp from its onset.

    Parameters
    ----------
    want : np.ndarray [shape=(n, k)] bool
    onsets : np.ndarray [shape=(m,)] int, sorted frame indices

    Returns
    -------
    np.ndarray [shape=(n, k)] bool
    """
    want = np.asarray(want, bool)
    n, k = want.shape
    if n == 0:
        return want.copy()
    change = want[1:] != want[:-1]
    chan, row = np.nonzero(change.T)  # channel-major, so each channel's edges are in order
    edge = row + 1
    moved = edge.copy()
    if len(onsets) and len(edge):
        j = np.searchsorted(onsets, edge)
        before = onsets[np.maximum(j - 1, 0)]
        after = onsets[np.minimum(j, len(onsets) - 1)]
        nearest = np.where(np.abs(after - edge) < np.abs(edge - before), after, before)
        moved = np.where(np.abs(nearest - edge) <= max_move, nearest, edge)
    # Order, channel by channel: an edge that would land less than min_gap after the one
    # before it cancels with it (a short burst among onsets is noise), unless no later
    # onset is in its reach: then the burst is all there is (a click after silence) and
    # it keeps min_gap frames.
    start = np.r_[True, chan[1:] != chan[:-1]] if len(chan) else np.zeros(0, bool)
    if (np.r_[False, moved[1:] < moved[:-1] + min_gap] & ~start).any():
        prev = 0
        for e in range(len(moved)):
            if not start[e] and moved[e] < prev + min_gap:
                j = int(np.searchsorted(onsets, prev + min_gap)) if len(onsets) else 0
                later = j < len(onsets) and onsets[j] <= edge[e] + max_move
                moved[e] = prev if later else max(edge[e], prev + min_gap)
            prev = moved[e]
    toggles = np.zeros((n + 1, k), np.int64)
    np.add.at(toggles, (np.minimum(moved, n), chan), 1)
    return want[0] ^ (np.cumsum(toggles[:n], axis=0) % 2).astype(bool)


def merge_short_runs(*, states: np.ndarray, min_frames: int) -> np.ndarray:
    """Each run shorter than ``min_frames`` (but the first) takes the state of the run before
    it, in order, so no run between two changes is shorter.

    Parameters
    ----------
    states : np.ndarray [shape=(n, k)] bool

    Returns
    -------
    np.ndarray [shape=(n, k)] bool, a copy
    """
    out = np.array(states, bool)
    n = len(out)
    for c in range(out.shape[1]):
        s = out[:, c]
        bounds = np.concatenate([[0], np.flatnonzero(s[1:] != s[:-1]) + 1, [n]])
        short = np.flatnonzero(np.diff(bounds) < min_frames)
        for r in short[short > 0].tolist():
            s[bounds[r]:bounds[r + 1]] = s[bounds[r] - 1]
    return out
