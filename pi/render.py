"""Offline rendering: a song file -> the show's timeline, as fast as possible."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from pi.decode import iter_song_blocks
from pi.features import StreamingFeatures, frame_times
from pi.show import Show


@dataclass
class Timeline:
    """``times_s [shape=(n,)]``: when each state takes effect (the end of its frame);
    ``states``, ``activations`` ``[shape=(n, n_channels)]``."""

    times_s: np.ndarray
    states: np.ndarray
    activations: np.ndarray


def render_song(path: str | Path, show: Show, *, keep_audio: bool = False):
    """Stream a song file through the show. Returns the timeline, and the mono audio if asked
    (for metrics); otherwise no more than one block of audio is held."""
    blocks = iter_song_blocks(path, sample_rate=show.feature_params.sample_rate)
    return render_blocks(blocks, show, keep_audio=keep_audio)


def render_blocks(blocks: Iterable[np.ndarray], show: Show, *, keep_audio: bool = False):
    """Mono blocks at the show's sample rate -> :class:`Timeline` (and the audio if asked)."""
    params = show.feature_params
    stream = StreamingFeatures(params=params)
    parts, audio = [], []
    for block in blocks:
        if keep_audio:
            audio.append(block)
        start = stream.frames_emitted
        frames = stream.push(block)
        if len(frames):
            times = frame_times(start + len(frames), params=params)[start:]
            parts.append(show.process(frames, times))
    n = show.n_channels
    states = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, n), bool)
    acts = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, n), np.float32)
    timeline = Timeline(frame_times(len(states), params=params), states, acts)
    if keep_audio:
        return timeline, (np.concatenate(audio) if audio else np.zeros(0, np.float32))
    return timeline


def write_csv(timeline: Timeline, out: str | Path) -> None:
    """``time_s,ch1..chN,act1..actN``; one row per frame."""
    n = timeline.states.shape[1]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s"] + [f"ch{i + 1}" for i in range(n)] + [f"act{i + 1}" for i in range(n)])
        for t, s, a in zip(timeline.times_s, timeline.states, timeline.activations):
            w.writerow([f"{t:.6f}", *s.astype(int).tolist(), *(f"{v:.5f}" for v in a)])
