"""Offline rendering: a song file -> the show's timeline, as fast as possible; and the
timeline as CSV, as an FPP sequence (pi/offline/fseq.py) or as xLights timing tracks
(pi/offline/xtiming.py).

Every file is written under a temporary name in the same folder and renamed into place, so
an interrupted render never leaves a half-written file behind.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from pi.audio.decode import iter_song_blocks, prefetched, song_info
from pi.files import atomic_write
from pi.offline import STEP_MS  # noqa: F401 - FPP's and xLights' frame times, also from here
from pi.show.features import StreamingFeatures, frame_times, n_frames_for
from pi.show.lookahead import DEFAULT_LOOKAHEAD, onset_strength
from pi.show.pipeline import Show
from pi.show.stem_accents import song_mel_signals

_EPS_S = 1e-9       # "at or before" in float seconds: far below any frame spacing


@dataclass
class Timeline:
    """``times_s [shape=(n,)]``: when each state takes effect (the end of its frame);
    ``states``, ``activations`` ``[shape=(n, n_channels)]``; ``duration_s``: the song's
    length; ``levels`` ``[shape=(n, n_channels)]`` in [0, 1], the dimmer levels, when asked
    for; ``onsets_s``: when the onsets the show logic acted on reach the lights, when asked
    for."""

    times_s: np.ndarray
    states: np.ndarray
    activations: np.ndarray
    duration_s: float = 0.0
    levels: np.ndarray | None = None
    onsets_s: np.ndarray | None = None


def render_song(path: str | Path, show: Show, *, keep_audio: bool = False,
                levels: bool = False, onsets: bool = False, lookahead: bool = False):
    """Stream a song file through the show. Returns the timeline, and the mono audio if asked
    (for metrics); otherwise no more than one block of audio is held (by the causal show;
    ``lookahead`` plans the whole song, as playlist mode plays it: pi/show/lookahead.py)."""
    params = show.feature_params
    # Decoded in a thread of its own, ahead of the spectra's (render_blocks): libsndfile and
    # soxr release the GIL, so decoding, the spectra and the encoder share the cores.
    blocks = prefetched(iter_song_blocks(path, sample_rate=params.sample_rate))
    rows = None
    if lookahead:  # the planner's inputs are allocated once, for this many frames
        rate_in, _, seconds = song_info(path)
        rows = n_frames_for(math.ceil(seconds * rate_in) * params.sample_rate // rate_in + 1,
                            params=params)
    return render_blocks(blocks, show, keep_audio=keep_audio, levels=levels, onsets=onsets,
                         lookahead=lookahead, expected_frames=rows)


def render_blocks(blocks: Iterable[np.ndarray], show: Show, *, keep_audio: bool = False,
                  levels: bool = False, onsets: bool = False, lookahead: bool = False,
                  expected_frames: int | None = None):
    """Mono blocks at the show's sample rate -> :class:`Timeline` (and the audio if asked).
    ``levels``: also the dimmer levels; ``onsets``: also the onsets the show used;
    ``lookahead``: the whole song planned ahead (:meth:`pi.show.Show.plan`, what playlist
    mode plays) instead of the causal show that line-in plays; ``expected_frames``: about
    how many frames the blocks hold (memory only: the planner's inputs are then allocated
    once)."""
    params = show.feature_params
    parts, audio, n_samples = [], [] if keep_audio else None, 0
    inputs = _PlanInputs(show, expected_frames or 0) if lookahead else None
    # The show logic's own onset test, frame by frame: the marks are the show's, and
    # nothing is computed twice.
    show.mapper.onset_log = [] if onsets and not lookahead else None
    try:
        # Decoding and the spectra in a thread of their own, which numpy and libsndfile let
        # run beside this one for most of its time: on a second core, while this one works
        # out the show. A plan's level and mel bands of each frame in a third: with the
        # spectra they were the longest stage, and the encoder waited for them.
        stages = prefetched(_spectra(blocks, params, audio))
        if inputs is not None:
            stages = prefetched(_with_signals(stages, show.mapper.frame_signals))
        for count, start, frames, levels_bands in stages:
            n_samples += count
            if len(frames):
                if inputs is not None:  # Show.plan_inputs, in two threads
                    inputs.append(show.activations(frames), *levels_bands)
                    continue
                times = frame_times(start + len(frames), params=params)[start:]
                parts.append(show.process(frames, times))
        used = show.mapper.onset_log or []
    finally:
        show.mapper.onset_log = None
    n = show.n_channels
    if inputs is not None:
        acts, level, envelopes, band_signals = inputs.finish()
        del inputs
        parts = [show.plan_signals(acts, level, None, frame_times(len(acts), params=params),
                                   onset_envelope=envelopes[0], accent_envelope=envelopes[1],
                                   band_signals=band_signals)]

    def joined(i, dtype):
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros((0, n), dtype)

    states = joined(0, bool)
    timeline = Timeline(frame_times(len(states), params=params), states,
                        joined(1, np.float32), duration_s=n_samples / params.sample_rate,
                        levels=joined(2, np.float64) if levels else None)
    if onsets and lookahead:
        timeline.onsets_s = timeline.times_s[show.planned_onsets]
    elif onsets:
        # A decision reaches the lights delay_frames frames later (pi/show/mapping.py): the
        # marks go where the lights change, as the channel marks do.
        delay_s = int(show.mapper.params.delay_frames) * show.mapper.dt
        timeline.onsets_s = timeline.times_s[np.flatnonzero(used)] + delay_s
    if keep_audio:
        return timeline, (np.concatenate(audio) if audio else np.zeros(0, np.float32))
    return timeline


def _spectra(blocks: Iterable[np.ndarray], params, audio: list | None):
    """``(samples, first frame, frames, None)`` of each block, keeping the block in
    ``audio`` if given."""
    stream = StreamingFeatures(params=params)
    for block in blocks:
        if audio is not None:
            audio.append(block)
        start = stream.frames_emitted
        yield len(block), start, stream.push(block), None


def _with_signals(spectra: Iterable[tuple], signals):
    """:func:`_spectra`'s tuples with ``signals(frames)`` in place of their None."""
    for count, start, frames, _ in spectra:
        yield count, start, frames, signals(frames)


class _PlanInputs:
    """A song's :meth:`pi.show.Show.plan_inputs`, block after block, in arrays allocated
    once for the expected frames (grown if the song is longer): a list of blocks joined at
    the end would hold the song's mel bands twice (2 x 10 MB for 4 minutes). The bands
    are kept only until their onset strength and the channel accents' band-group signals
    are known (both need the song's loudest band)."""

    def __init__(self, show: Show, rows: int):
        acts, level, bands = show.plan_inputs(np.zeros((0, show.feature_params.n_bins),
                                                        np.float32))
        self._columns = [np.empty((max(rows, 1),) + c.shape[1:], c.dtype)
                         for c in (acts, level, bands)]
        self.n = 0

    def append(self, *block: np.ndarray) -> None:
        end = self.n + len(block[0])
        if end > len(self._columns[0]):
            grown = max(end, len(self._columns[0]) * 5 // 4)
            self._columns = [np.concatenate([c[:self.n], np.empty((grown - self.n,)
                                                                  + c.shape[1:], c.dtype)])
                             for c in self._columns]
        for column, values in zip(self._columns, block):
            column[self.n:end] = values
        self.n = end

    def finish(self) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
        """The activations, levels, the onset strengths of the bands (of one frame, and over
        the planner's ``onset_span_frames``) and their band-group signals
        (pi.show.stem_accents.song_mel_signals); the bands are freed."""
        acts, level, bands = (c[:self.n] for c in self._columns)
        self._columns = None
        envelope, signals = song_mel_signals(bands_db=bands, k=acts.shape[1])
        accent = onset_strength(bands_db=bands, span=DEFAULT_LOOKAHEAD.onset_span_frames)
        return acts, level, (envelope, accent), signals


def write_csv(timeline: Timeline, out: str | Path) -> None:
    """``time_s,ch1..chN,act1..actN``; one row per frame."""
    n = timeline.states.shape[1]
    # A row's states as one string looked up by their bits (a song has few distinct ones):
    # formatting them one by one cost a third of the writing.
    line = "%.6f,%s," + ",".join(["%.5f"] * n) + "\r\n"
    bits, states_text = 1 << np.arange(n, dtype=np.int64), {}
    with atomic_write(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s"] + [f"ch{i + 1}" for i in range(n)] + [f"act{i + 1}" for i in range(n)])
        for i in range(0, len(timeline.times_s), 1024):
            rows = slice(i, i + 1024)
            codes = (timeline.states[rows].astype(np.int64) @ bits).tolist()
            for code in set(codes).difference(states_text):
                states_text[code] = ",".join("1" if code >> c & 1 else "0" for c in range(n))
            acts = timeline.activations[rows]
            fixed = _fixed5_rows(acts)
            if fixed is None:
                f.write("".join([line % (t, states_text[code], *a) for t, code, a in zip(
                    timeline.times_s[rows].tolist(), codes, acts.tolist())]))
                continue
            heads = np.array([b"%.6f,%s," % (t, states_text[code].encode()) for t, code
                              in zip(timeline.times_s[rows].tolist(), codes)])
            head = heads.view(np.uint8).reshape(len(heads), -1)
            f.write(np.concatenate([head, fixed], axis=1)[
                np.concatenate([head != 0, fixed != 0], axis=1)].tobytes().decode("ascii"))


def _fixed5_rows(values: np.ndarray) -> np.ndarray | None:
    """Each row of float32 ``values [shape=(k, n)]`` as ``"%.5f,...,%.5f\\r\\n"`` bytes, the
    same characters as Python's formatting, in a uint8 array ``[shape=(k, width)]`` padded
    with zero bytes; None for anything but finite float32 below 1e9 in size. Formatting
    each number in Python cost most of the writing.

    A float32 times 10**5 is exact in float64 (24 + 17 bits), so rounding it to an integer
    (half to even) is the correctly rounded 5-decimal value that Python prints."""
    if values.dtype != np.float32 or values.ndim != 2 or not values.size or not bool(
            np.isfinite(values).all()) or float(np.abs(values).max()) >= 1e9:
        return None
    k, n = values.shape
    q = np.rint(np.abs(values.astype(np.float64)) * 1e5).astype(np.int64)
    whole, frac = np.divmod(q, 100000)
    digits = max(1, len(str(int(whole.max()))))
    width = 1 + digits + 1 + 5 + 1  # sign, whole part, point, 5 decimals, comma
    cells = np.zeros((k, n, width), np.uint8)
    cells[..., 0] = np.where(np.signbit(values), ord("-"), 0)  # "-0.00000" too, as Python
    for j in range(digits):
        place = 10 ** (digits - 1 - j)
        shown = (whole >= place) | (j == digits - 1)
        cells[..., 1 + j] = np.where(shown, ord("0") + whole // place % 10, 0)
    cells[..., 1 + digits] = ord(".")
    for j in range(5):
        cells[..., 2 + digits + j] = ord("0") + frac // 10 ** (4 - j) % 10
    cells[..., -1] = ord(",")
    cells[:, -1, -1] = ord("\r")
    return np.concatenate([cells.reshape(k, n * width), np.full((k, 1), ord("\n"), np.uint8)],
                          axis=1)


def n_steps(duration_s: float, *, step_ms: int) -> int:
    """Frames of ``step_ms`` that cover a song: the last one starts before its end."""
    return int(np.ceil(duration_s * 1000.0 / step_ms - 1e-6))


def step_rows(timeline: Timeline, *, step_ms: int) -> np.ndarray:
    """For frame ``k`` of a ``step_ms`` grid over the whole song, the render row in effect at
    ``k * step_ms``: the last one at or before it, or -1 before the first."""
    t = np.arange(n_steps(timeline.duration_s, step_ms=step_ms)) * (step_ms / 1000.0)
    return np.searchsorted(timeline.times_s, t + _EPS_S, side="right") - 1


def step_frames(timeline: Timeline, *, step_ms: int, levels: bool = False) -> np.ndarray:
    """``[shape=(n_steps, n_channels)]`` uint8: 255 for on, or with ``levels`` the dimmer
    level as the sACN output sends it (``round(level * 255)``); 0 before the first row."""
    rows = step_rows(timeline, step_ms=step_ms)
    if levels:
        if timeline.levels is None:
            raise ValueError("levels: expected a timeline rendered with levels=True, found "
                             "none")
        values = np.rint(np.clip(timeline.levels, 0.0, 1.0) * 255)
    else:
        values = timeline.states * 255
    out = np.zeros((len(rows), timeline.states.shape[1]), np.uint8)
    out[rows >= 0] = values[rows[rows >= 0]]
    return out


def producer() -> str:
    """``lightshow <version>``, FPP's ``sp`` header and xLights' SourceVersion."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lightshow {version('lightshow')}"
    except PackageNotFoundError:
        return "lightshow"


def write_fseq(timeline: Timeline, out: str | Path, *, media_file: str, step_ms: int = 25,
               levels: bool = False, compression: str = "none") -> int:
    """The timeline as an FPP sequence; returns the file's size in bytes."""
    from pi.offline.fseq import FseqError, fseq_bytes

    if n_steps(timeline.duration_s, step_ms=step_ms) < 1:
        raise FseqError(f"{media_file}: expected some audio to sequence, found "
                        f"{timeline.duration_s:.3f} s")
    data = fseq_bytes(step_frames(timeline, step_ms=step_ms, levels=levels), step_ms=step_ms,
                      media_file=media_file, producer=producer(), compression=compression)
    with atomic_write(out) as f:
        f.write(data)
    return len(data)


def write_xtiming(timeline: Timeline, out: str | Path, *, song_name: str,
                  step_ms: int = 25) -> None:
    """xLights timing tracks on the ``step_ms`` grid of the FPP sequence: ``<song> chN``
    with a mark per time channel N is on (from its switch-on to its switch-off), and
    ``<song> onsets`` with a mark starting at each onset the show used."""
    from pi.offline.xtiming import beat_marks, on_marks, timings_xml

    if timeline.onsets_s is None:
        raise ValueError("xtiming: expected a timeline rendered with onsets=True, found none")
    frames = step_frames(timeline, step_ms=step_ms)
    tracks = [(f"{song_name} ch{c + 1}", on_marks(frames[:, c] > 0, step_ms=step_ms))
              for c in range(frames.shape[1])]
    # An onset first shows in the frame at or after it, as a switch does.
    ks = np.ceil(timeline.onsets_s * 1000.0 / step_ms - 1e-6).astype(int)
    tracks.append((f"{song_name} onsets",
                   beat_marks(ks, n_frames=len(frames), step_ms=step_ms)))
    data = timings_xml(tracks, source=producer())
    with atomic_write(out) as f:
        f.write(data)
