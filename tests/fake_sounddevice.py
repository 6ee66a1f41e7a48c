"""A stand-in for the sounddevice module: devices, streams whose callbacks run in a thread at
the pace of a sound card, and a record of what was played and when it reached the "DAC". The
stream clock is the monotonic clock + CLOCK_OFFSET, so code that confuses the two clocks is
off by 1000 s, not by nothing.

The pace is real time, or a :class:`VirtualClock`'s. A virtual clock only moves when every
thread taking part (the test's daemon thread, each stream's thread) is waiting on it, so
however busy the machine is, the daemon never falls behind the device: no underflows, and
every lamp time is exact. :func:`use_virtual_time` puts the daemon, the playlist source and
the mock output on it."""
from __future__ import annotations

import math
import queue
import threading
import time
import types
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np

CLOCK_OFFSET = 1000.0
DEADLOCK_S = 60.0  # real seconds with every thread waiting on nothing that can come: a bug


class VirtualClock:
    """Time that advances only when all participating threads wait: then it jumps to the
    earliest deadline among them. Waits end early when their condition becomes true (the
    waker calls :meth:`poke` after changing anything a condition looks at)."""

    def __init__(self, start: float = 100.0):
        self._now = float(start)
        self._cond = threading.Condition()
        self._members: set[threading.Thread] = set()
        self._waiting: dict[threading.Thread, tuple[float, object]] = {}

    def monotonic(self) -> float:
        return self._now

    def join(self, thread: threading.Thread | None = None) -> None:
        with self._cond:
            self._members.add(thread or threading.current_thread())

    def leave(self, thread: threading.Thread | None = None) -> None:
        with self._cond:
            self._members.discard(thread or threading.current_thread())
            self._cond.notify_all()

    @contextmanager
    def member(self):
        self.join()
        try:
            yield self
        finally:
            self.leave()

    def poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        self.wait_until(self._now + max(0.0, seconds))

    def wait_until(self, deadline: float, ready=lambda: False) -> bool:
        """Until ``ready()`` or the virtual ``deadline``; returns ``ready()``."""
        me = threading.current_thread()
        if me not in self._members:
            raise RuntimeError(f"{me.name} waits on the virtual clock without joining it")
        real_deadline = time.monotonic() + DEADLOCK_S
        with self._cond:
            self._waiting[me] = (deadline, ready)
            try:
                while not ready() and self._now < deadline:
                    # Time moves only when every member waits and none of them is free to go
                    # on (its condition true, or its deadline reached but not yet woken).
                    if self._members <= self._waiting.keys() and not any(
                            d <= self._now or r() for d, r in self._waiting.values()):
                        due = min(d for d, _ in self._waiting.values())
                        if math.isfinite(due):
                            self._now = max(self._now, due)  # everyone waits: time moves
                            self._cond.notify_all()
                            continue
                    if time.monotonic() > real_deadline:
                        raise RuntimeError("virtual clock: every thread waits forever")
                    self._cond.wait(0.5)
                return bool(ready())
            finally:
                del self._waiting[me]
                self._cond.notify_all()


class VirtualEvent(threading.Event):
    """threading.Event whose waits are on a virtual clock."""

    def __init__(self, clock: VirtualClock):
        super().__init__()
        self.clock = clock

    def set(self) -> None:
        super().set()
        self.clock.poke()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = math.inf if timeout is None else self.clock.monotonic() + timeout
        return self.clock.wait_until(deadline, self.is_set)


def _virtual_queue(clock: VirtualClock):
    class VirtualQueue(queue.Queue):
        """queue.Queue whose blocking put waits on the clock (get is only ever non-blocking
        here: the audio callback's)."""

        def put(self, item, block=True, timeout=None):
            if block:
                deadline = math.inf if timeout is None else clock.monotonic() + timeout
                clock.wait_until(deadline, lambda: not self.full())
            self.put_nowait(item)

        def put_nowait(self, item):
            super().put(item, block=False)
            clock.poke()

        def get_nowait(self):
            item = super().get(block=False)
            clock.poke()
            return item

    return VirtualQueue


class _Module(types.ModuleType):
    """A module like ``base`` with some attributes replaced."""

    def __init__(self, base: types.ModuleType, **replaced):
        super().__init__(base.__name__)
        self.__dict__.update(replaced)
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)


def use_virtual_time(monkeypatch, clock: VirtualClock) -> VirtualEvent:
    """The daemon, the playlist source and the mock output on ``clock``; returns the stop
    event to give the Daemon (it must run in a thread that joined the clock)."""
    import pi.daemon.loop
    import pi.outputs.base
    import pi.audio.playback

    vtime = _Module(time, monotonic=clock.monotonic, sleep=clock.sleep)
    for module in (pi.daemon.loop, pi.outputs.base, pi.audio.playback):
        monkeypatch.setattr(module, "time", vtime)
    monkeypatch.setattr(pi.audio.playback, "queue", _Module(queue, Queue=_virtual_queue(clock)))
    return VirtualEvent(clock)


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
                 signal=None, input_rate=48000, clock: VirtualClock | None = None):
        super().__init__("sounddevice")
        self.clock = clock
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
        self.clock = sd.clock
        self._quit = VirtualEvent(self.clock) if self.clock else threading.Event()
        self._thread = None
        self._pos = 0  # input: next sample of sd.signal

    def _monotonic(self) -> float:
        return self.clock.monotonic() if self.clock else time.monotonic()

    @property
    def time(self) -> float:
        return self._monotonic() + CLOCK_OFFSET

    def start(self):
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self.clock:
            self.clock.join(self._thread)  # before it runs: time must not move without it
        self._thread.start()

    def _run(self):
        try:
            self._play()
        finally:
            if self.clock:
                self.clock.leave()

    def _play(self):
        period = self.blocksize / self.samplerate
        t0 = self._monotonic()
        k = 0
        while not self._quit.is_set():
            if self.die_after_s is not None and self._monotonic() - t0 > self.die_after_s:
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
            self._quit.wait(max(0.0, t0 + k * period - self._monotonic()))

    def abort(self):
        self._quit.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.active = False

    stop = abort

    def close(self):
        self.abort()
