"""Library ingest: song files -> cached feature frames, with bad songs skipped and reported.

Every song goes through :func:`pi.audio.decode.iter_song_blocks` and
:class:`pi.show.features.StreamingFeatures`, the same path the daemon uses, so training sees the
Pi's features bit for bit. Alongside the 513 dB bins each frame gets the RMS level (dBFS,
``20 * log10(rms)`` floored at ``params.db_floor``, so a full-scale sine reads about -3 dBFS)
of exactly the samples that frame covers; the end detector and trimming work from it.

The cache holds two files per song, named by the sha256 of the file's bytes, the feature
params and :data:`CACHE_VERSION`: renaming a song still hits, changing any param misses, and a
damaged entry is recomputed. ``<key>.npz`` holds the small things (RMS levels, duration,
rates); ``<key>.frames.npy`` the frames, uncompressed and memory-mapped on load, so a cached
song costs a page-cache mapping instead of a read and a copy. Skip decisions (silent, too short) are taken after the cache, so
changing ``min_seconds`` never needs a re-decode.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pi.audio import decode
from pi.files import atomic_write
from pi.show.bundle import sha256_file
from pi.show.features import (DEFAULT_PARAMS, FeatureParams, StreamingFeatures, frame_times,
                         n_frames_for)

# Bump whenever what is stored in an entry (or how it is computed) changes.
CACHE_VERSION = 2  # 2: frames in their own memory-mapped .npy
SILENCE_DBFS = -60.0
# Wesnoth's jingles and its silence track are not songs; pass these as ``exclude`` for it.
JINGLE_PATTERNS = ("silence.*", "victory*", "defeat*")
SKIP_UNREADABLE, SKIP_SILENT, SKIP_SHORT = "unreadable", "silent", "too short"


@dataclass
class SongFeatures:
    """One song's features, as the rest of training consumes them."""

    path: Path
    frames: np.ndarray  # [shape=(n_frames, 513)] float32 dB
    rms_db: np.ndarray  # [shape=(n_frames,)] per-frame RMS in dBFS of the same frame's samples
    duration_s: float  # decoded length at the feature rate
    sample_rate_in: int
    channels_in: int

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def times(self, *, params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
        """Frame end times in seconds ``[shape=(n_frames,)]``, as :func:`frame_times` gives."""
        return frame_times(self.n_frames, params=params)


def is_excluded(path: str | Path, patterns: Iterable[str] = JINGLE_PATTERNS) -> bool:
    """Whether the file *name* matches any glob in ``patterns`` (case-insensitive)."""
    name = Path(path).name.lower()
    return any(fnmatch.fnmatch(name, p.lower()) for p in patterns)


def scan_library(*roots: str | Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Audio files (wav/flac/ogg/mp3) under ``roots``, recursively and sorted.

    Files whose name matches an ``exclude`` glob (e.g. :data:`JINGLE_PATTERNS`) are left out.
    """
    patterns = tuple(exclude)
    return [p for p in decode.find_songs(*roots) if not is_excluded(p, patterns)]


def cache_key(content_sha256: str, *, params: FeatureParams = DEFAULT_PARAMS) -> str:
    blob = json.dumps({"content": content_sha256, "params": params.as_dict(),
                       "version": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _rms_db(x: np.ndarray, n_frames: int, *, params: FeatureParams) -> np.ndarray:
    """RMS dBFS of windows ``[i * hop, i * hop + n_fft)`` of ``x`` for ``i < n_frames``."""
    # A running sum of squares gives every window's energy in one pass over the block.
    c = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    starts = np.arange(n_frames) * params.hop
    energy = np.maximum(c[starts + params.n_fft] - c[starts], 0.0) / params.n_fft
    floor = 10.0 ** (params.db_floor / 10.0)
    return (10.0 * np.log10(np.maximum(energy, floor))).astype(np.float32)


def extract_features(path: str | Path, *, params: FeatureParams = DEFAULT_PARAMS) -> SongFeatures:
    """Decode ``path`` block by block into :class:`SongFeatures`; decode errors propagate."""
    rate_in, channels_in, _ = decode.song_info(path)
    stream = StreamingFeatures(params=params)
    frames, levels, n_samples = [], [], 0
    for block in decode.iter_song_blocks(path, sample_rate=params.sample_rate):
        n_samples += len(block)
        new = stream.push(block)
        frames.append(new)
        # The very windows the features were computed from.
        levels.append(_rms_db(stream.last_input, len(new), params=params))
    if stream.frames_emitted != n_frames_for(n_samples, params=params):
        raise RuntimeError(f"{path}: expected {n_frames_for(n_samples, params=params)} frames "
                           f"for {n_samples} samples, found {stream.frames_emitted}")
    return SongFeatures(
        path=Path(path),
        frames=np.concatenate(frames) if frames else np.zeros((0, params.n_bins), np.float32),
        rms_db=np.concatenate(levels) if levels else np.zeros(0, np.float32),
        duration_s=n_samples / params.sample_rate,
        sample_rate_in=int(rate_in), channels_in=int(channels_in))


def _save_entry(file: Path, song: SongFeatures) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target then renamed, so a crash never leaves a half-written entry.
    with atomic_write(file) as f:
        np.savez(f, rms_db=song.rms_db, duration_s=np.float64(song.duration_s),
                 sample_rate_in=np.int64(song.sample_rate_in),
                 channels_in=np.int64(song.channels_in), version=np.int64(CACHE_VERSION))
    # The frames last: an entry without them (a crash in between) is simply recomputed.
    frames_file = _frames_file(file)
    try:
        with atomic_write(frames_file) as f:
            np.save(f, np.ascontiguousarray(song.frames, np.float32), allow_pickle=False)
    except BaseException:
        file.unlink(missing_ok=True)
        raise


def _frames_file(entry: Path) -> Path:
    return entry.with_suffix(".frames.npy")


def _load_entry(file: Path, path: Path, *, params: FeatureParams) -> SongFeatures | None:
    """The cached song, or ``None`` when the entry is missing or damaged in any way."""
    try:
        # Copy-on-write: a caller that edits the frames in place never touches the cache.
        frames = np.load(_frames_file(file), mmap_mode="c", allow_pickle=False)
        with np.load(file, allow_pickle=False) as z:
            song = SongFeatures(path=path, frames=frames, rms_db=z["rms_db"],
                                duration_s=float(z["duration_s"]),
                                sample_rate_in=int(z["sample_rate_in"]),
                                channels_in=int(z["channels_in"]))
            version = int(z["version"])
    except Exception:  # truncated zip, missing keys, bad dtype: all mean "recompute"
        return None
    ok = (version == CACHE_VERSION and song.frames.dtype == np.float32
          and song.frames.ndim == 2 and song.frames.shape[1] == params.n_bins
          and song.rms_db.shape == (len(song.frames),))
    return song if ok else None


def load_song(path: str | Path, *, cache_dir: Path | None,
              params: FeatureParams = DEFAULT_PARAMS) -> tuple[SongFeatures, bool]:
    """``(features, cache_hit)`` for one song, through the cache when ``cache_dir`` is given."""
    path = Path(path)
    if cache_dir is None:
        return extract_features(path, params=params), False
    entry = Path(cache_dir) / f"{cache_key(sha256_file(path), params=params)}.npz"
    song = _load_entry(entry, path, params=params) if entry.exists() else None
    if song is not None:
        return song, True
    song = extract_features(path, params=params)
    try:
        _save_entry(entry, song)
    except OSError as exc:  # a full disk or read-only cache costs speed, never the song
        warnings.warn(f"{entry}: expected a writable cache entry, found {exc}", stacklevel=2)
    return song, False


def skip_reason(song: SongFeatures, *, min_seconds: float) -> str | None:
    if song.duration_s < min_seconds or song.n_frames == 0:
        return f"{SKIP_SHORT}: expected at least {min_seconds:g} s, found {song.duration_s:.2f} s"
    loudest = float(song.rms_db.max())
    if loudest < SILENCE_DBFS:
        return (f"{SKIP_SILENT}: expected a frame louder than {SILENCE_DBFS:g} dBFS, "
                f"found at most {loudest:.1f} dBFS")
    return None


def _load_or_error(path: Path, cache_dir: Path | None,
                   params: FeatureParams) -> tuple[SongFeatures | None, bool, str | None]:
    try:
        song, hit = load_song(path, cache_dir=cache_dir, params=params)
    except Exception as exc:  # any decoder failure is this song's problem, not the run's
        return None, False, f"{SKIP_UNREADABLE}: {exc}"
    return song, hit, None


def load_library(paths: Sequence[str | Path], *, cache_dir: Path | None,
                 params: FeatureParams = DEFAULT_PARAMS, min_seconds: float = 5.0,
                 progress: bool = True,
                 workers: int | None = None) -> tuple[list[SongFeatures], list[tuple[Path, str]]]:
    """Features of every usable song, and ``(path, reason)`` for every skipped one, in order.

    A song that cannot be decoded, is silent (no frame above -60 dBFS) or is shorter than
    ``min_seconds`` is skipped with a reason; nothing about one song can abort the run.
    ``cache_dir=None`` disables the cache. ``workers`` threads (default: up to 4, one per
    core) decode songs side by side: libsndfile and hashing release the GIL, and threads,
    unlike processes, need not pickle every song's frames back.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    workers = workers or min(4, os.cpu_count() or 1)
    songs: list[SongFeatures] = []
    skipped: list[tuple[Path, str]] = []
    hits = 0
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc="features", unit="song", file=sys.stderr,
                 disable=not progress) as bar:
        results = pool.map(lambda p: _load_or_error(p, cache_dir, params), paths)
        for path, (song, hit, error) in zip(paths, results):
            reason = error or skip_reason(song, min_seconds=min_seconds)
            if reason is None:
                songs.append(song)
            else:
                skipped.append((path, reason))
            hits += hit
            bar.set_postfix(cached=hits, skipped=len(skipped), refresh=False)
            bar.update()
    return songs, skipped


def split_by_song(songs: Sequence, *, val_fraction: float = 0.2,
                  seed: int = 0) -> tuple[list, list]:
    """``(train, val)`` split of whole songs, never of frames; deterministic for a given seed.

    Songs are ordered by path before shuffling, so the split does not depend on input order.
    With two or more songs at least one is held out and at least one kept for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), found {val_fraction}")
    n = len(songs)
    if n < 2:
        return list(songs), []
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    order = sorted(range(n), key=lambda i: str(getattr(songs[i], "path", songs[i])))
    held = {order[i] for i in np.random.default_rng(seed).permutation(n)[:n_val]}
    return ([s for i, s in enumerate(songs) if i not in held],
            [s for i, s in enumerate(songs) if i in held])


def corpus_summary(songs: Sequence[SongFeatures],
                   skipped: Sequence[tuple[Path, str]]) -> dict:
    """JSON-serialisable counts, minutes and skip reasons (grouped, with file names)."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason.split(":", 1)[0], []).append(Path(path).name)
    return {
        "n_songs": len(songs),
        "n_skipped": len(skipped),
        "n_frames": int(sum(s.n_frames for s in songs)),
        "total_minutes": round(sum(s.duration_s for s in songs) / 60.0, 3),
        "skipped_by_reason": by_reason,
        "skipped": [{"file": Path(p).name, "reason": r} for p, r in skipped],
    }
