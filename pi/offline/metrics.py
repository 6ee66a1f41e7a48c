"""Show metrics, exactly as ``/work/shared/show-metrics.md`` defines them.

The reference signals reproduce librosa's defaults (``onset.onset_strength`` and
``feature.rms``, both centred with zero padding, hop 512) with numpy alone, because pi/ must
stay light enough for a 512 MB Pi. Frames are computed in blocks so that a whole song never
exists as a ``(n_frames, 2048)`` array; only the ``(n_frames, 128)`` mel spectrogram is kept,
which ``power_to_db``'s whole-song ``top_db`` clip needs.

Conventions, where the definitions leave room:

- The "frames" of the metrics are the audio hops ``t`` at time ``t * 512 / sr`` (the md:
  "hops up to the music end are the music frames"). The show state at a hop is the state of
  the last row with ``time_s <= t * 512 / sr``, all channels off before the first row.
- A change is a row whose channel differs from the row before it; the first row is compared
  with all-off, so lights that start on count as a change.
- Metrics that are undefined are ``None``, never 0: a Pearson correlation with a constant
  side, a run bounded by two changes that never happens, no hops after the music end, or
  (for a song with no hop above -80 dB) every metric over music frames.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pi.show.features import N_MELS, hann_window, mel_basis
from pi.show.lookahead import last_music_frame


class Headline(NamedTuple):
    """A metric every report prints: its key in the metric dicts, a label, a format and
    the goal at default settings."""

    key: str
    label: str
    fmt: str
    goal: str


# The one list of headline metrics: the show metrics (shared/show-metrics.md, with the
# fluxCorr goal raised to 0.40 by issue 8), then the structure metrics (pi/offline/structure.py,
# shared/structure-metrics.md). Evaluation, the preview and the training report all read it.
SHOW_HEADLINE = (
    Headline("fluxCorr", "fluxCorr", "{:.2f}", "≥ 0.40"),
    Headline("dead", "dead", "{:.1f}", "0"),
    Headline("corr_max", "corr_max", "{:.2f}", "≤ 0.70"),
    Headline("toggles_per_s", "toggles/s", "{:.2f}", "≤ 3.0"),
    Headline("min_run_ms", "min run ms", "{:.0f}", "≥ 100"),
    Headline("entropy_bits", "entropy bits", "{:.2f}", "≥ 5.0"),
    Headline("tail_off", "tail off", "{:.2f}", "≥ 0.95"),
)
HEADLINE = SHOW_HEADLINE + (
    Headline("ssmCorr", "ssmCorr", "{:.2f}", "≥ 0.55"),
    Headline("ssmLift", "ssmLift", "{:.2f}", ""),
    Headline("stemF", "stemF", "{:.2f}", ""),
    Headline("stemLift", "stemLift", "{:.2f}", "≥ 0.20"),
)

SAMPLE_RATE = 44100
HOP = 512
N_FFT = 2048
LAG = 1
TOP_DB = 80.0
POWER_AMIN = 1e-10
RMS_FLOOR_DB = -80.0
MUSIC_WITHIN_DB = 15.0
FLUX_WINDOW_S = 0.060
TAIL_AFTER_S = 0.5
DEAD_DUTY = (0.05, 0.95)  # a channel outside this duty range is dead
_BLOCK = 256  # frames per block: ~4 MB of float64 frames at a time


class _BandedMel:
    """The mel basis applied as two sparse bands instead of a dense ``(1025, 128)`` product.

    Each FFT bin lies under at most two neighbouring triangles, so the product is two
    ``reduceat`` sums: ~60x fewer multiplications, and no multi-threaded BLAS call, whose
    spinning threads slow a busy 2-core machine (or the Pi next to the daemon) severalfold.
    """

    def __init__(self, *, sr: int):
        w = mel_basis(sr=sr, n_fft=N_FFT)
        self.n_mels = w.shape[0]
        nonzero = np.flatnonzero(w.any(axis=0))
        cols = np.arange(nonzero[0], nonzero[-1] + 1)
        self.bins = slice(int(cols[0]), int(cols[-1]) + 1)  # a slice: a view, not a copy
        under = w[:, cols] > 0
        # A bin under no band (none inside the range in practice) joins its left neighbour's.
        first = np.maximum.accumulate(np.where(under.any(axis=0), under.argmax(axis=0), 0))
        second = np.minimum(first + 1, self.n_mels - 1)
        self.w_first = w[first, cols]
        self.w_second = np.where(first + 1 < self.n_mels, w[second, cols], 0.0)
        kept = np.count_nonzero(self.w_first) + np.count_nonzero(self.w_second)
        assert kept == np.count_nonzero(w), "a bin under more than two neighbouring bands"
        self.starts = np.flatnonzero(np.diff(first, prepend=-1))
        self.bands = first[self.starts]

    def __call__(self, power: np.ndarray) -> np.ndarray:
        """``[shape=(k, 1 + n_fft // 2)]`` power -> ``[shape=(k, n_mels)]`` mel power."""
        p = power[:, self.bins]
        mel = np.zeros((len(p), self.n_mels))
        mel[:, self.bands] = np.add.reduceat(p * self.w_first, self.starts, axis=1)
        upper = self.bands + 1 < self.n_mels
        mel[:, self.bands[upper] + 1] += np.add.reduceat(p * self.w_second, self.starts,
                                                         axis=1)[:, upper]
        return mel


def _check_audio(y: np.ndarray, sr: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y: expected mono audio of shape (n,) with n >= 1, "
                         f"found shape {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(f"y: expected floating-point samples, found dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"y: expected finite samples, found {y[bad]} at sample {bad}")
    if int(sr) != sr or sr <= 0:
        raise ValueError(f"sr: expected a positive integer sample rate, found {sr}")
    return y


def _centred_frames(y: np.ndarray, *, frame_length: int):
    """Yield ``(first_frame, frames [shape=(k, frame_length)])`` of the zero-padded signal.

    Frame ``t`` is centred on sample ``t * HOP``, as librosa's ``center=True`` with constant
    padding; there are ``1 + len(y) // HOP`` frames. The padding is done per block so the
    song is never copied whole.
    """
    half = frame_length // 2
    n_frames = 1 + len(y) // HOP
    for f0 in range(0, n_frames, _BLOCK):
        f1 = min(f0 + _BLOCK, n_frames)
        start, stop = f0 * HOP - half, (f1 - 1) * HOP + frame_length - half
        seg = np.zeros(stop - start)
        lo, hi = max(start, 0), min(stop, len(y))
        seg[lo - start:hi - start] = y[lo:hi]
        yield f0, np.lib.stride_tricks.sliding_window_view(seg, frame_length)[::HOP]


def mel_db(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """librosa's ``power_to_db(melspectrogram(y=y, sr=sr), top_db=80)`` at its defaults.

    Mel power spectrogram (n_fft 2048, hop 512, centred with zero padding, periodic Hann,
    128 Slaney bands) in dB with ``ref=1, amin=1e-10, top_db=80``: the input of both
    :func:`onset_strength` and the structure metrics' MFCCs.

    Returns ``[shape=(1 + n // 512, 128)]`` float64.
    """
    y = _check_audio(y, sr)
    n_frames = 1 + len(y) // HOP
    window = hann_window(N_FFT)
    to_mel = _BandedMel(sr=int(sr))
    db = np.empty((n_frames, N_MELS))
    for f0, frames in _centred_frames(y, frame_length=N_FFT):
        spec = np.fft.rfft(frames * window, axis=1)
        power = spec.real ** 2 + spec.imag ** 2
        db[f0:f0 + len(frames)] = to_mel(power)
    np.log10(np.maximum(db, POWER_AMIN, out=db), out=db)
    db *= 10.0
    # top_db is relative to the loudest cell of the whole song, hence the full spectrogram.
    np.maximum(db, db.max() - TOP_DB, out=db)
    return db


def onset_strength(y: np.ndarray, *, sr: int = SAMPLE_RATE,
                   mel: np.ndarray | None = None) -> np.ndarray:
    """Spectral-flux onset strength, as ``librosa.onset.onset_strength(y=y, sr=sr)``.

    The rectified lag-1 difference of :func:`mel_db`, mean over bands, shifted right by
    ``lag + n_fft // (2 * hop) = 3`` hops as librosa does.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]  mono float audio
    sr : int  sample rate; the metrics are defined at 44100
    mel : the song's :func:`mel_db`, if already computed

    Returns
    -------
    np.ndarray [shape=(1 + n // 512,)]  float64, one value per hop
    """
    db = mel_db(y, sr=sr) if mel is None else mel
    n_frames = len(db)
    flux = np.subtract(db[LAG:], db[:-LAG])
    flux = np.maximum(flux, 0.0, out=flux).mean(axis=1)
    out = np.zeros(n_frames)
    pad = LAG + N_FFT // (2 * HOP)
    out[pad:] = flux[:max(n_frames - pad, 0)]
    return out


def rms_db(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Short-term RMS in dB: ``librosa.feature.rms`` defaults, then ``20 * log10``.

    Plain dB (ref 1, RMS floored at 1e-10) rather than ``amplitude_to_db``'s ``amin=1e-5,
    top_db=80``: the md says "RMS in dB", and that floor/clip only moves hops below -80 dB,
    which are outside both the median and the 15 dB band unless the audio exceeds full scale.

    Returns ``[shape=(1 + n // 512,)]`` float64.
    """
    y = _check_audio(y, sr)
    out = np.empty(1 + len(y) // HOP)
    for f0, frames in _centred_frames(y, frame_length=N_FFT):
        out[f0:f0 + len(frames)] = np.einsum("ij,ij->i", frames, frames) / N_FFT
    return 10.0 * np.log10(np.maximum(out, 1e-20))


def music_end_hop(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> int:
    """Index of the last music hop, or -1 if no hop is above -80 dB RMS.

    The last hop whose RMS dB is within 15 dB of the median RMS dB of the hops above -80 dB
    (the look-ahead show's own music end is the same rule on its frames).
    "Within" is read literally, ``|rms_db - median| <= 15``, so a hop more than 15 dB louder
    than the median does not count either.
    """
    return last_music_frame(level_db=rms_db(y, sr=sr), within_db=MUSIC_WITHIN_DB,
                            floor_db=RMS_FLOOR_DB)


def check_show(times_s: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times_s = np.asarray(times_s, dtype=np.float64)
    states = np.asarray(states)
    if times_s.ndim != 1:
        raise ValueError(f"times_s: expected shape (n_rows,), found shape {times_s.shape}")
    if states.ndim != 2 or states.shape[0] != times_s.size or states.shape[1] == 0:
        raise ValueError(f"states: expected shape ({times_s.size}, n_channels), "
                         f"found shape {states.shape}")
    if not np.all(np.isfinite(times_s)):
        raise ValueError("times_s: expected finite times, found NaN or inf")
    back = np.flatnonzero(np.diff(times_s) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise ValueError(f"times_s: expected strictly increasing times, found "
                         f"{times_s[i]} after {times_s[i - 1]} at row {i}")
    bad = np.flatnonzero((states != 0) & (states != 1))
    if bad.size:
        r, c = divmod(int(bad[0]), states.shape[1])
        raise ValueError(f"states: expected 0/1 values, found {states[r, c]} at row {r}, "
                         f"channel {c}")
    return times_s, states.astype(bool)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    # Undefined (None) when either side is constant; np.ptp is exact where std is not.
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def hop_states(times_s: np.ndarray, on: np.ndarray, *, n_hops: int,
               sr: int = SAMPLE_RATE) -> np.ndarray:
    """The show at each audio hop: the last row with ``time_s <= hop time``, all off before
    the first row. Returns ``[shape=(n_hops, n_channels)]`` bool."""
    row = np.searchsorted(times_s, np.arange(n_hops) * HOP / sr, side="right") - 1
    hop_on = np.zeros((n_hops, on.shape[1]), dtype=bool)
    hop_on[row >= 0] = on[row[row >= 0]]
    return hop_on


def reference_signals(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """The audio's side of the metrics, ``(onset_strength, music_end_hop)``: compute it once
    when several shows of the same song are scored."""
    return onset_strength(y, sr=sr), music_end_hop(y, sr=sr)


def show_metrics(y: np.ndarray, *, times_s: np.ndarray, states: np.ndarray,
                 sr: int = SAMPLE_RATE,
                 reference: tuple[np.ndarray, int] | None = None) -> dict:
    """All show metrics of one song, as a JSON-serialisable dict.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]  the song, mono float at ``sr``
    times_s : np.ndarray [shape=(n_rows,)]  strictly increasing times at which rows take
        effect; no rows (a song shorter than one frame) means all off
    states : np.ndarray [shape=(n_rows, n_channels)]  0/1 channel states
    sr : int  sample rate
    reference : the song's :func:`reference_signals`, if already computed

    Returns
    -------
    dict with ``fluxCorr``, ``dead``, ``duty`` (list per channel), ``corr_max``,
    ``toggles_per_s``, ``min_run_ms``, ``entropy_bits``, ``tail_off``, ``music_end_s``,
    ``duration_s``; ``None`` marks an undefined value (see the module docstring).
    """
    times_s, on = check_show(times_s, states)
    onset, end = reference if reference is not None else reference_signals(y, sr=sr)
    n_hops, n_ch = onset.size, on.shape[1]
    duration_s = len(y) / sr
    hop_t = np.arange(n_hops) * HOP / sr

    hop_on = hop_states(times_s, on, n_hops=n_hops, sr=sr)

    changed = on.copy()  # the first row is compared with all-off
    changed[1:] ^= on[:-1]
    toggles_per_s = float(changed.sum()) / n_ch / duration_s

    runs = np.concatenate([np.diff(times_s[changed[:, c]]) for c in range(n_ch)])
    min_run_ms = float(runs.min()) * 1000.0 if runs.size else None

    out = {"fluxCorr": None, "dead": None, "duty": None, "corr_max": None,
           "toggles_per_s": toggles_per_s, "min_run_ms": min_run_ms, "entropy_bits": None,
           "tail_off": None, "music_end_s": None, "duration_s": duration_s}
    if end < 0:
        return out
    music_end_s = end * HOP / sr
    out["music_end_s"] = music_end_s

    t = hop_t[:end + 1]
    cum = np.concatenate([[0], np.cumsum(changed.sum(axis=1))])
    lo = np.searchsorted(times_s, t, side="left")
    hi = np.searchsorted(times_s, t + FLUX_WINDOW_S, side="left")
    out["fluxCorr"] = pearson(onset[:end + 1], (cum[hi] - cum[lo]).astype(np.float64))

    music = hop_on[:end + 1]
    duty = music.mean(axis=0)
    out["duty"] = [float(d) for d in duty]
    out["dead"] = int(np.sum((duty < DEAD_DUTY[0]) | (duty > DEAD_DUTY[1])))

    # Constant channels have no correlation; they are left out rather than counted as 0.
    varying = np.flatnonzero(music.min(axis=0) != music.max(axis=0))
    if varying.size >= 2:
        c = np.abs(np.corrcoef(music[:, varying].T.astype(np.float64)))
        out["corr_max"] = float(c[~np.eye(varying.size, dtype=bool)].max())

    _, counts = np.unique(music, axis=0, return_counts=True)
    p = counts / counts.sum()
    out["entropy_bits"] = float(-(p * np.log2(p)).sum()) + 0.0

    tail = hop_on[hop_t > music_end_s + TAIL_AFTER_S]
    if len(tail):
        out["tail_off"] = float(np.mean(~tail.any(axis=1)))
    return out
