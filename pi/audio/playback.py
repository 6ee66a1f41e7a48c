"""The playlist source: songs played through a sound card, lamps switched when they are heard.

How latency is accounted for
----------------------------
The lamps are computed from the very samples that are played, and each frame's state is due
when the frame's END sample (``pi.show.features.frame_times``: a frame's state takes effect at
its end) comes out of the DAC:

1. The main thread decodes a block of the song *at the device's rate*, puts it in a small
   bounded queue for the audio callback, and only then analyses that same block (resampled
   to the show's rate when the device runs at another rate). Analysis therefore runs ahead
   of the sound by up to the queue (``QUEUE_S``) plus the device buffer.
2. The audio callback copies samples from the queue into the device buffer and records, for
   the song samples in this buffer, ``(index of the first one, how many,
   time.outputBufferDacTime, time.currentTime, time.monotonic())``. outputBufferDacTime is
   when the buffer's first sample reaches the DAC, on the stream clock; PortAudio computes
   it from the device's own report of the samples still ahead of it (ALSA's delay, which
   through PulseAudio includes the server's latency), so it also covers buffering we do not
   control.
3. A frame ending at device sample ``e`` is heard at ``dac + (e - first) / device_rate``,
   using the record that holds sample ``e - 1``. Samples are counted in *device sample
   frames*, never in bytes or interleaved values: that is how LightShowPi got a delay 4x too
   long on stereo files (a byte count of 16-bit stereo divided by the sample rate). Silence
   padded in on an underflow is not counted, so the song stays aligned after a dropout.
4. The main thread reads the stream clock (``stream.time``) and ``time.monotonic()`` back to
   back to turn that into a monotonic deadline, and applies the state when it passes.
   ``show.latency_ms`` = a number adds that many ms (e.g. for speakers far from the lamps);
   "auto" adds nothing.

PortAudio's ALSA backend (which PulseAudio is reached through) runs the callback to fill the
whole buffer before the device has started, with DAC times that assume it had: ``open`` waits
until the device really consumes audio before any song sample is queued.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque

from pi.show.features import StreamResampler
from pi.audio.playlist import Playlist
from pi.audio.sources import (END, Backoff, DeviceError, SongFeed, Source, close_stream,
                        find_device, import_sounddevice)

log = logging.getLogger(__name__)


class PlaybackSource(Source):
    """See the module docstring. ``device`` as in ``audio.device``."""

    name = "playlist"
    poll_s = 0.005       # how soon a state waiting for its DAC time is looked at again
    FEED_BLOCK_S = 0.1   # decode this much at a time
    QUEUE_S = 0.3        # decoded audio waiting for the callback
    LATENCY_S = 0.1      # device buffer asked for: sync does not depend on it, dropouts do
    START_S = 3.0        # PulseAudio's ALSA plugin takes over a second to start a stream
    LOST_AFTER_S = 5.0

    def __init__(self, playlist: Playlist, *, device: str | int = "", rate: int,
                 block_ms: int = 20, offset_s: float = 0.0,
                 stop: threading.Event | None = None, retry: Backoff | None = None):
        super().__init__(rate=rate)
        self.device, self.block_ms, self.offset_s = device, int(block_ms), float(offset_s)
        self.feed = SongFeed(playlist, sample_rate=rate,
                             block_frames=round(rate * self.FEED_BLOCK_S), retry=retry)
        self.stop = stop or threading.Event()
        self._stream = None
        self._opens = 0

    # --- the audio thread ------------------------------------------------------------------

    def _callback(self, outdata, frames, time_info, flags) -> None:
        # PortAudio's thread: copy queued samples into the buffer and note when they will be
        # heard. No FFT, no I/O, no logging, no locks of ours; counters are plain ints.
        if flags.output_underflow:
            self.xruns += 1
        filled, buf, pos = 0, self._buf, self._buf_pos
        while filled < frames:
            if buf is None:
                try:
                    buf, pos = self._queue.get_nowait(), 0
                except queue.Empty:
                    break
            n = min(frames - filled, len(buf) - pos)
            outdata[filled:filled + n] = buf[pos:pos + n, None]  # mono to every channel
            filled, pos = filled + n, pos + n
            if pos == len(buf):
                buf = None
        self._buf, self._buf_pos = buf, pos
        if filled < frames:
            outdata[filled:] = 0
            if self.expecting:
                self.underflows += 1
        if filled:
            try:
                self._timing.put_nowait((self._played, filled, time_info.outputBufferDacTime,
                                         time_info.currentTime, time.monotonic()))
            except queue.Full:  # when() extrapolates from the next record instead
                self.overflows += 1
        self._played += filled
        self.frames_called += frames

    # --- the main thread -------------------------------------------------------------------

    def open(self) -> None:
        self._sd = sd = import_sounddevice()
        info = find_device(sd, self.device, "output", refresh=self._opens > 0)
        self._opens += 1
        channels = min(2, int(info["max_output_channels"]))
        self.dev_rate = self.rate
        try:  # the show's rate when the device takes it: no resampling on the way
            sd.check_output_settings(device=info["index"], samplerate=self.rate,
                                     channels=channels, dtype="float32")
        except (sd.PortAudioError, ValueError):
            self.dev_rate = int(round(info["default_samplerate"]))
        self.feed.block_frames = round(self.dev_rate * self.FEED_BLOCK_S)
        self.feed.restart_song(self.dev_rate)
        self._to_show = StreamResampler(rate_in=self.dev_rate, rate_out=self.rate)
        self._queue: queue.Queue = queue.Queue(
            maxsize=max(2, math.ceil(self.QUEUE_S / self.FEED_BLOCK_S)))
        self._timing: queue.Queue = queue.Queue(maxsize=4096)
        self._buf, self._buf_pos, self._played, self.frames_called = None, 0, 0, 0
        self.expecting = False
        self._queued, self._next, self._ended, self._song = 0, None, False, None
        self._records: deque = deque(maxlen=4096)
        self._marks: deque = deque()
        self._offset: float | None = None
        blocksize = max(1, round(self.dev_rate * self.block_ms / 1000))
        try:
            self._stream = sd.OutputStream(
                device=info["index"], samplerate=self.dev_rate, channels=channels,
                dtype="float32", blocksize=blocksize, callback=self._callback,
                latency=max(self.LATENCY_S, info["default_low_output_latency"]))
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise DeviceError(f"{info['name']}: cannot start playback: {exc}") from None
        self._name = info["name"]
        self._wait_until_started(blocksize)
        self._progress = (self.frames_called, time.monotonic())
        log.info("playlist: playing through %s at %d Hz, %d channel(s), output latency "
                 "%.1f ms", self._name, self.dev_rate, channels, 1000 * self._stream.latency)

    def _wait_until_started(self, blocksize: int) -> None:
        # Until the callback has asked for more than one buffer-full, the device has not
        # started and the DAC times it reports are fiction (see the module docstring).
        prefill = self._stream.latency * self.dev_rate + 2 * blocksize
        deadline = time.monotonic() + self.START_S
        while (self.frames_called <= prefill and time.monotonic() < deadline
               and not self.stop.wait(0.01)):
            pass
        if self.frames_called == 0:
            self.close()
            raise DeviceError(f"{self._name}: expected the device to ask for audio within "
                              f"{self.START_S:g} s, found it silent")
        if self.frames_called <= prefill:
            log.warning("playlist: %s is slow to start; the first lamps may be early",
                        self._name)

    def read(self, timeout: float):
        self._drain()
        self._check_alive()
        if self._next is None:
            if self._ended:
                if self._played >= self._queued:
                    return END
                self.stop.wait(max(0.0, min(timeout, 0.05)))
                return None
            item = self.feed.next()
            if item is END or item is None:
                self._ended = item is END
                self.expecting = False  # the queue runs dry on purpose: not an underflow
                if item is None:
                    self.stop.wait(max(0.0, min(timeout, 0.5)))
                return None
            song, self._next = item
            # Where the song started, in device samples before this block (the feed has
            # counted this block and nothing after it).
            self._next_start = (song,
                                self._queued - (self.feed.song_samples - len(self._next)))
            if song != self._song:
                self._marks.append((self._queued, song))
                self._song = song
        try:
            self._queue.put(self._next, timeout=max(0.0, timeout))
        except queue.Full:
            return None
        block, self._next = self._next, None
        self._queued += len(block)
        self.expecting = True
        out = self._to_show(block)  # the samples just queued, at the show's rate
        song, start = self._next_start
        self.song_start = (song, round(start * self.rate / self.dev_rate))
        return out if len(out) else None

    def _drain(self) -> None:
        while True:
            try:
                rec = self._timing.get_nowait()
            except queue.Empty:
                break
            self._records.append(rec)
            while self._marks and self._marks[0][0] < rec[0] + rec[1]:
                at, song = self._marks.popleft()
                self.status = f"playing {song.name}"
                heard = self._monotonic(rec[2] + (at - rec[0]) / self.dev_rate, rec)
                log.info("now playing %s (at the DAC from monotonic %.4f s)", song, heard)
        if self._stream is None:
            return
        try:
            self._offset = self._stream.time - time.monotonic()
        except self._sd.PortAudioError:
            pass  # PortAudio does not know the time: the callback's pairing is used instead

    def _monotonic(self, stream_time: float, rec: tuple) -> float:
        if self._offset is not None:
            return stream_time - self._offset
        return rec[4] + (stream_time - rec[3])

    def when(self, end_sample: int) -> float | None:
        self._drain()
        e = end_sample * self.dev_rate / self.rate  # in device samples (fractional if resampled)
        # Rounding in the resampler may put a frame's end a fraction past the last sample
        # queued; its state is due with that sample, not never.
        last = min(math.ceil(e), self._queued) - 1
        recs = self._records
        while len(recs) > 1 and recs[0][0] + recs[0][1] <= last:
            recs.popleft()
        if not recs or recs[0][0] + recs[0][1] <= last:
            return None  # not handed to the device yet
        # recs[0] holds sample `last`, or, when its record was lost, is the next record: the
        # samples are contiguous, so counting back from it gives the same time.
        first, _, dac, _, _ = recs[0]
        return self._monotonic(dac + (e - first) / self.dev_rate + self.offset_s, recs[0])

    def _check_alive(self) -> None:
        if self._stream is None or not self._stream.active:
            raise DeviceError(f"{getattr(self, '_name', 'output')}: the playback stream "
                              f"stopped")
        now, (frames, since) = time.monotonic(), self._progress
        if self.frames_called != frames:
            self._progress = (self.frames_called, now)
        elif now - since > self.LOST_AFTER_S:
            raise DeviceError(f"{self._name}: expected the device to ask for audio every "
                              f"{self.block_ms} ms, found nothing for {now - since:.1f} s")

    def close(self) -> None:
        close_stream(self._stream)
        self._stream = None
