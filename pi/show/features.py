"""The one feature implementation: audio -> frames of 513 dB spectrum bins.

Training and the daemon both call this module, so the model sees on the Pi exactly what it
saw in the workshop. Frames are not centred: frame ``i`` covers samples
``[i * hop, i * hop + n_fft)`` and its state takes effect at the frame's end, which keeps the
streaming path causal and identical to the batch path.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


def _private_rfft():
    """numpy 2's transform behind np.fft.rfft (see :func:`_rfft`), if this numpy has it and
    it gives np.fft.rfft's numbers; else None, and np.fft.rfft is used. A private name can
    change in any numpy release: checked once here, so such a change costs speed, never
    the show."""
    try:
        from numpy.fft._pocketfft_umath import rfft_n_even
        x = np.linspace(-1.0, 1.0, 16)[None]
        out = rfft_n_even(x, 1, out=np.empty((1, 9), np.complex128))
        return rfft_n_even if np.array_equal(out, np.fft.rfft(x, axis=-1)) else None
    except Exception:  # ImportError, AttributeError, TypeError: whatever this numpy does
        return None


_RFFT_EVEN = _private_rfft()

SAMPLE_RATE = 44100
N_FFT = 1024
HOP = 512
N_BINS = N_FFT // 2 + 1
DB_FLOOR = -100.0
N_MELS = 128  # mel bands, librosa's default: the onset flux and the metrics use them
DB_PER_NEPER = np.float32(20.0 / math.log(10.0))  # 20 * log10(x) == log(x) * this


@dataclass(frozen=True)
class FeatureParams:
    """Feature parameters; stored in every bundle and in every cache key."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop: int = HOP
    db_floor: float = DB_FLOOR
    window: str = "hann-periodic"

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureParams":
        if not isinstance(d, dict):
            raise ValueError(f"feature_params: expected a JSON object, found {d!r}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"feature params: expected keys {sorted(cls.__dataclass_fields__)}, "
                             f"found unknown {sorted(unknown)}")
        # A bundle is data from elsewhere: 0 or a string here would surface as a
        # ZeroDivisionError or TypeError deep in the feature path instead of a fallback.
        for key, lo, hi in (("sample_rate", 8000, 192000), ("n_fft", 64, 16384),
                            ("hop", 1, 16384)):
            v = d.get(key, getattr(cls, key))
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"feature_params.{key}: expected an integer from {lo} to "
                                 f"{hi}, found {v!r}")
        n_fft, hop = d.get("n_fft", N_FFT), d.get("hop", HOP)
        if hop > n_fft:
            raise ValueError(f"feature_params.hop: expected at most n_fft = {n_fft}, found {hop}")
        floor = d.get("db_floor", DB_FLOOR)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) \
                or not -300 <= floor < 0:
            raise ValueError(f"feature_params.db_floor: expected a number from -300 to below "
                             f"0 dB, found {floor!r}")
        if d.get("window", "hann-periodic") != "hann-periodic":
            raise ValueError(f"feature_params.window: expected 'hann-periodic', found "
                             f"{d.get('window')!r}")
        return cls(**dict(d, db_floor=float(floor)))


DEFAULT_PARAMS = FeatureParams()


@lru_cache(maxsize=4)
def hann_window(n_fft: int) -> np.ndarray:
    # Periodic Hann, as librosa and scipy's fftbins=True use, so frames overlap-add evenly.
    # Cached (and read-only) because the streaming path asks for it once per hop.
    n = np.arange(n_fft)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float64)
    window.flags.writeable = False
    return window


# Slaney's auditory-toolbox mel scale, librosa's default (htk=False): linear below 1 kHz.
_F_SP, _MIN_LOG_HZ, _LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log = _MIN_LOG_HZ / _F_SP + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, hz / _F_SP)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    min_log_mel = _MIN_LOG_HZ / _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mels, min_log_mel) - min_log_mel))
    return np.where(mels >= min_log_mel, log, _F_SP * mels)


def mel_basis(*, sr: int = SAMPLE_RATE, n_fft: int = N_FFT,
              n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel defaults (fmin=0, fmax=sr/2, Slaney scale and norm).

    Returns ``[shape=(n_mels, 1 + n_fft // 2)]`` float64 weights.
    """
    fftfreqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


class SparseMel:
    """``power @ mel.T`` (``mel``: :func:`mel_basis`) over each filter's nonzero bins only
    (about 2 per bin, not 128): cheaper per frame, and summed in the same order for one
    frame or a thousand. Power ``[shape=(k, n_bins)]`` float32 -> ``[shape=(k, n_mels)]``."""

    def __init__(self, mel: np.ndarray):
        idx, weights, starts = [], [], []
        for row in mel:
            nz = np.flatnonzero(row)
            if not len(nz):  # an empty filter still needs one (zero-weight) entry
                nz = np.array([int(np.argmax(row))])
            starts.append(len(idx))
            idx += nz.tolist()
            weights += row[nz].tolist()
        self.idx = np.array(idx)
        self.weights = np.array(weights, np.float32)
        self.starts = np.array(starts)

    def __call__(self, power: np.ndarray) -> np.ndarray:
        # np.take, not power[..., idx]: the same gather at a quarter of the cost.
        picked = np.take(power, self.idx, axis=-1)
        picked *= self.weights
        return np.add.reduceat(picked, self.starts, axis=-1)


def to_mono(samples: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Mix ``[shape=(n,) or (n, channels)]`` to mono float32 ``[shape=(n,)]``; rejects NaN/inf."""
    if type(samples) is np.ndarray and samples.dtype == np.float32 and samples.ndim == 1:
        # The streaming path's usual block: only the finiteness check, as one reduction.
        # A float64 sum of float32 samples cannot overflow, so it is finite exactly when
        # every sample is (NaN and inf propagate); otherwise the check below names one.
        if math.isfinite(np.add.reduce(samples, dtype=np.float64)):
            return samples
    x = np.asarray(samples)
    if x.ndim == 2 and x.shape[1] == 2 and x.dtype in (np.float32, np.float64):
        # Stereo: what x.mean(axis=1) computes (the two channels summed in their own
        # precision, then halved, which is exact) without its strided reduction over an
        # axis of 2, 30 times slower: a third of a render's decoding.
        x = np.add(x[:, 0], x[:, 1])
        x /= x.dtype.type(2)
    elif x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"{name}: expected samples of shape (n,) or (n, channels), "
                         f"found shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():  # the method: np.all's wrapper costs more than the test
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"{name}: expected finite samples, found {x[bad]} at sample {bad}")
    return x


def resample(samples: np.ndarray, *, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono ``[shape=(n,)]`` with soxr (whole-signal path)."""
    if rate_in == rate_out:
        return samples
    import soxr  # imported here so that numpy-only users of this module need no soxr

    return soxr.resample(samples, rate_in, rate_out).astype(np.float32, copy=False)


class StreamResampler:
    """Streaming mono resampler to ``rate_out``; a pass-through when the rates match."""

    def __init__(self, *, rate_in: int, rate_out: int = SAMPLE_RATE):
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self._stream = None
        if self.rate_in != self.rate_out:
            import soxr

            self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32")

    def __call__(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(np.ascontiguousarray(block, np.float32), last=last)


def spectra_db(frames: np.ndarray, *, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Windowed frames ``[shape=(n_frames, n_fft)]`` -> dB magnitudes ``[shape=(n_frames, 513)]``.

    Magnitudes are scaled so that a full-scale sine reads about 0 dB, then floored:
    ``20 * log10(max(|rfft(frame * window)| * scale, floor))``, the spectrum in float64 and
    the logarithm in float32 (within 2 float32 ulps of a float64 logarithm).
    """
    window, floor = _spectrum_constants(params.n_fft, params.db_floor)
    db_floor = np.float32(params.db_floor)
    # A hop is mostly call overhead, so the fewest calls, in place from the rfft on. The
    # scale rides in the window (the transform is linear); float32 frames times the float64
    # window are the same float64 products as converting first. The logarithm is numpy's
    # vectorised float32 log times 20 / ln 10: libm's float64 log10, one bin at a time, cost
    # a fifth of a hop's instructions. The spectrum itself stays float64: a float32 rfft
    # moves the quietest bins by up to 1e-5 of their dB.
    mag = np.abs(_rfft(frames * window))
    # The floor in dB after the log, where it is exact (the floor's magnitude through the
    # float32 log reads 1e-5 dB above it); half of it before, so that there is no log of 0.
    np.maximum(mag, floor * 0.5, out=mag)
    db = mag.astype(np.float32)
    np.log(db, out=db)
    db *= DB_PER_NEPER
    np.maximum(db, db_floor, out=db)
    return db


def _rfft(x: np.ndarray) -> np.ndarray:
    """``np.fft.rfft(x, axis=-1)`` of float64 frames ``[shape=(n, n_fft)]``, n_fft even.
    numpy 2's rfft is a thin wrapper (checks, a normalisation factor of 1, the output
    array) round the transform; for one or two frames a hop the wrapper cost as much as the
    transform itself, so the transform is called directly (same pocketfft, same numbers:
    tests/test_features.py checks it)."""
    if _RFFT_EVEN is None or x.shape[-1] % 2:
        return np.fft.rfft(x, axis=-1)
    return _RFFT_EVEN(x, 1, out=np.empty(x.shape[:-1] + (x.shape[-1] // 2 + 1,), np.complex128))


@lru_cache(maxsize=4)
def _spectrum_constants(n_fft: int, db_floor: float) -> tuple[np.ndarray, float]:
    """The window times the magnitude scale (read-only), and the floor of the magnitudes."""
    window = hann_window(n_fft)
    scaled = window * (2.0 / window.sum())
    scaled.flags.writeable = False
    return scaled, 10.0 ** (db_floor / 20.0)


def n_frames_for(n_samples: int, *, params: FeatureParams = DEFAULT_PARAMS) -> int:
    if n_samples < params.n_fft:
        return 0
    return 1 + (n_samples - params.n_fft) // params.hop


def frame_times(n_frames: int, *, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Seconds at which each frame's state takes effect: the end of the frame."""
    return (np.arange(n_frames) * params.hop + params.n_fft) / params.sample_rate


def song_features(samples: np.ndarray, *, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """Whole-song path: mono samples at the feature rate -> ``[shape=(n_frames, 513)]``."""
    return _frames_db(to_mono(samples), params=params)


def _frames_db(x: np.ndarray, *, params: FeatureParams) -> np.ndarray:
    n = n_frames_for(len(x), params=params)
    if n == 0:
        return np.zeros((0, params.n_bins), np.float32)
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    # Frame i is x[i * hop : i * hop + n_fft], as a strided view (sliding_window_view
    # costs more than the FFT of one frame).
    frames = np.ndarray((n, params.n_fft), x.dtype, x, 0, (params.hop * x.itemsize, x.itemsize))
    return spectra_db(frames, params=params)


class StreamingFeatures:
    """Streaming path: feed blocks of any size, get the frames that became complete.

    Samples are carried over between blocks, so the concatenated output equals
    :func:`song_features` of the concatenated input, bit for bit.
    """

    def __init__(self, *, params: FeatureParams = DEFAULT_PARAMS):
        self.params = params
        # The samples not yet framed, ``_buf[_start:_start + _carried]``, in a buffer reused
        # for every push (no new array per hop); it grows only for a block bigger than any
        # before. They move to the front at the next push, so last_input stays intact.
        self._buf = np.zeros(4 * params.n_fft, np.float32)
        self._start = self._carried = 0
        self.frames_emitted = 0
        # The samples the last push framed (carry + block): frame j of that push covers
        # ``last_input[j * hop : j * hop + n_fft]``, for callers measuring the same windows.
        # A view into the buffer: valid until the next push.
        self.last_input = self._buf[:0]

    def push(self, block: np.ndarray) -> np.ndarray:
        """Mono block ``[shape=(n,)]`` -> new frames ``[shape=(k, 513)]`` (k may be 0)."""
        x = self._take(block)
        frames = _frames_db(x, params=self.params)
        self._framed(x, len(frames))
        return frames

    def skip(self, block: np.ndarray) -> int:
        """Like :meth:`push`, but only counts the frames that became complete: for a song
        whose show was planned ahead, which needs the frames' timing, not their spectra."""
        x = self._take(block)
        count = n_frames_for(len(x), params=self.params)
        self._framed(x, count)
        return count

    def _take(self, block: np.ndarray) -> np.ndarray:
        """The carried samples followed by ``block``, in the reused buffer."""
        # Only the new block needs checking: the carry was checked when it arrived.
        block = to_mono(block, name="audio block")
        carried, start = self._carried, self._start
        n = carried + len(block)
        if n > len(self._buf):
            grown = np.zeros(max(n, 2 * len(self._buf)), np.float32)
            grown[:carried] = self._buf[start:start + carried]
            self._buf, start = grown, 0
        if start:  # numpy copies overlapping ranges correctly
            self._buf[:carried] = self._buf[start:start + carried]
        x = self._buf[:n]
        x[carried:] = block
        return x

    def _framed(self, x: np.ndarray, count: int) -> None:
        self.last_input = x
        self._start = count * self.params.hop
        self._carried = len(x) - self._start
        self.frames_emitted += count


def fit_normalisation(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std ``[shape=(513,)]`` of training frames ``[shape=(n, 513)]``."""
    mean = frames.mean(axis=0, dtype=np.float64)
    std = frames.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def normalise(frames: np.ndarray, *, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = np.subtract(frames, mean)
    np.divide(z, std, out=z)  # (frames - mean) / std, without a second array
    return z if z.dtype == np.float32 else z.astype(np.float32)
