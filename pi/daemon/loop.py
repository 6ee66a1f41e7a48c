"""The appliance's run loop: config -> show -> outputs -> audio source -> lamps.

One thread does everything but the audio callbacks and the planner: it reads blocks from the
source, turns them into frames and states (pi.show.features, pi.show.pipeline), and applies
each state when the source says it is due (at once for live audio, at the DAC time for played
songs). Lamps are off
before the audio starts, whenever the audio device is missing (it is retried with backoff),
and at exit, however the exit comes (SIGTERM, SIGHUP and SIGQUIT raise SystemExit here,
Ctrl-C KeyboardInterrupt: pi/daemon/stopping.py; all unwind through ``finally``).

Songs from files (the playlist and file sources) play the look-ahead show that
``lightshow render`` writes: a background thread plans the next song while the current one
plays (pi/show/plans.py), and the loop switches lamps from the plan at the played position. A
song whose plan is not ready when it starts plays the causal show, as line-in always does,
until its plan is ready: the lights start at once, and the planned show takes over mid-song.

The sacn source is the one source without audio: it gives channel levels that another
sender's show already decided, so its loop (:meth:`Daemon._follow`) has no show of its own.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from pi.daemon import control, stopping, systemd
from pi.app import make_outputs, make_source, show_from_config
from pi.config.load import Config
from pi.show.features import StreamingFeatures
from pi.outputs.base import Output
from pi.show.plans import PlanCache, Planner, default_cache_dir, show_key
from pi.audio.sources import END, Backoff, DeviceError, PlaylistError, Source

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.1   # the loop comes round at least this often (watchdog, stop requests)
STATS_S = 60.0     # how often over/underflow counts are logged, when they grew
END_GRACE_S = 2.0  # after the music ends, states still without a due time are dropped


class _Heartbeat:
    """sd_notify WATCHDOG and STATUS, and the periodic over/underflow log line."""

    def __init__(self, stats_s: float = STATS_S):
        self.interval = systemd.watchdog_interval_s()
        self._next_ping = 0.0
        self._status: str | None = None
        self._stats_s = stats_s
        self._stats_at = time.monotonic() + stats_s
        self._counts: dict[str, int] = {}

    def beat(self, source: Source | None = None) -> None:
        now = time.monotonic()
        if self.interval is not None and now >= self._next_ping:
            systemd.watchdog_ping()
            self._next_ping = now + self.interval
        if source is not None:
            if source.status:
                self.status(source.status)
            if now >= self._stats_at:
                self._stats_at = now + self._stats_s
                self.log_counters(source)

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            systemd.status(text)

    def log_counters(self, source: Source, *, final: bool = False) -> None:
        counts = source.counters()
        grew = {k: v - self._counts.get(k, 0) for k, v in counts.items()
                if v != self._counts.get(k, 0)}
        self._counts = dict(counts)
        label = source.counters_label
        if final and any(counts.values()):
            log.warning("%s in total: %s", label,
                        ", ".join(f"{v} {k}" for k, v in counts.items()))
        elif grew and not final:
            log.warning("%s in the last %.0f s: %s", label, self._stats_s,
                        ", ".join(f"{v} {k}" for k, v in grew.items()))


class Daemon:
    """``Daemon(config).run()`` -> exit code. ``stop`` ends the show from another thread."""

    def __init__(self, config: Config, *, realtime: bool = False,
                 stop: threading.Event | None = None, retry: Backoff | None = None,
                 plan_wait_s: float = 0.0):
        self.config = config
        # How long a song's first block may wait for its look-ahead plan (a cached plan is
        # read at once). 0, the appliance: the lights start at once with the causal show and
        # the plan takes over when it is ready. Checks that must match `render` from the
        # first frame give a bound (lightshow run --plan-wait).
        self.plan_wait_s = float(plan_wait_s)
        self.stop = stop or threading.Event()
        self.retry = retry or Backoff(1.0, 30.0)
        # The sacn source brings decided levels, not audio: no show (and no model) to load.
        self.show = None if config.audio.source == "sacn" else show_from_config(config)
        self.outputs: Output = make_outputs(config.outputs.enabled, config)
        self.source = make_source(config, rate=self.show.feature_params.sample_rate
                                  if self.show else 0, realtime=realtime, stop=self.stop)
        self.planner: Planner | None = None
        if (self.show is not None and config.show.look_ahead
                and config.audio.source in ("playlist", "file")):
            # Its own show: the planner thread must share no buffers with this loop's.
            # The same bundle, loaded once (it is read-only): start-up is the time to the
            # first lamp.
            planned = show_from_config(config, bundle=getattr(self.show, "bundle", None))
            self.planner = Planner(planned, cache=PlanCache(
                default_cache_dir(), show_digest=show_key(planned)))
        self.frames = 0
        self._t_next = 0.0  # show time where a reopened source carries on
        self._ready = False
        self._heart = _Heartbeat()
        # Status, commands, show hours: pi/daemon/control.py (wraps self.outputs).
        self.control = control.attach(self, config)

    def run(self) -> int:
        previous = stopping.install()  # SIGTERM/INT/HUP/QUIT unwind to the finally below
        log.info("show %s, %d channels; outputs %s; source %s",
                 self.show.name if self.show else "from sACN", self.config.show.channels,
                 ", ".join(self.config.outputs.enabled), self.source.name)
        self._check_playlist()
        try:
            self.control.open()
            self.outputs.open()
            return self._loop() or self.control.hub.exit_code
        except PlaylistError as exc:
            log.error("%s", exc)
            return 1
        finally:
            systemd.stopping()
            try:
                self.source.close()
                if self.planner is not None:
                    self.planner.close()
            finally:
                self.outputs.close()  # all off, recorded, GPIO released
                self._heart.log_counters(self.source, final=True)
                log.info("stopped after %d frames; lamps off", self.frames)
                self.control.close()
                stopping.restore(previous)  # for callers that live on (tests, embedding)

    def _check_playlist(self) -> None:
        """Said at start, before any wait for a sound card: otherwise a missing music folder
        only shows once a device works, and a terminal run without one just retries."""
        a = self.config.audio
        if a.source not in ("playlist", "file"):
            return
        for entry in a.playlist:
            if not Path(entry).exists():
                log.warning("audio.playlist: %s does not exist (yet); nothing to play from it "
                            "until it does (put songs there, set audio.playlist, or name songs "
                            "on the command line: lightshow run SONG...)", entry)

    def _ready_once(self) -> None:
        if not self._ready:
            self._ready = True
            systemd.ready()

    def _loop(self) -> int:
        while not self.stop.is_set():
            if self.control.hold():  # stopped, outside show hours, or a relay test
                continue
            try:
                self.source.open()
            except DeviceError as exc:
                self._ready_once()  # running, and waiting for the device, is a ready state
                self._wait_for_device(exc)
                continue
            self._ready_once()
            try:
                if self._follow() if self.show is None else self._pump():
                    return 0
            except DeviceError as exc:
                self.outputs.all_off()
                self.source.close()
                self._wait_for_device(exc)
        return 0

    def _wait_for_device(self, exc: DeviceError) -> None:
        delay = self.retry.next()
        what = self.source.device_label
        log.warning("%s unavailable: %s; lamps off, retrying in %.0f s", what, exc, delay)
        self._heart.status(f"lamps off, waiting for the {what}: {exc}")
        until = time.monotonic() + delay
        while not self.stop.is_set() and (left := until - time.monotonic()) > 0:
            self._heart.beat()
            self.stop.wait(min(left, 1.0))

    def _pump(self) -> bool:
        """Audio to lamps until the source ends (True) or a stop is requested (False)."""
        params = self.show.feature_params
        features = StreamingFeatures(params=params)
        pending: deque = deque()  # (frame end sample, show time, states), oldest first
        t_base, ended_at, flowing = self._t_next, None, False
        playing, plan = None, None  # (song, first sample) and its plan, when planned
        awaited = None  # the playing song, while its plan is being made
        while not self.stop.is_set():
            self._heart.beat(self.source)
            if self.control.tick():
                return False
            now, wait = time.monotonic(), MAX_WAIT_S
            while pending:
                due = self.source.when(pending[0][0])
                if due is None and ended_at is not None and now - ended_at > END_GRACE_S:
                    log.warning("%d lamp states never became due; dropped", len(pending))
                    pending.clear()
                if due is None:
                    wait = self.source.poll_s
                    break
                if due > now:
                    wait = min(wait, due - now)
                    break
                _, t, states, levels = pending.popleft()
                self.outputs.set(states, t=t, levels=levels)
            if ended_at is not None:
                if not pending:
                    return True
                self.stop.wait(wait)
                continue
            block = self.source.read(wait)
            if block is END:
                ended_at = time.monotonic()
                continue
            if block is None:
                continue
            if not flowing:
                flowing = True
                self.retry.reset()
                log.info("audio is flowing")
            if self.planner is not None and self.source.song_start != playing:
                playing = self.source.song_start
                plan = self._plan_for(playing[0]) if playing else None
                awaited = playing[0] if playing and plan is None else None
            elif awaited is not None and self.planner.ready(awaited):
                plan, awaited = self._late_plan(awaited, features, playing), None
            # A planned song needs only its frames' timing: no spectra on the hot path.
            if plan is None:
                frames = features.push(block)
                count = len(frames)
            else:
                frames, count = None, features.skip(block)
            if count:
                first = features.frames_emitted - count
                # Frame i ends at sample i * hop + n_fft: pi.show.features.frame_times, in
                # samples.
                # As Python numbers: a block has one or two frames, and int / int is the
                # float64 quotient numpy would give (exact integers below 2**53).
                ends = [i * params.hop + params.n_fft for i in range(first, first + count)]
                times = [t_base + end / params.sample_rate for end in ends]
                if plan is None:
                    shown = self.show.process(frames, times)
                    states, levels = shown.states, shown.levels
                else:
                    states, levels = self._planned(plan, np.array(ends) - playing[1],
                                                   np.array(times))
                pending.extend(zip(ends, times, states, levels))
                self.frames += count
                # After a lost device the show time jumps on by a second: it never runs
                # backwards, so hold times stay honest across the gap.
                self._t_next = times[-1] + 1.0
        return False

    def _plan_for(self, song: Path):
        """The song's plan, or None: then the causal show plays it until the plan is ready.
        Then asks for the next song's plan, which the planner makes while this one plays."""
        upcoming = self.source.upcoming()
        plan = self.planner.get(song, wait_s=self.plan_wait_s)
        self.planner.request(upcoming)
        self.planner.forget({song, upcoming})
        if plan is None:
            log.info("%s: its look-ahead plan is not ready yet; the causal show plays until "
                     "it is", song)
        else:
            log.info("%s: playing its look-ahead show", song)
        return plan

    def _late_plan(self, song: Path, features: StreamingFeatures, playing):
        """The plan of the song playing, now ready (None if it could not be made: the causal
        show plays on). It takes over from the next frame."""
        plan = self.planner.get(song)
        if plan is not None:
            params = self.show.feature_params
            at = (features.frames_emitted * params.hop + params.n_fft - playing[1]) \
                / params.sample_rate
            log.info("%s: its look-ahead plan is ready; playing it from %.1f s", song, at)
        return plan

    def _planned(self, plan, song_ends: np.ndarray, times: np.ndarray):
        """States and levels of the frames ending at ``song_ends`` (samples from the song's
        start): the plan's row in effect there (the last one ending at or before it; all off
        before the first), then the strict switch limit, which carries on across songs."""
        params = self.show.feature_params
        rows = (song_ends - params.n_fft) // params.hop
        ok = (song_ends >= params.n_fft) & (rows < len(plan.states))
        states = np.zeros((len(rows), plan.states.shape[1]), bool)
        levels = np.zeros(states.shape)
        states[ok], levels[ok] = plan.states[rows[ok]], plan.levels[rows[ok]]
        if self.show.guard:
            states, levels = self.show.guard.apply(states, times, levels)
        return states, levels

    def _follow(self) -> bool:
        """Levels from the network to lamps until a stop is requested (always False)."""
        from pi.audio.sacn_receiver import LOST, ON_LEVEL  # the sacn source's, made already

        t0 = time.monotonic()
        while not self.stop.is_set():
            self._heart.beat(self.source)
            if self.control.tick():
                return False
            levels = self.source.read(MAX_WAIT_S)
            if levels is LOST:
                self.outputs.all_off()
            elif levels is not None:
                self.outputs.set(levels >= ON_LEVEL, t=time.monotonic() - t0, levels=levels)
                self.frames += 1
                self.retry.reset()
        return False


def run(config: Config, *, realtime: bool = False, stop: threading.Event | None = None,
        retry: Backoff | None = None, plan_wait_s: float = 0.0) -> int:
    return Daemon(config, realtime=realtime, stop=stop, retry=retry,
                  plan_wait_s=plan_wait_s).run()
