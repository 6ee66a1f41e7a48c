"""A stand-in for the sounddevice module: devices, streams whose callbacks run in a thread at
the real-time pace of a sound card, and a record of what was played and when it reached the
"DAC". The stream clock is time.monotonic() + CLOCK_OFFSET, so code that confuses the two
clocks is off by 1000 s, not by nothing."""
from __future__ import annotations

import threading
import time
import types
from types import SimpleNamespace

import numpy as np

CLOCK_OFFSET = 1000.0


class PortAudioError(Exception):
    pass


def _device(index, name, ins, outs, rate):
    return {"name": name, "index": index, "hostapi": 0, "max_input_channels": ins,
            "max_output_channels": outs, "default_samplerate": float(rate),
            "default_low_input_latency": 0.01, "default_low_output_latency": 0.01,
            "default_high_input_latency": 0.04, "default_high_output_latency": 0.04}


class FakeSoundDevice(types.ModuleType):
    """``rates``: sample rates the output accepts; ``fail_opens``: streams that fail to open
    first; ``die_after_s``: the first stream goes silent and inactive after this long;
    ``signal``: what the input device hears, (n, channels) at ``input_rate``."""

    PortAudioError = PortAudioError

    def __init__(self, *, rates=(48000,), latency=0.1, fail_opens=0, die_after_s=None,
                 signal=None, input_rate=48000):
        super().__init__("sounddevice")
        self.devices = [_device(0, "Fake USB Audio", 2, 0, input_rate),
                        _device(1, "Fake HDMI", 0, 2, rates[0])]
        self.default = SimpleNamespace(device=[0, 1])
        self.rates, self.latency = tuple(rates), latency
        self.fail_opens, self.die_after_s = fail_opens, die_after_s
        self.signal = signal
        self.streams: list[_Stream] = []
        self.input_done = threading.Event()
        sd = self

        class OutputStream(_Stream):
            kind = "output"

            def __init__(self, **kw):
                sd._open(self, kw)

        class InputStream(_Stream):
            kind = "input"

            def __init__(self, **kw):
                sd._open(self, kw)

        self.OutputStream, self.InputStream = OutputStream, InputStream

    def _open(self, stream, kw):
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise PortAudioError("Device unavailable [PaErrorCode -9985]")
        die = self.die_after_s if not self.streams else None
        stream.setup(self, die_after_s=die, **kw)
        self.streams.append(stream)

    def query_hostapis(self):
        return [{"name": "Fake ALSA"}]

    def query_devices(self, device=None, kind=None):
        if kind is None and device is None:
            return list(self.devices)
        key = "max_input_channels" if kind == "input" else "max_output_channels"
        if device is None:
            device = self.default.device[0 if kind == "input" else 1]
        if isinstance(device, int):
            info = self.devices[device]
            if kind and not info[key]:
                raise ValueError(f"Not an {kind} device: {device}")
            return info
        found = [d for d in self.devices if device.lower() in d["name"].lower()
                 and (not kind or d[key])]
        if len(found) != 1:
            raise ValueError(f"No {kind} device matching {device!r}" if not found
                             else f"Multiple {kind} devices found for {device!r}")
        return found[0]

    def check_output_settings(self, device=None, samplerate=None, channels=None, dtype=None):
        if samplerate not in self.rates:
            raise PortAudioError("Invalid sample rate [PaErrorCode -9997]")


class _Stream:
    kind = "output"

    def setup(self, sd, *, device, samplerate, channels, dtype, blocksize, callback,
              latency, die_after_s=None):
        self.sd, self.samplerate, self.channels = sd, int(samplerate), channels
        self.blocksize, self.callback = blocksize, callback
        self.latency = float(sd.latency)
        self.die_after_s = die_after_s
        self.played: list[np.ndarray] = []       # output: every buffer, as filled
        self.dac_times: list[float] = []         # output: stream-clock DAC time of each
        self.active = False
        self._quit = threading.Event()
        self._thread = None
        self._pos = 0  # input: next sample of sd.signal

    @property
    def time(self) -> float:
        return time.monotonic() + CLOCK_OFFSET

    def start(self):
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        period = self.blocksize / self.samplerate
        t0 = time.monotonic()
        k = 0
        while not self._quit.is_set():
            if self.die_after_s is not None and time.monotonic() - t0 > self.die_after_s:
                self.active = False  # like a USB card pulled out: no more callbacks
                return
            now = self.time
            flags = SimpleNamespace(output_underflow=False, input_overflow=False)
            if self.kind == "output":
                out = np.zeros((self.blocksize, self.channels), np.float32)
                info = SimpleNamespace(outputBufferDacTime=now + self.latency,
                                       currentTime=now, inputBufferAdcTime=0.0)
                self.callback(out, self.blocksize, info, flags)
                self.played.append(out)
                self.dac_times.append(now + self.latency)
            else:
                sig = self.sd.signal
                chunk = sig[self._pos:self._pos + self.blocksize]
                self._pos += len(chunk)
                if len(chunk) < self.blocksize:
                    self.sd.input_done.set()
                    chunk = np.concatenate([chunk, np.zeros((self.blocksize - len(chunk),
                                                             sig.shape[1]), np.float32)])
                info = SimpleNamespace(inputBufferAdcTime=now - period, currentTime=now,
                                       outputBufferDacTime=0.0)
                self.callback(chunk.astype(np.float32), self.blocksize, info, flags)
            k += 1
            # Paced like a sound card: the k-th buffer is due k periods after the start.
            self._quit.wait(max(0.0, t0 + k * period - time.monotonic()))

    def abort(self):
        self._quit.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.active = False

    stop = abort

    def close(self):
        self.abort()
