"""Activations -> relay on/off states: the show logic, shared by evaluation and the daemon.

Why it looks like this (the seed blog switched a channel on whenever its activation was > 0,
which left most channels dead and relays chattering at 86 Hz):

* Each channel has an adaptive threshold (a running median with a running spread), calibrated
  on training music and then tracking the song, so no channel is stuck on or off.
* Channels change state *on onsets*: a change is only allowed when the spectral flux jumps
  above its recent average, and stronger onsets may change more channels. Lights then hit
  with the beat instead of flickering between beats. Only a channel whose own activation has
  crossed its threshold changes: the onset picks the moment, the music picks the channel.
  (Flipping other channels on strong onsets, as this once did, made every lamp blink at an
  even rate and hid the song's sections: on the tuning songs ssmCorr was 0.14 real / 0.05
  MIDI with it, 0.33 / 0.21 without it and with the slow threshold below.)
* A minimum hold time per relay, which also bounds the toggle rate, protects the relays.
* A silence gate turns everything off when the music stops or fades out.
* For dimmers, ``ShowMapper.levels`` grades each lamp that is on by how far its activation
  stood above the threshold when it switched on (see :func:`brightness`). A level changes
  only when its state does, so hold, onsets and the silence gate rule it exactly as they rule
  the relays, and a lamp that is off is at 0.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields, replace

import numpy as np

from pi.show.features import (DEFAULT_PARAMS, N_MELS, FeatureParams, SparseMel, hann_window,
                               mel_basis)
from pi.show.relay_rules import ChannelOverrides
from pi.show.silence_gate import SilenceGate


@dataclass
class MappingParams:
    """Mapping parameters; stored in the bundle. Arrays are ``[shape=(n_channels,)]``."""

    center: np.ndarray
    scale: np.ndarray
    hold_s: float = 0.10
    hysteresis: float = 0.15       # in units of the channel's spread
    # Time constant of the threshold tracking: slow, so that a channel's duty follows the
    # song's sections (a verse keeps a channel dark that the chorus lights) instead of being
    # pulled back to 50% within seconds.
    adapt_s: float = 60.0
    onset_ratio: float = 1.4       # flux / its running mean above which a frame is an onset
    flux_s: float = 1.0            # time constant of the flux's running mean
    changes_per_onset: float = 1.5  # channels allowed to change per unit of onset excess
    idle_change_s: float = 1.5     # a wanted change waits at most this long for an onset
    gate_db: float = -14.0         # gate closes this far below the running loud level
    silence_db: float = -60.0      # and always below this RMS level (dBFS; config show.silence_db)
    # A 1024-sample frame sees an onset about one hop before the sound is heard in full, so
    # changes are held back this many frames to land on the beat, not just ahead of it.
    delay_frames: float = 2.0
    # Busy music (16th-note hi-hats) would wear relays out: above this rate per channel,
    # onsets must be proportionally stronger to switch anything.
    max_toggles_per_s: float = 2.0

    @property
    def n_channels(self) -> int:
        return len(self.center)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f"mapping.{f.name}": np.asarray(getattr(self, f.name), np.float32)
                for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays) -> "MappingParams":
        kw = {}
        for f in fields(cls):
            key = f"mapping.{f.name}"
            if key not in arrays:
                raise KeyError(f"expected array {key!r}, found none")
            value = np.asarray(arrays[key], np.float32)
            kw[f.name] = value if f.name in ("center", "scale") else float(value)
        return cls(**kw)

    @classmethod
    def calibrate(cls, activations: np.ndarray, **overrides) -> "MappingParams":
        """Initial thresholds from training activations ``[shape=(n_frames, n_channels)]``."""
        center = np.median(activations, axis=0)
        scale = np.median(np.abs(activations - center), axis=0)
        return cls(center=center.astype(np.float32),
                   scale=np.maximum(scale, 1e-3).astype(np.float32), **overrides)


# Power from decibels: 10 ** (db / 10) == exp(db * ln(10) / 10), and back.
_NEPERS_PER_DB = np.float32(math.log(10.0) / 10.0)
_DB_PER_NEPER_POWER = np.float32(10.0 / math.log(10.0))

# The onset flux compares each frame with the one FLUX_LAG frames (46 ms, the judge's 2048
# samples) before it, as librosa's onset_strength(lag=...): a 1024-sample frame sees an
# onset's rise spread over a few hops, the judge's frames see it whole (tuning songs, causal
# show, fluxCorr real / MIDI: lag 1 0.299 / 0.391, 3 0.352 / 0.440, 4 0.369 / 0.454, 5
# 0.381 / 0.453 with stemF 0.339 -> 0.325, 6 0.357 / 0.433). Past frames only: no delay.
FLUX_LAG = 4

MIN_LEVEL = 0.2  # a dimmer lamp that is on is at least this bright

# A channel that has not changed for this long tracks its threshold STUCK_SPEEDUP times
# faster: slow thresholds let the duty follow the sections, but a song whose music keeps one
# channel far from its threshold would otherwise leave that lamp dark (or lit) for minutes.
STUCK_S = 15.0
STUCK_SPEEDUP = 10.0


def brightness(z: np.ndarray) -> np.ndarray:
    """A dimmer level for a channel switching on with z-score ``z`` (its distance above the
    adaptive threshold, in spreads): logistic, so the usual z of 0.2..3 spans about 0.55..0.95.
    """
    return np.maximum(MIN_LEVEL, 1.0 / (1.0 + np.exp(-np.clip(z, -20.0, 20.0))))


def _brightness(z: float) -> float:
    """:func:`brightness` of one Python float: the same float64 steps (libm's exp, which
    numpy's float64 exp also calls where it has no vectorised one), without six numpy calls
    on a list of 8."""
    return max(MIN_LEVEL, 1.0 / (1.0 + math.exp(-min(max(z, -20.0), 20.0))))


class ShowMapper:
    """Frame-by-frame state machine: ``step`` one frame, or ``run`` a whole song."""

    def __init__(self, params: MappingParams, *, feature_params: FeatureParams = DEFAULT_PARAMS,
                 overrides: ChannelOverrides | None = None, hold_s: float | None = None,
                 silence_db: float | None = None):
        if silence_db is not None:
            params = replace(params, silence_db=float(silence_db))
        self.params = params
        self.hold_s = params.hold_s if hold_s is None else float(hold_s)
        self.overrides = overrides or ChannelOverrides()
        self.dt = feature_params.hop / feature_params.sample_rate
        # The onset flux follows librosa's onset strength (mel power in dB, rectified
        # difference), which is what the show is judged against; at 1024 samples it
        # correlates about 0.8 with the 2048-sample reference on real music.
        self._mel = SparseMel(mel_basis(sr=feature_params.sample_rate,
                                         n_fft=feature_params.n_fft, n_mels=N_MELS))
        # Parseval: the scaled one-sided spectrum's power sum -> the frame's RMS in dBFS, so
        # that silence_db means what the config says.
        w = hann_window(feature_params.n_fft)
        self._rms_offset_db = 10.0 * np.log10((w.sum() / 2) ** 2 * 2 / (len(w) * np.sum(w**2)))
        k = params.n_channels
        self._alpha_adapt = self.dt / params.adapt_s
        self._alpha_stuck = min(1.0, self._alpha_adapt * STUCK_SPEEDUP)
        self._alpha_flux = self.dt / params.flux_s
        # The per-frame state is plain Python lists of floats and bools: with 8 channels, a
        # numpy call costs more than its arithmetic, and float64 arithmetic on Python floats
        # is the same IEEE arithmetic, so the decisions are the same bit for bit. Lists are
        # replaced, never changed in place: the delay queues hold earlier ones.
        self.center = params.center.astype(np.float64).tolist()
        self.scale = params.scale.astype(np.float64).tolist()
        self.state = [False] * k
        self.last_change = [-math.inf] * k
        self.wanted_since = [math.inf] * k
        self.gate = SilenceGate(gate_db=params.gate_db, silence_db=params.silence_db,
                                dt=self.dt)
        # Whether an onset the show could change lights on (gate open and a positive
        # excess) began at this frame; render records them for xLights' timing track.
        self.onset = self._in_onset = False
        self.onset_log: list[bool] | None = None  # a list: every frame's onset is appended
        self.flux_mean = None
        self.prev_bands = None
        self.rate = 0.0  # recent changes per second per channel
        self._alpha_rate = self.dt / 4.0
        self._pending = deque([[False] * k] * int(params.delay_frames))
        # Dimmer levels: brightness latched as each channel switches on, delayed with states.
        self._levels = [0.0] * k
        self._bright = [1.0] * k
        self._pending_bright = deque([self._bright] * int(params.delay_frames))

    @property
    def levels(self) -> np.ndarray:
        """The dimmer levels of the last frame ``[shape=(n_channels,)]``."""
        return np.array(self._levels)

    def frame_signals(self, frames_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame RMS level in dBFS ``[shape=(k,)]`` and mel bands in dB
        ``[shape=(k, 128)]``: row by row, the same numbers whatever the block size."""
        level, bands = self._signals(frames_db)
        return np.array(level, np.float64).reshape(len(bands)), bands

    def _signals(self, frames_db: np.ndarray) -> tuple[list[float], np.ndarray]:
        """:meth:`frame_signals` with the levels as a list of Python floats."""
        # 10 ** (frames_db / 10) in float32, in place, as exp(frames_db * ln(10) / 10):
        # numpy's exp is vectorised where its float32 power calls libm per bin (half the
        # cost of these signals). Either rounds the exponent to float32 first, so both are
        # within about 1e-6 of the exact power. add.reduce is np.sum without its Python
        # wrapper (this runs once per 20 ms block).
        power = np.multiply(frames_db, _NEPERS_PER_DB, dtype=np.float32)
        np.exp(power, out=power)
        # The level of each frame's float32 power sum on Python floats: one or two frames a
        # block, where each numpy call on them cost more than the arithmetic.
        offset, log10 = self._rms_offset_db, math.log10
        level = [10.0 * log10(p + 1e-12) + offset
                 for p in np.add.reduce(power, axis=-1).tolist()]
        bands = self._mel(power)
        np.maximum(bands, 1e-10, out=bands)
        # 10 * log10 as numpy's vectorised float32 log times 10 / ln 10 (libm's log10f
        # goes one band at a time).
        np.log(bands, out=bands)
        bands *= _DB_PER_NEPER_POWER
        return level, bands

    def block_flux(self, bands: np.ndarray) -> list[float | None]:
        """Spectral flux of each frame of a block of mel bands ``[shape=(k, 128)]``: the mean
        rectified rise from the frame ``FLUX_LAG`` frames before it (``None`` for a song's
        first ``FLUX_LAG`` frames). One vectorised pass per block, the same numbers row by
        row as frame by frame. Moves ``prev_bands`` (a tuple of the last ``FLUX_LAG`` rows)
        on."""
        if not len(bands):
            return []
        lag, prev, n = FLUX_LAG, self.prev_bands, len(bands)
        if n == 1 and prev is not None and len(prev) == lag:  # the daemon's usual block
            rise, first = np.subtract(bands, prev[0]), 0
            self.prev_bands = (*prev[1:], bands[0])
        else:
            known = bands if prev is None else np.concatenate([np.array(prev, bands.dtype)
                                                               .reshape(-1, bands.shape[1]),
                                                               bands])
            # Row j of the block is known[j + before] and rises from known[j + before - lag].
            before = len(known) - n
            first = min(max(lag - before, 0), n)  # the block's rows with no frame lag before
            self.prev_bands = tuple(known[-lag:])
            if first == n:
                return [None] * n
            rise = np.subtract(known[before + first:],
                               known[before + first - lag:before + n - lag])
        np.maximum(rise, 0.0, out=rise)
        # np.mean's own steps: a float32 sum, divided by the count into float32. The count
        # is a power of two, so the quotient is exact and Python's float64 one is the same.
        m = rise.shape[-1]
        sums = np.add.reduce(rise, axis=-1)
        if m & (m - 1):
            np.true_divide(sums, np.intp(m), out=sums, casting="unsafe")
            flux = sums.tolist()
        else:
            inv = 1.0 / m
            flux = [s * inv for s in sums.tolist()]
        return [None] * first + flux


    def _onset_excess(self, flux: float | None, pressure: float) -> float:
        if flux is None:
            return 0.0
        if self.flux_mean is None:
            self.flux_mean = flux
        excess = flux / (self.flux_mean + 1e-3) - self.params.onset_ratio * pressure
        self.flux_mean += (flux - self.flux_mean) * self._alpha_flux
        return excess

    def _pressure(self) -> float:
        # Squared, so that busy music is held back firmly rather than nudged.
        return max(1.0, self.rate / self.params.max_toggles_per_s) ** 2

    def step(self, activations: np.ndarray, frame_db: np.ndarray, *, t: float) -> np.ndarray:
        """One frame: activations ``[shape=(n_channels,)]``, dB frame ``[shape=(513,)]``.

        ``t`` is the time in seconds at which the returned state takes effect.
        """
        level, bands = self.frame_signals(np.asarray(frame_db)[None])
        out = self._step(np.asarray(activations, np.float64).tolist(), level.item(),
                         self.block_flux(bands)[0], float(t))
        return np.array(out, bool)

    def _step(self, a: list[float], level: float, flux: float | None, t: float) -> list[bool]:
        """One frame's decisions on Python floats (``a``: the activations; ``flux``: from
        block_flux); returns the states to show and leaves their levels in ``_levels``.
        The same operations in the same order as the vectorised form, one channel at a time
        in a single pass (each extra pass over 8 channels costs about a microsecond)."""
        p = self.params
        k = len(a)
        hold, inf = self.hold_s - 1e-9, math.inf
        gate = self.gate.step(level)
        pressure = self._pressure()  # the rate changes only at the end of the frame
        excess = self._onset_excess(flux, pressure)
        # The flux's rise from FLUX_LAG frames before lasts a few frames: an onset is where
        # it begins (one mark per onset in xLights), while every frame of it may switch.
        onset = gate and excess > 0
        self.onset, self._in_onset = onset and not self._in_onset, onset
        if self.onset_log is not None:
            self.onset_log.append(self.onset)
        state, last_change, wanted_since = self.state, self.last_change, self.wanted_since
        if not gate:
            # Every lamp wants off: the ones on differ, and change as soon as they are free.
            change = [st and t - lc >= hold for st, lc in zip(state, last_change)]
            self.wanted_since = wanted_since = [(ws if ws <= t else t) if st else inf
                                                for st, ws in zip(state, wanted_since)]
        else:
            budget = math.ceil(excess * p.changes_per_onset / pressure) if excess > 0 else 0
            # Busy music waits for onsets; otherwise a wanted change waits idle_change_s.
            idle = p.idle_change_s if pressure <= 1.0 else inf
            alpha_slow, alpha_stuck, hyst = self._alpha_adapt, self._alpha_stuck, p.hysteresis
            center, scale, z, new_since = [], [], [], []
            # rank: the channels that want to change, the furthest past their threshold
            # first; -1: not a candidate. `wants` counts them.
            change, rank, wants = [False] * k, [-1.0] * k, 0
            for c, (ac, cc, sc, lc, st, ws) in enumerate(zip(a, self.center, self.scale,
                                                             last_change, state,
                                                             wanted_since)):
                since = t - lc
                alpha = alpha_stuck if since > STUCK_S else alpha_slow
                # Towards a by a step of sign(d): cc + sc * alpha * sign(d), branch by branch.
                d = ac - cc
                if d > 0:
                    cc += sc * alpha
                elif d < 0:
                    cc -= sc * alpha
                else:
                    cc += 0.0
                d = ac - cc
                sc += (abs(d) - sc) * alpha
                if not sc >= 1e-4:
                    sc = 1e-4
                zc = d / sc
                center.append(cc)
                scale.append(sc)
                z.append(zc)
                # On above the band, off below it, unchanged inside it.
                if (zc > hyst or (st and not zc < -hyst)) != st:
                    if ws > t:
                        ws = t
                    new_since.append(ws)
                    if since >= hold:
                        if t - ws >= idle:
                            change[c] = True
                        else:
                            rank[c] = abs(zc)
                            wants += 1
                else:
                    new_since.append(inf)
            self.center, self.scale = center, scale
            self.wanted_since = wanted_since = new_since
            if budget > 0 and wants:
                if wants <= budget:  # every candidate changes: their order does not matter
                    change = [ch or r >= 0 for ch, r in zip(change, rank)]
                else:  # numpy's argsort, not sorted(): ties must break as they always have.
                    for c in np.argsort(-np.array(rank))[:budget].tolist():
                        if rank[c] >= 0:
                            change[c] = True
        n_changed = change.count(True)
        if n_changed:
            self.state = state = [st != ch for st, ch in zip(state, change)]
            self.last_change = [t if ch else lc for ch, lc in zip(change, self.last_change)]
            self.wanted_since = [math.inf if ch else ws for ch, ws in zip(change, wanted_since)]
            if gate:
                self._bright = [_brightness(zc) if ch and st else old for ch, st, zc, old
                                in zip(change, state, z, self._bright)]
        self.rate += (n_changed / (k * self.dt) - self.rate) * self._alpha_rate
        self._pending.append(state)
        self._pending_bright.append(self._bright)
        state, bright = self._pending.popleft(), self._pending_bright.popleft()
        ov = self.overrides
        if not (ov.invert or ov.always_on or ov.always_off):
            self._levels = [b if st else 0.0 for st, b in zip(state, bright)]
            return state
        out = ov.states_list(state)
        # Off is dark; on is the latched brightness, or full for a channel that is on only
        # through an override (invert, always_on).
        levels = [(b if st else 1.0) if o else 0.0 for o, st, b in zip(out, state, bright)]
        for c in ov.always_on:
            levels[c] = 1.0
        self._levels = levels
        return out

    def run(self, activations: np.ndarray, frames_db: np.ndarray, *,
            times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A block of frames (or a whole song) through :meth:`step`: the states
        ``[shape=(n_frames, n_channels)]`` bool, and each frame's dimmer levels (same shape,
        float)."""
        states, levels = self.run_rows(activations, frames_db, np.asarray(times_s).tolist())
        k = np.shape(activations)
        return (np.array(states, bool).reshape(k),
                np.array(levels, np.float64).reshape(k))

    def run_rows(self, activations: np.ndarray, frames_db: np.ndarray,
                 times: list[float]) -> tuple[list[list[bool]], list[list[float]]]:
        """:meth:`run` as Python lists, a row per frame: the states and the levels."""
        # The per-frame signals for the whole block in a few vectorised calls; only the
        # decisions below go frame by frame, on Python floats (float32 activations become
        # the same float64 values as through np.float64).
        level, bands = self._signals(frames_db)
        flux = self.block_flux(bands)
        acts = np.asarray(activations)
        acts = (acts if acts.dtype in (np.float32, np.float64) else
                acts.astype(np.float64)).tolist()
        states, levels = [], []
        for a, lv, fx, t in zip(acts, level, flux, times):
            states.append(self._step(a, lv, fx, t))
            levels.append(self._levels)
        return states, levels
