"""Plan a whole song's relay states with look-ahead: the show for songs known in advance.

The causal show (pi/show/mapping.py) must decide each frame from the past alone; it tracks each
channel's running median, which keeps every channel near 50% duty whatever the section, so
the lights ignore the song's structure. When the whole song is known before it plays
(playlist mode, ``render``, ``preview``, evaluation), each channel can instead be judged
against the whole song:

1. each channel's activation is smoothed by a *centred* moving average (``smooth_s``): a
   causal average of the same length lags by half of it and blurs the sections;
2. a channel wants to be on while its smoothed activation is above its median over the
   song's music (the frames where step 5 lets lamps be on), with hysteresis (``hysteresis`` standard
   deviations either side), so its duty follows the sections;
3. every on/off edge moves to the nearest onset within ``snap_s``, keeping the edges in
   order (an edge never passes the one before it; two that meet cancel, unless they are a
   lone burst), so the lights change on the beat;
4. runs shorter than ``hold_s`` are merged into the run before them;
5. everything is off after the music ends (:func:`last_music_frame`: the fade-out and
   tail of a song), where the sound is below the silence level, or where nothing loud
   sounded in the last ``quiet_s`` (so the look-ahead never lights a lamp before a sound
   that follows silence). Quiet passages *inside* the song keep their lights: the causal
   show's gate closes 14 dB below the running loud level because it cannot tell a quiet
   verse from the end of a song, and so went dark in every soft passage; its structure
   was lost with it (tuning songs: ssmCorr 0.515 -> 0.585 real, 0.563 -> 0.588 MIDI);
6. on top of these section states, short blinks on the onsets, as many channels at a
   moment as the onset is strong, every switch planned inside the relay guard's budget
   (pi/show/accents.py);
7. or, in a percussive song (its onset strength at least ``stem_peakiness`` times as peaky
   as its median), each channel's own accents instead: its section edges and flashes on the
   onsets of its own group of mel bands, so that a channel follows an instrument
   (pi/show/stem_accents.py).

The onsets are peaks of a librosa-style onset strength (mel power in dB, rectified
frame-to-frame rise, mean over bands) computed from the show's own 1024-sample frames, their
mel power averaged over ``onset_span_frames`` frames (the judge's 2048 samples), and
acted on ``onset_shift_frames`` frames later, which lands the switch inside the judge's
60 ms onset window (see ``/work/shared/show-metrics.md``).

Pure keyword-only numpy functions over whole songs; nothing here keeps state between songs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pi.show.accents import demand_counts, landing_frames, plan_accents, soften
from pi.show.edges import merge_short_runs, moving_average, snap_edges  # noqa: F401 (API)
from pi.show.mapping import brightness
from pi.show import stem_accents
from pi.show.stem_accents import TOP_DB
from pi.show.relay_rules import WINDOW_S

ONSET_BLOCK = 512  # rows of mel bands per step of the onset strength (memory, not result)


@dataclass(frozen=True)
class LookaheadParams:
    """The planner's settings (seconds unless named otherwise)."""

    smooth_s: float = 0.5           # centred moving average of the activations
    hysteresis: float = 0.15        # on above +this, off below -this (standard deviations)
    snap_s: float = 0.25            # an edge moves to the nearest onset at most this far
    onset_ratio: float = 1.5        # a peak must stand this far above its local mean
    onset_mean_s: float = 1.0       # the centred window of that local mean
    onset_shift_frames: int = 3     # frames from an onset's peak to the switch it causes
    # The onsets that snap section edges and place accents come from mel power averaged
    # over this many frames: 3 frames (2048 samples, the judge's frame) rather than 1 put
    # the switches where the judge hears onsets (tuning songs: real fluxCorr +0.025). The
    # channel accents' path keeps 1 frame: its songs' peakiness rule was chosen on it.
    onset_span_frames: int = 3
    hold_s: float = 0.11            # shortest run kept (the relay guard's 0.10 s and a margin)
    # Lamps are dark unless a frame of the last quiet_s came within quiet_db of the song's
    # loud level (its 99th percentile): the smoothing looks ahead, the lamps must not.
    quiet_s: float = 0.3
    quiet_db: float = 40.0
    # Accents (pi/show/accents.py): the onset strength above its accent_pct percentile asks
    # for accent_rate channel changes per channel per second (0: no accents), at most
    # accent_max at once; a blink lasts at most accent_max_s and ends on a frame that asked
    # for changes, else on one whose onset strength is above its accent_land_pct percentile.
    # (60 and 0.9 with the 3-frame onsets, from 80 and 0.6: on the real tuning songs
    # fluxCorr 0.411 -> 0.436 for ssmCorr 0.594 -> 0.575.)
    accent_pct: float = 60.0
    accent_rate: float = 0.9
    accent_max: int = 6
    accent_max_s: float = 0.3
    accent_land_pct: float = 75.0
    accent_soften: int = 2  # frames either side over which the onset strength is spread
    # The music ends at the last frame within end_within_db of the song's median level. The
    # judge's rule says 15 dB of its own 2048-sample RMS; on the show's 1024-sample levels
    # 15 dB ended up to 0.36 s late on the tuning songs (the judge darkens 0.5 s after its
    # end), 13 dB at most 0.10 s late, and earlier only in slow fade-outs.
    end_within_db: float = 13.0
    # Channel accents (pi/show/stem_accents.py), instead of the accents above in a song whose
    # onset strength's 95th percentile is at least stem_peakiness times its median (inf:
    # never): each channel's strongest own peaks, up to stem_rate a second, stem_gap_s
    # apart, stem_ratio above their mean over stem_mean_s, switch it on stem_shift_frames
    # after the peak, for at most stem_max_s; its section edges snap to its own peaks (up
    # to stem_snap_rate a second, stem_snap_gap_s apart).
    stem_peakiness: float = 3.0
    stem_rate: float = 1.5
    stem_gap_s: float = 0.25
    stem_ratio: float = 1.3
    stem_mean_s: float = 1.0
    # 0.25, from 0.2, with the lag-3 group flux: the largest flash that kept the tuning MIDI
    # renders' ssmCorr above 0.57 (fluxCorr 0.448 -> 0.465, ssmCorr 0.587 -> 0.573).
    stem_max_s: float = 0.25
    stem_shift_frames: int = 2
    # 4, from 3, once flashes grew to 0.25 s: more of the section edges on the channel's
    # own peaks (tuning MIDI renders: ssmCorr 0.573 -> 0.584, fluxCorr 0.465 -> 0.460).
    stem_snap_rate: float = 4.0
    stem_snap_gap_s: float = 0.1


DEFAULT_LOOKAHEAD = LookaheadParams()


class Plan(NamedTuple):
    """A planned song: ``states`` ``[shape=(n, k)]`` bool; ``levels`` (same shape, dimmer
    levels in [0, 1]: 0 when off; when on, the :func:`pi.mapping.brightness` of the
    channel's z-score where it switched on); ``onsets`` ``[shape=(m,)]`` the frames at which
    onsets could switch lamps."""

    states: np.ndarray
    levels: np.ndarray
    onsets: np.ndarray


def onset_strength(*, bands_db: np.ndarray, span: int = 1) -> np.ndarray:
    """Spectral-flux onset strength of a whole song's mel bands, as librosa's
    ``onset.onset_strength`` computes it (``power_to_db`` with ``top_db=80``, lag-1 rise,
    half-wave rectified, mean over bands), without librosa's centring shift: value ``i`` is
    the rise from frame ``i - 1`` to frame ``i`` (0 for the first frame).

    Parameters
    ----------
    bands_db : np.ndarray [shape=(n_frames, n_mels)]  mel power in dB

    Returns
    -------
    np.ndarray [shape=(n_frames,)] float64
    """
    out = np.zeros(len(bands_db))
    if len(bands_db) < 2:
        return out
    floor = float(np.max(bands_db)) - TOP_DB
    # In blocks of rows (each block overlapping the last row of the one before): a whole
    # song's float64 temporaries would cost 60 MB for 4 minutes (a block, 0.5 MB each); the
    # numbers are the same.
    for start in range(1, len(bands_db), ONSET_BLOCK):
        first = max(start - span, 0)  # the rows the block's first span needs
        db = np.asarray(bands_db[first:start + ONSET_BLOCK], np.float64)
        if span > 1:
            db = _span_db(db, span=span)[start - 1 - first:]
        db = np.maximum(db, floor)
        out[start:start + ONSET_BLOCK] = np.maximum(np.diff(db, axis=0), 0.0).mean(axis=1)
    return out


def _span_db(db: np.ndarray, *, span: int) -> np.ndarray:
    """Each row's mel power averaged with the ``span - 1`` rows before it (fewer at the
    start), in dB: the bands of one frame ``span - 1`` hops longer, ending where row i ends."""
    power = np.power(10.0, db / 10.0)
    total = power.copy()
    for lag in range(1, span):
        total[lag:] += power[:-lag]
    count = np.minimum(np.arange(1, len(db) + 1), span)[:, None]
    return 10.0 * np.log10(np.maximum(total / count, 1e-10))


def pick_onsets(*, envelope: np.ndarray, allowed: np.ndarray, ratio: float,
                mean_frames: int, shift_frames: int) -> np.ndarray:
    """Frames at which onsets switch lamps: local maxima of ``envelope`` that stand ``ratio``
    times above its centred mean over ``mean_frames``, where ``allowed``, moved on by
    ``shift_frames``.

    Parameters
    ----------
    envelope : np.ndarray [shape=(n,)]  onset strength
    allowed : np.ndarray [shape=(n,)] bool  frames where an onset may count (gate open)

    Returns
    -------
    np.ndarray [shape=(n_onsets,)] int, sorted frame indices
    """
    env = np.asarray(envelope, np.float64)
    if len(env) < 3:
        return np.zeros(0, int)
    r = env / (moving_average(x=env, width=mean_frames) + 1e-6)
    peak = (r > ratio) & allowed
    peak[1:] &= r[1:] >= r[:-1]
    peak[:-1] &= r[:-1] >= r[1:]
    idx = np.flatnonzero(peak) + int(shift_frames)
    return idx[(idx >= 0) & (idx < len(env))]


def hysteresis_states(*, z: np.ndarray, width: float) -> np.ndarray:
    """On from where ``z`` rises above ``width`` until it falls below ``-width``; before
    either, on where ``z[0] > 0``.

    Parameters
    ----------
    z : np.ndarray [shape=(n, k)]

    Returns
    -------
    np.ndarray [shape=(n, k)] bool
    """
    z = np.asarray(z, np.float64)
    up, down = z > width, z < -width
    # Row numbers in int32, accumulated in place: half the memory of int64 at a plan's peak
    # (a song has far fewer than 2**31 frames).
    last = np.where(up | down, np.arange(len(z), dtype=np.int32)[:, None], np.int32(-1))
    np.maximum.accumulate(last, axis=0, out=last)
    seen = last >= 0
    np.maximum(last, 0, out=last)
    crossed = np.take_along_axis(up, last, axis=0)
    return np.where(seen, crossed, z[:1] > 0)


def recently_loud(*, level_db: np.ndarray, below_db: float, frames: int) -> np.ndarray:
    """Whether any of the last ``frames`` frames (this one included) was within
    ``below_db`` of the song's loud level, the 99th percentile of ``level_db [shape=(n,)]``.

    Returns
    -------
    np.ndarray [shape=(n,)] bool
    """
    level = np.asarray(level_db, np.float64)
    if not len(level):
        return np.zeros(0, bool)
    loud = (level > np.percentile(level, 99) - below_db).astype(np.int64)
    count = np.concatenate([[0], np.cumsum(loud)])
    idx = np.arange(len(level))
    return count[idx + 1] - count[np.maximum(idx + 1 - frames, 0)] > 0


def last_music_frame(*, level_db: np.ndarray, within_db: float,
                     floor_db: float = -80.0) -> int:
    """The last frame whose level is within ``within_db`` of the song's median level (over
    the frames above ``floor_db``), or -1 if none is above it: where the music ends and
    only its fade-out, reverb or silence follows. The judge's music end
    (``/work/shared/show-metrics.md``) is the same rule on its own frames.

    Parameters
    ----------
    level_db : np.ndarray [shape=(n,)]  each frame's RMS level in dBFS
    """
    level = np.asarray(level_db, np.float64)
    heard = level[level > floor_db]
    if not heard.size:
        return -1
    within = np.flatnonzero(np.abs(level - np.median(heard)) <= within_db)
    return int(within[-1]) if within.size else -1


def music_gate(*, level_db: np.ndarray, silence_db: float, within_db: float) -> np.ndarray:
    """Frames where lamps may be on: above ``silence_db`` and not after
    :func:`last_music_frame`.

    Returns
    -------
    np.ndarray [shape=(n,)] bool
    """
    level = np.asarray(level_db, np.float64)
    gate = level > silence_db
    gate[last_music_frame(level_db=level, within_db=within_db) + 1:] = False
    return gate


def plan_states(*, activations: np.ndarray, level_db: np.ndarray, bands_db: np.ndarray | None,
                dt: float, silence_db: float, min_hold_s: float = 0.0,
                max_per_s: int = 3, params: LookaheadParams = DEFAULT_LOOKAHEAD,
                onset_envelope: np.ndarray | None = None,
                accent_envelope: np.ndarray | None = None,
                band_signals: tuple[np.ndarray, np.ndarray] | None = None) -> Plan:
    """A whole song's relay states and dimmer levels, planned with look-ahead (see the
    module docstring).

    Parameters
    ----------
    activations : np.ndarray [shape=(n, k)]  the encoder's (or the bands') activations
    level_db : np.ndarray [shape=(n,)]  each frame's RMS level in dBFS
    bands_db : np.ndarray [shape=(n, n_mels)]  each frame's mel power in dB, or None with
        ``onset_envelope``
    dt : float  seconds between frames
    silence_db : the silence level (pi/show/mapping.py ``MappingParams``; config
        ``show.silence_db``)
    min_hold_s : a hold the caller requires (the config's); the planner holds at least
        ``params.hold_s``
    max_per_s : the relay guard's switches per channel per second, planned within
    onset_envelope : np.ndarray [shape=(n,)]  :func:`onset_strength` of ``bands_db``, when
        the caller computed it already (render does, to free a song's mel bands first)
    accent_envelope : np.ndarray [shape=(n,)]  likewise, :func:`onset_strength` of
        ``bands_db`` with ``span=params.onset_span_frames`` (without it or ``bands_db``,
        ``onset_envelope`` places the accents too)
    band_signals : (flux, level), each [shape=(n, k)]:
        :func:`pi.show.stem_accents.song_band_signals` of
        ``bands_db``, likewise; without them or ``bands_db`` there are no channel accents

    Returns
    -------
    :class:`Plan`
    """
    acts = np.asarray(activations, np.float64)
    n, k = acts.shape
    if n == 0:
        return Plan(np.zeros((0, k), bool), np.zeros((0, k)), np.zeros(0, int))
    gate = music_gate(level_db=level_db, silence_db=silence_db, within_db=params.end_within_db)
    gate &= recently_loud(level_db=level_db, below_db=params.quiet_db,
                          frames=max(1, int(params.quiet_s / dt)))
    smooth = moving_average(x=acts, width=int(params.smooth_s / dt) | 1)
    # A song's (n, k) float64 arrays are 1.3 MB each for 4 minutes: each is let go as soon
    # as it is used, and z is made in place (the plan's peak of memory is just below).
    del acts
    music = smooth[gate] if np.count_nonzero(gate) > 10 else smooth
    z = smooth - np.median(music, axis=0)
    z /= music.std(axis=0) + 1e-6
    del music
    envelope = onset_strength(bands_db=bands_db) if onset_envelope is None else onset_envelope
    own = None
    if np.isfinite(params.stem_peakiness):
        own = stem_accents.own_onsets(smooth=smooth, gate=gate, envelope=envelope,
                                      bands_db=bands_db, band_signals=band_signals, dt=dt,
                                      params=params)
    del smooth
    if own is None and accent_envelope is not None:
        envelope = accent_envelope
    elif own is None and params.onset_span_frames > 1 and bands_db is not None:
        envelope = onset_strength(bands_db=bands_db, span=params.onset_span_frames)
    onsets = pick_onsets(envelope=envelope, allowed=gate,
                         ratio=params.onset_ratio,
                         mean_frames=int(params.onset_mean_s / dt) | 1,
                         shift_frames=params.onset_shift_frames)
    hold = max(params.hold_s, min_hold_s)
    hold_frames = int(np.ceil(hold / dt - 1e-9))
    want = hysteresis_states(z=z, width=params.hysteresis)
    if own is not None:
        states = stem_accents.plan_own(want=want, own=own, z=z, gate=gate, envelope=envelope,
                                       dt=dt, hold_frames=hold_frames, max_per_s=max_per_s,
                                       params=params)
        return Plan(states, _levels(states=states, z=z), onsets)
    states = snap_edges(want=want, onsets=onsets, max_move=int(round(params.snap_s / dt)),
                        min_gap=hold_frames)
    states &= gate[:, None]
    states = merge_short_runs(states=states, min_frames=hold_frames)
    soft = soften(envelope=envelope, half=params.accent_soften)
    demand = demand_counts(envelope=soft, allowed=gate, shift=params.onset_shift_frames,
                           threshold_pct=params.accent_pct,
                           per_frame=params.accent_rate * k * dt, max_changes=params.accent_max)
    landing = landing_frames(envelope=soft, allowed=gate, shift=params.onset_shift_frames,
                             pct=params.accent_land_pct)
    states = plan_accents(sections=states, z=z, gate=gate, demand=demand, dt=dt,
                          hold=hold_frames, max_frames=int(round(params.accent_max_s / dt)),
                          max_per_s=max_per_s, window_s=WINDOW_S, landing=landing)
    return Plan(states, _levels(states=states, z=z), onsets)


def _levels(*, states: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Each on-run at the brightness of the z-score at its first frame."""
    n = len(states)
    start = states.copy()
    start[1:] &= ~states[:-1]
    # int32 row numbers and in-place steps (memory: this runs at a plan's peak).
    first = np.where(start, np.arange(n, dtype=np.int32)[:, None], np.int32(0))
    np.maximum.accumulate(first, axis=0, out=first)
    latched = brightness(np.take_along_axis(z, first, axis=0))
    latched[~states] = 0.0
    return latched
