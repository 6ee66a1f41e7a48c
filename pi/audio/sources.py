"""Where the show's audio comes from: songs read from files, or live audio from a line-in.

Every source gives the daemon the same two things:

* ``read(timeout)``: the next mono float32 block at the show's sample rate (samples follow
  each other without gaps, counted from 0 when the source opens), ``None`` when nothing is
  ready within ``timeout`` seconds, or :data:`END` when the music is over;
* ``when(end_sample)``: the ``time.monotonic()`` at which a frame that ends at that sample is
  heard, so its lamp state is due (``-inf`` = at once; ``None`` = not known yet, ask again
  within ``poll_s``).

Sources that play songs from files also say which song the block just read belongs to,
``song_start = (song, the sample at which the song starts)``, and what comes next
(``upcoming()``), so that the daemon can play a show planned ahead (pi/show/plans.py).

The sources: :class:`FileSource` here; line-in in pi/audio/linein.py; songs played through a sound
card, with lamps scheduled to the DAC, in pi/audio/playback.py. sounddevice is imported only when a
device is opened, so ``render`` and ``check-config`` work on machines without PortAudio.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

from pi.audio.decode import BLOCK_FRAMES, AudioFileError, iter_song_blocks
from pi.errors import LightshowError
from pi.show.features import DEFAULT_PARAMS
from pi.audio.playlist import Playlist

log = logging.getLogger(__name__)


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()
# What a song that cannot be played raises while decoding (soundfile's errors are
# RuntimeErrors, a vanished file an OSError, NaN samples a ValueError from to_mono).
SONG_ERRORS = (AudioFileError, RuntimeError, OSError, ValueError)
FRAME_S = DEFAULT_PARAMS.n_fft / DEFAULT_PARAMS.sample_rate  # one analysis frame


class DeviceError(LightshowError):
    """An audio device that is missing, busy or lost; the daemon retries with backoff."""


class PlaylistError(LightshowError):
    """A playlist that was played once and had nothing playable in it."""


class Backoff:
    """Retry delays that double from ``base`` up to ``cap`` seconds."""

    def __init__(self, base: float = 1.0, cap: float = 30.0):
        self.base, self.cap = float(base), float(cap)
        self._next = self.base

    def next(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.base


def import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(f"expected the PortAudio library (apt install libportaudio2), "
                          f"found {exc}") from None
    return sounddevice


def find_device(sd, device: str | int, kind: str, *, refresh: bool = False) -> dict:
    """The device's info dict for ``audio.device``: "" for the default, an index, or part of
    a name. ``refresh`` re-scans the devices first, for one plugged in since start-up."""
    try:
        if refresh and hasattr(sd, "_terminate"):
            # PortAudio lists devices once, at initialisation: a USB card plugged back in is
            # only seen after a re-initialisation. Only safe with no stream open, as here.
            sd._terminate()
            sd._initialize()
        info = sd.query_devices(None if device == "" else device, kind)
    except (ValueError, sd.PortAudioError) as exc:
        want = "the default" if device == "" else repr(device)
        raise DeviceError(f"audio.device: expected {want} {kind} device, found {exc}") from None
    return dict(info)


class Source:
    """See the module docstring. Counters are plain ints that audio callbacks increment."""

    name = "source"
    poll_s = 0.1
    counters_label = "audio"        # for the log lines about counters()
    device_label = "audio device"   # what open() waits for when it raises DeviceError

    def __init__(self, *, rate: int):
        self.rate = int(rate)
        # (song, its first sample in this source's count) of the block read() gave last;
        # None for live audio.
        self.song_start: tuple[Path, int] | None = None
        self.status: str | None = None  # for systemctl status: what is playing
        self.overflows = 0   # blocks dropped because a queue of ours was full
        self.underflows = 0  # output blocks padded with silence because our queue was empty
        self.xruns = 0       # over/underflows the device itself reported

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, timeout: float):
        raise NotImplementedError

    def when(self, end_sample: int) -> float | None:
        return -math.inf

    def counters(self) -> dict[str, int]:
        return {"overflows": self.overflows, "underflows": self.underflows,
                "xruns": self.xruns}

    def upcoming(self) -> Path | None:
        """The song after the one playing, when known (for planning it ahead)."""
        feed = getattr(self, "feed", None)
        return feed.upcoming() if feed is not None else None

    def skip_song(self) -> None:
        """With the source closed: the next open() starts the next song (control's `next`)."""
        feed = getattr(self, "feed", None)
        if feed is not None:
            feed.skip()
        self._next = None

    def __enter__(self) -> "Source":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SongFeed:
    """The blocks of a playlist's songs, back to back, decoded at ``sample_rate``.

    A song that cannot be decoded is logged and skipped. A round with nothing playable in it
    is waited out with backoff before the playlist is read again (an empty music folder must
    not spin a core), or raises :class:`PlaylistError` when the playlist plays only once.
    """

    def __init__(self, playlist: Playlist, *, sample_rate: int, block_frames: int,
                 retry: Backoff | None = None, clock=time.monotonic):
        self.playlist = playlist
        self.sample_rate, self.block_frames = int(sample_rate), int(block_frames)
        self.song: Path | None = None
        self.retry = retry or Backoff(2.0, 30.0)
        self.clock = clock
        self._passes = playlist.passes()
        self._round = iter(())
        self._blocks = None
        self._in_round = False
        self._played = 0  # songs in this round that gave at least one block
        self._counted = False
        self._idle_until = -math.inf
        self._songs: list[Path] = []  # this round's songs, for upcoming()
        self.song_samples = 0         # decoded so far of the current song

    @property
    def min_samples(self) -> int:
        """A song shorter than one analysis frame gives no lamp state at all."""
        return math.ceil(FRAME_S * self.sample_rate)

    @property
    def position_s(self) -> float:
        return self.song_samples / self.sample_rate

    def upcoming(self) -> Path | None:
        """The song after the current one in this round (None at a round's end)."""
        try:
            i = self._songs.index(self.song)
        except ValueError:
            return None
        return self._songs[i + 1] if i + 1 < len(self._songs) else None

    def skip(self) -> None:
        self._blocks = None

    def restart_song(self, sample_rate: int) -> None:
        """Decode the current song again from its start, at a new rate (after the device
        was lost, or replaced by one with another rate)."""
        self.sample_rate = int(sample_rate)
        if self.song is not None and self._blocks is not None:
            self._blocks = self._decode(self.song)
            self.song_samples = 0

    def _decode(self, song: Path):
        return iter_song_blocks(song, sample_rate=self.sample_rate,
                                block_frames=self.block_frames)

    def next(self):
        """``(song, block)``; ``None`` while waiting to re-read an unplayable playlist; END."""
        while True:
            if self._blocks is not None:
                try:
                    block = next(self._blocks)
                except StopIteration:
                    self._blocks = None
                    if self.song_samples < self.min_samples:  # nothing to light: say so
                        log.error("skipping a song that cannot be played: %s: expected at "
                                  "least one frame of audio (%d samples), found %d",
                                  self.song, self.min_samples, self.song_samples)
                except SONG_ERRORS as exc:
                    log.error("skipping a song that cannot be played: %s", exc)
                    self._blocks = None
                else:
                    if not self._counted:
                        self._played, self._counted = self._played + 1, True
                    self.song_samples += len(block)
                    return self.song, block
            song = next(self._round, None)
            if song is not None:
                self.song, self._blocks, self._counted = song, self._decode(song), False
                self.song_samples = 0
                continue
            if self.clock() < self._idle_until:
                return None
            if self._in_round and not self._played:
                self._in_round = False
                names = ", ".join(map(str, self.playlist.entries))
                if not self.playlist.repeat:
                    raise PlaylistError(f"playlist: expected at least one playable song, "
                                        f"found none in {names}")
                delay = self.retry.next()
                log.error("playlist: expected at least one playable song, found none in %s; "
                          "reading it again in %.0f s", names, delay)
                self._idle_until = self.clock() + delay
                return None
            if self._played:
                self.retry.reset()
            songs = next(self._passes, None)
            if songs is None:
                self.song = None
                return END
            self._round, self._in_round, self._played = iter(songs), True, 0
            self._songs = list(songs)


class FileSource(Source):
    """Songs decoded without being played: as fast as possible (tests, headless checks), or
    paced in real time (demos), with each state due at its frame's end in song time."""

    name = "file"
    LEAD_S = 0.1   # a block is handed over this early, so its states can be on time
    LATE_S = 0.5   # further behind than this (a slow decode, an idle playlist): catch up

    def __init__(self, playlist: Playlist, *, rate: int, realtime: bool = False,
                 offset_s: float = 0.0, stop: threading.Event | None = None,
                 retry: Backoff | None = None):
        super().__init__(rate=rate)
        block = round(rate * 0.1) if realtime else BLOCK_FRAMES
        self.feed = SongFeed(playlist, sample_rate=rate, block_frames=block, retry=retry)
        self.realtime, self.offset_s = realtime, float(offset_s)
        self.stop = stop or threading.Event()
        self._t0: float | None = None
        self._pos = 0
        self._next = None

    def open(self) -> None:
        self._t0, self._pos = None, 0

    def read(self, timeout: float):
        if self._next is None:
            item = self.feed.next()
            if item is END:
                return END
            if item is None:
                self._t0 = None  # the timeline restarts when songs come back
                self.stop.wait(max(0.0, min(timeout, 0.5)))
                return None
            self._next = item
        if self.realtime:
            now = time.monotonic()
            if self._t0 is None or now - (self._t0 + self._pos / self.rate) > self.LATE_S:
                self._t0 = now - self._pos / self.rate
            due = self._t0 + self._pos / self.rate - self.LEAD_S
            if now < due:
                self.stop.wait(max(0.0, min(timeout, due - now)))  # pacing, and stoppable
                return None
        (song, block), self._next = self._next, None
        self.status = f"playing {song.name}"
        # The feed has counted this block and nothing after it.
        self.song_start = (song, self._pos - (self.feed.song_samples - len(block)))
        self._pos += len(block)
        return block

    def when(self, end_sample: int) -> float:
        if not self.realtime or self._t0 is None:
            return -math.inf
        return self._t0 + end_sample / self.rate + self.offset_s


def close_stream(stream) -> None:
    """Abort (not stop: nothing queued matters any more) and close; a device that is already
    gone may fail both, which must not stop the caller from switching the lights off."""
    if stream is None:
        return
    try:
        stream.abort()
    except Exception as exc:  # noqa: BLE001 - PortAudioError, or worse from a dead device
        log.debug("aborting the audio stream: %s", exc)
    try:
        stream.close()
    except Exception as exc:  # noqa: BLE001
        log.debug("closing the audio stream: %s", exc)
