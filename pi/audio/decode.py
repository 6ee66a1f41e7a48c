"""Decode songs in blocks to mono at the feature rate, never holding a whole song."""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import numpy as np

from pi.errors import LightshowError
from pi.show.features import SAMPLE_RATE, StreamResampler, to_mono

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
BLOCK_FRAMES = 32768
T = TypeVar("T")


class AudioFileError(LightshowError):
    """A song that cannot be decoded; the message names the file."""


def song_info(path: str | Path) -> tuple[int, int, float]:
    """``(sample_rate, channels, seconds)`` of a song, or :class:`AudioFileError`."""
    import soundfile as sf

    if not Path(path).is_file():  # libsndfile says only "System error"
        raise AudioFileError(f"{path}: expected a readable wav/flac/ogg/mp3 file, found "
                             f"{'a folder' if Path(path).is_dir() else 'no such file'}")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise AudioFileError(f"{path}: expected a readable wav/flac/ogg/mp3 file, "
                             f"found {exc}") from exc
    return info.samplerate, info.channels, info.frames / max(info.samplerate, 1)


def iter_song_blocks(path: str | Path, *, sample_rate: int = SAMPLE_RATE,
                     block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks ``[shape=(n,)]`` at ``sample_rate`` from a song file."""
    import soundfile as sf

    rate_in, _, _ = song_info(path)
    resampler = StreamResampler(rate_in=rate_in, rate_out=sample_rate)
    try:
        for block in sf.blocks(str(path), blocksize=block_frames, dtype="float32",
                               always_2d=True):
            out = resampler(to_mono(block, name=str(path)))
            if len(out):
                yield out
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioFileError(f"{path}: decoding failed part-way: {exc}") from exc
    except ValueError as exc:  # to_mono: NaN or inf samples (a float file can hold them)
        raise AudioFileError(str(exc)) from exc
    tail = resampler(np.zeros(0, np.float32), last=True)
    if len(tail):
        yield tail


_DONE = object()


def prefetched(blocks: Iterable[T], *, depth: int = 2) -> Iterator[T]:
    """``blocks`` as they come, made up to ``depth`` ahead in a thread of their own: decoding
    (libsndfile, soxr) and numpy's FFT release the GIL, so a render decodes on one core
    while the show is worked out on another. An error while making them is raised here, in
    order; stopping early (``close()``, an error in the caller) stops the thread."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def make() -> None:
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        ahead.put((block, None), timeout=0.1)  # a caller gone: stop
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            ahead.put((_DONE, exc))

    thread = threading.Thread(target=make, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            block, error = ahead.get()
            if block is _DONE:
                if error is not None:
                    raise error
                return
            yield block
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put() through, so the thread ends
            try:
                ahead.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def read_song(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Whole song as mono float32 ``[shape=(n,)]``: for the workshop and offline tools."""
    blocks = list(iter_song_blocks(path, sample_rate=sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def find_songs(*roots: str | Path) -> list[Path]:
    """Audio files under files/folders, recursively, sorted for reproducibility."""
    found: list[Path] = []
    for root in map(Path, roots):
        if root.is_dir():
            found += [p for p in root.rglob("*")
                      if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
        elif root.is_file():
            found.append(root)
        else:
            raise FileNotFoundError(f"{root}: expected an audio file or folder, found nothing")
    return sorted(found)
