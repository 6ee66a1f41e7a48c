"""``make bench``'s per-hop figures: the daemon's loop over a song in its own blocks.

* :func:`causal_pipeline_us`: the causal show, as line-in plays it (and a song whose plan is
  not ready yet): features.push, the show (encoder, show logic, toggle guard) per block and
  the mock output set per frame.
* :func:`lookahead_pipeline_us`: the look-ahead show, as playlist mode plays it: the
  planner's work for the song (pi.show.plans.plan_song: decode, features, encoder, plan),
  spread over the song's hops, plus the loop playing the plan (frames counted, the plan's
  rows, the switch limit, the mock output).

Both divide wall time by the hops, median of 3 runs, one OpenBLAS thread as on the Pi. The
block is the config's ``audio.block_ms`` (20 ms: one or two hops each), the line-in
source's block: the daemon does its per-block work once for the block's hops, so the
figures are per hop amortised over a real block, not one isolated hop. Larger line-in blocks
would cost latency (onset -> relay within 45 ms).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pi.outputs.base import MockOutput
from pi.show.features import StreamingFeatures


def _median_us(once, repeat: int = 3) -> float:
    once()  # warm: imports, caches, first allocations
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        hops = once()
        rounds.append((time.perf_counter() - t0) / hops * 1e6)
    return float(np.median(rounds))


def _blocks(song: np.ndarray, block: int):
    return [song[i:i + block] for i in range(0, len(song), block)]


def causal_pipeline_us(model: Path, song: np.ndarray, *, block_ms: int) -> float:
    """The causal show's loop (pi/daemon/loop.py ``_pump``, unplanned) over ``song``."""
    from pi.show.pipeline import make_show

    show = make_show(model=model)
    params = show.feature_params
    blocks = _blocks(song, int(round(block_ms / 1000 * params.sample_rate)))

    def once() -> int:
        stream, mock, n = StreamingFeatures(params=params), MockOutput(show.n_channels), 0
        mock.open()
        for block in blocks:
            frames = stream.push(block)
            if len(frames):  # the frames' times as the daemon works them out
                times = [(i * params.hop + params.n_fft) / params.sample_rate
                         for i in range(n, n + len(frames))]
                shown = show.process(frames, times)
                for s, lv, t in zip(shown.states, shown.levels, times):
                    mock.set(s, t=t, levels=lv)
                n += len(frames)
        return n

    return _median_us(once)


def lookahead_pipeline_us(model: Path, song_path: Path, *, block_ms: int) -> float:
    """Playlist mode's work per hop for the song at ``song_path``: planning it
    (pi.show.plans.plan_song, no cache) plus playing the plan (pi/daemon/loop.py ``_pump``
    and ``_planned``, planned)."""
    from pi.audio.decode import read_song
    from pi.show.pipeline import make_show
    from pi.show.plans import plan_song

    show = make_show(model=model)
    params = show.feature_params
    song = read_song(song_path, sample_rate=params.sample_rate)
    blocks = _blocks(song, int(round(block_ms / 1000 * params.sample_rate)))

    def once() -> int:
        plan = plan_song(song_path, make_show(model=model))
        stream, mock = StreamingFeatures(params=params), MockOutput(show.n_channels)
        mock.open()
        for block in blocks:
            count = stream.skip(block)
            if count:
                first = stream.frames_emitted - count
                ends = np.arange(first, first + count) * params.hop + params.n_fft
                times = ends / params.sample_rate
                rows = (ends - params.n_fft) // params.hop
                ok = rows < len(plan.states)
                states = np.zeros((count, plan.states.shape[1]), bool)
                levels = np.zeros(states.shape)
                states[ok], levels[ok] = plan.states[rows[ok]], plan.levels[rows[ok]]
                states, levels = show.guard.apply(states, times, levels)
                for s, lv, t in zip(states, levels, times.tolist()):
                    mock.set(s, t=t, levels=lv)
        return stream.frames_emitted

    return _median_us(once)
