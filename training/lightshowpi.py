"""LightShowPi's band split, emulated: the baseline the learned show must beat.

Read from LightShowPi's own code (github.com/GraphicHealer/LightShowPi-EZ, commit f51b6b5,
a mirror of lightshowpi.org's master):

- ``py/fft.py`` ``FFT.calculate_channel_frequency``: 8 channels log-spaced from
  ``min_frequency = 20`` to ``max_frequency = 15000`` Hz (``config/defaults.cfg``), each limit
  ``10 ** (3 / (10 / octaves_per_channel))`` times the one before (so ~14.7 kHz at the top,
  since ``10 ** 0.3`` is not quite 2).
- ``py/fft.py`` ``FFT.calculate_levels`` (the numpy path, ``use_gpu = False``): the left
  channel of one ``chunk_size`` read as int16, times ``hanning(len(data))``; ``rfft`` with
  its last (Nyquist) bin deleted; power ``abs(X) ** 2``; per channel ``log10`` of the power
  summed over bins ``[int(chunk * f_lo / sr), int(chunk * f_hi / sr))`` (``calculate_piff``),
  0 where that sum is 0; all zeros for an all-zero chunk.
- ``py/synchronized_lights.py`` ``Lightshow.save_cache``: per channel, the mean and std of
  the song's levels that are ``> 0``; ``setup_cache`` reads them back, so from the second
  play on (the cached show, which we emulate) the whole song's statistics normalise it.
- ``py/synchronized_lights.py`` ``Lightshow.update_lights``:
  ``brightness = (level - mean + std * SD_low) / (std * (SD_low + SD_high))``, with
  ``SD_low = 0.5``, ``SD_high = 0.75``, ``attenuate_pct = 0``, ``decay_factor = 0``,
  ``light_delay = 0``; clipped to [0, 1], NaN -> 0.
- ``py/hardware_controller.py`` ``Channel``: an ``onoff`` pin (``pin_modes = onoff``, the
  default and the only safe mode for relays) is written ``int(brightness > 0.5)``; that is,
  on while ``level > mean + std / 8``.

One state per chunk (46 ms at 2048 samples, 44.1 kHz): LightShowPi sets the lights once per
chunk read. LightShowPi has no hold; ``hold_s`` adds the relay-safe variant the reference
figures name ("1024 chunk, 100 ms hold"): after a change a channel keeps its state for whole
chunks until ``hold_s`` has passed, then takes whatever the levels say.

Where we differ, and why:
- The mono mix instead of the left channel: the metrics are computed on the mono mix, and a
  song's left channel is rarely anything else.
- A state takes effect at the end of its chunk, when the whole chunk has been read (as
  ``render`` timelines time their frames); LightShowPi sets it as the chunk is handed to
  the sound card, whose buffer then delays the audio by about as much.
- The Pi's GPU path (``use_gpu = True``, rpi-audio-levels) computes the same band sums on
  the GPU; it widens an empty band to one bin, which never happens at these settings.
"""
from __future__ import annotations

import warnings

import numpy as np

from pi.offline.render import Timeline

CHUNK_AS_SHIPPED = 2048
MIN_HZ, MAX_HZ = 20.0, 15000.0
SD_LOW, SD_HIGH = 0.5, 0.75
ON_ABOVE = 0.5  # hardware_controller.py: digitalWrite(pin, int(brightness > 0.5))
INT16_SCALE = 32768.0
_CHUNKS_PER_BLOCK = 256  # chunks transformed at once: a few MB, never a whole song


def frequency_limits(*, n_channels: int = 8, min_hz: float = MIN_HZ,
                     max_hz: float = MAX_HZ) -> np.ndarray:
    """Each channel's ``(low, high)`` Hz, as ``calculate_channel_frequency`` spaces them
    ``[shape=(n_channels, 2)]``."""
    octaves_per_channel = np.log2(max_hz / min_hz) / n_channels
    limits = [min_hz]
    for _ in range(n_channels):
        limits.append(limits[-1] * 10 ** (3 / (10 * (1 / octaves_per_channel))))
    return np.array([limits[:-1], limits[1:]]).T


def band_bins(*, chunk: int, sample_rate: int, n_channels: int = 8) -> np.ndarray:
    """Each channel's FFT bins ``[start, stop)``, as ``calculate_piff`` truncates them
    ``[shape=(n_channels, 2)]`` int."""
    limits = frequency_limits(n_channels=n_channels)
    return (chunk * limits / sample_rate).astype(np.int64)


def _levels(data: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``calculate_levels`` for chunks of equal length ``[shape=(n, length)]`` int16 values."""
    windowed = data * np.hanning(data.shape[1]).astype(np.float32)
    power = np.abs(np.fft.rfft(windowed, axis=1)[:, :-1]) ** 2
    # Summed power per band from a running sum: ``sum(power[lo:hi])`` for every band at once.
    cum = np.concatenate([np.zeros((len(power), 1)), np.cumsum(power, axis=1)], axis=1)
    stop = np.minimum(bins, power.shape[1])
    psum = cum[:, stop[:, 1]] - cum[:, stop[:, 0]]
    levels = np.zeros_like(psum)
    np.log10(psum, out=levels, where=psum > 0)
    levels[~np.any(data != 0, axis=1)] = 0.0
    return levels


def chunk_levels(y: np.ndarray, *, chunk: int = CHUNK_AS_SHIPPED, sample_rate: int = 44100,
                 n_channels: int = 8) -> np.ndarray:
    """Every chunk's channel levels (log10 band power of the int16 samples), the last chunk
    as short as the song leaves it ``[shape=(ceil(n / chunk), n_channels)]``."""
    if chunk < 16:
        raise ValueError(f"chunk: expected at least 16 samples, found {chunk}")
    data = np.clip(np.round(np.asarray(y, np.float64) * INT16_SCALE), -32768, 32767)
    bins = band_bins(chunk=chunk, sample_rate=sample_rate, n_channels=n_channels)
    n_full = len(data) // chunk
    full = data[:n_full * chunk].reshape(n_full, chunk)
    parts = [_levels(full[i:i + _CHUNKS_PER_BLOCK], bins)
             for i in range(0, n_full, _CHUNKS_PER_BLOCK)]
    if len(data) % chunk:  # readframes' short last read gets its own, shorter window
        parts.append(_levels(data[n_full * chunk:][None, :], bins))
    return np.concatenate(parts) if parts else np.zeros((0, n_channels))


def brightness(levels: np.ndarray) -> np.ndarray:
    """``update_lights``' brightness in [0, 1] with the cache's whole-song statistics (mean
    and std of each channel's positive levels) ``[shape=(n_chunks, n_channels)]``."""
    positive = np.where(levels > 0, levels, np.nan)
    # A channel with no positive level gets NaN statistics, and so brightness 0, as
    # LightShowPi's np.mean of an empty list and nan_to_num give it.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(positive, axis=0), np.nanstd(positive, axis=0)
        out = (levels - mean + std * SD_LOW) / (std * (SD_LOW + SD_HIGH))
    return np.nan_to_num(np.clip(out, 0.0, 1.0))


def relay_states(bright: np.ndarray, *, hold_chunks: int = 1) -> np.ndarray:
    """On/off per chunk: on while brightness > 0.5; a change then holds for ``hold_chunks``
    chunks before the channel may change again (1: LightShowPi's own, no hold)."""
    want = bright > ON_ABOVE
    if hold_chunks <= 1:
        return want
    out = np.zeros_like(want)
    state = np.zeros(want.shape[1], bool)
    held = np.zeros(want.shape[1], np.int64)  # chunks the current state has lasted
    for i, row in enumerate(want):
        change = (row != state) & (held >= hold_chunks)
        state = np.where(change, row, state)
        held = np.where(change, 1, held + 1)
        out[i] = state
    return out


def lightshowpi_timeline(y: np.ndarray, *, chunk: int = CHUNK_AS_SHIPPED, hold_s: float = 0.0,
                         sample_rate: int = 44100, n_channels: int = 8) -> Timeline:
    """LightShowPi's cached show of a song, mono float at ``sample_rate``: one row per chunk,
    taking effect at the chunk's end. ``hold_s``: the shortest run after a change, in whole
    chunks (0: as shipped)."""
    if hold_s < 0:
        raise ValueError(f"hold_s: expected >= 0, found {hold_s}")
    levels = chunk_levels(y, chunk=chunk, sample_rate=sample_rate, n_channels=n_channels)
    bright = brightness(levels)
    hold_chunks = max(1, int(np.ceil(hold_s * sample_rate / chunk - 1e-9)))
    states = relay_states(bright, hold_chunks=hold_chunks)
    ends = np.minimum(np.arange(1, len(states) + 1) * chunk, len(y))
    return Timeline(ends / sample_rate, states, bright.astype(np.float32),
                    duration_s=len(y) / sample_rate)
