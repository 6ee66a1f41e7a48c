"""The line-in source: live audio from a capture device (a USB sound card's line input)."""
from __future__ import annotations

import logging
import math
import queue
import time
from collections import deque

from pi.show.features import StreamResampler, to_mono
from pi.audio.sources import DeviceError, Source, close_stream, find_device, import_sounddevice

log = logging.getLogger(__name__)


class LineInSource(Source):
    """Live audio from a capture device, at the device's own rate (often 48 kHz), mixed to
    mono and resampled to the show's rate here, in the main thread. States are due as soon
    as their frame is complete (plus a positive ``offset_s``: lights cannot run early)."""

    name = "line-in"
    poll_s = 0.02
    QUEUE_S = 2.0        # audio the queue holds before blocks are dropped (and counted)
    FIRST_DATA_S = 5.0   # PulseAudio's ALSA plugin takes over a second to deliver the first
    LOST_AFTER_S = 3.0

    def __init__(self, *, device: str | int = "", rate: int, block_ms: int = 20,
                 offset_s: float = 0.0):
        super().__init__(rate=rate)
        self.device, self.block_ms = device, int(block_ms)
        self.offset_s = max(0.0, float(offset_s))
        self._stream = None
        self._opens = 0
        self._arrivals: deque[tuple[int, float]] = deque()

    def open(self) -> None:
        sd = import_sounddevice()
        info = find_device(sd, self.device, "input", refresh=self._opens > 0)
        self._opens += 1
        native = int(round(info["default_samplerate"]))
        channels = min(2, int(info["max_input_channels"]))
        blocksize = max(1, round(native * self.block_ms / 1000))
        self._queue: queue.Queue = queue.Queue(maxsize=max(4, round(self.QUEUE_S * 1000
                                                                    / self.block_ms)))
        self._resample = StreamResampler(rate_in=native, rate_out=self.rate)
        self._pos, self._arrivals = 0, deque()
        try:
            self._stream = sd.InputStream(device=info["index"], samplerate=native,
                                          channels=channels, dtype="float32",
                                          blocksize=blocksize, latency="low",
                                          callback=self._callback)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise DeviceError(f"{info['name']}: cannot start capturing: {exc}") from None
        self._opened_at, self._last_data = time.monotonic(), None
        self._name = info["name"]
        self.status = f"line-in from {self._name}"
        log.info("line-in: %s at %d Hz, %d channel(s), %d-sample blocks, input latency "
                 "%.1f ms", info["name"], native, channels, blocksize,
                 1000 * self._stream.latency)

    def _callback(self, indata, frames, time_info, flags) -> None:
        # PortAudio's thread: copy the samples and hand them over, nothing more. No FFT, no
        # I/O, no logging, no locks of ours: anything slow here makes the device drop audio.
        if flags.input_overflow:
            self.xruns += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.overflows += 1

    def read(self, timeout: float):
        try:
            data = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            self._check_alive()
            return None
        now = self._last_data = time.monotonic()
        try:
            block = self._resample(to_mono(data, name="line-in"))
        except ValueError:  # NaN/inf from a broken driver: drop the block, keep the show
            self.overflows += 1
            return None
        self._pos += len(block)
        if self.offset_s:
            self._arrivals.append((self._pos, now))
        return block if len(block) else None

    def _check_alive(self) -> None:
        now = time.monotonic()
        name = getattr(self, "_name", "line-in")
        if self._stream is None or not self._stream.active:
            raise DeviceError(f"{name}: the capture stream stopped")
        if self._last_data is None and now - self._opened_at > self.FIRST_DATA_S:
            raise DeviceError(f"{name}: expected audio within {self.FIRST_DATA_S:g} s of "
                              f"starting, found none")
        if self._last_data is not None and now - self._last_data > self.LOST_AFTER_S:
            raise DeviceError(f"{name}: expected audio every {self.block_ms} ms, found none "
                              f"for {now - self._last_data:.1f} s")

    def when(self, end_sample: int) -> float:
        if not self.offset_s:
            return -math.inf
        while len(self._arrivals) > 1 and self._arrivals[0][0] < end_sample:
            self._arrivals.popleft()
        return self._arrivals[0][1] + self.offset_s if self._arrivals else -math.inf

    def close(self) -> None:
        close_stream(self._stream)
        self._stream = None
