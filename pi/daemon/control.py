"""The daemon's side of the control socket (pi/daemon/control_socket.py): commands from the socket,
show hours, the status snapshot, and the outputs behind blackout and per-channel overrides.

Everything here runs on the daemon's own thread (:meth:`DaemonControl.tick` while the show
runs, :meth:`DaemonControl.hold` between runs); it only reads what the socket threads left in
the :class:`~pi.daemon.control_socket.Hub`, so a misbehaving client never stalls the audio loop.
"""
from __future__ import annotations

import logging
import time

from pi.daemon.control_socket import MODES, ControlServer, Hub
from pi.outputs.base import Output

log = logging.getLogger(__name__)

EXIT_RESTART = 75         # the unit's RestartForceExitStatus: restart with the new config
PUBLISH_S = 0.25          # how often the daemon refreshes its status snapshot
SCHEDULE_S = 1.0          # how often the show hours are looked at
RELAY_TEST_STEP_S = 1.0


class ControlledOutput(Output):
    """The daemon's outputs behind blackout and per-channel overrides, with every state the
    lamps take pushed to the hub."""

    name = "outputs"

    def __init__(self, inner: Output, hub: Hub):
        super().__init__(inner.n_channels)
        self.inner, self.hub = inner, hub

    def _open(self) -> None:
        self.inner.open()

    def _release(self) -> None:
        self.inner.close()

    def _write(self, states, levels, t) -> None:
        if t is None:
            self.inner.all_off()
            self.hub.push(tuple(states))
            return
        if self.hub.blackout:
            states = (False,) * self.n_channels
            levels = None if levels is None else (0.0,) * self.n_channels
        else:
            ov = self.hub.overrides
            if any(o is not None for o in ov):
                states = tuple(s if o is None else o for s, o in zip(states, ov))
                if levels is not None:
                    levels = tuple(lv if o is None else float(o) for lv, o in zip(levels, ov))
        self.inner.set(states, t=t, levels=levels)
        self.hub.push(tuple(states))

    def direct(self, states, t: float) -> None:
        """States exactly as given (the relay test), overrides and blackout aside."""
        states = tuple(bool(s) for s in states)
        with self._lock:
            self.inner.set(states, t=t)
            self.hub.push(states)


class DaemonControl:
    """The daemon's side: commands, show hours and the status snapshot, run from the daemon's
    own loop (:meth:`tick` while the show runs, :meth:`hold` between runs)."""

    def __init__(self, daemon, hub: Hub, path: str):
        self.daemon, self.hub, self.path = daemon, hub, path
        self.server: ControlServer | None = None
        self._interrupt: str | None = None  # "stop", "next", "relay-test"
        self._source_open = False
        self._next_publish = 0.0
        self._next_schedule = 0.0
        self._sched_state = None if hub.schedule is None else hub.want_play
        self._sched_times: dict = {}
        self._started = time.time()

    def open(self) -> None:
        logging.getLogger().addHandler(self.hub.recent)
        self.server = ControlServer(self.hub, self.path)
        try:
            self.server.open()
        except OSError as exc:
            log.info("control socket off (%s: %s): `lightshow ctl` and the panel cannot "
                     "reach this show", self.path, exc.strerror or exc)
            self.server = None

    def close(self) -> None:
        logging.getLogger().removeHandler(self.hub.recent)
        if self.server is not None:
            self.server.close()
            self.server = None

    # --- called from the daemon's loop ----------------------------------------------

    def tick(self) -> bool:
        """While the source runs: True when the show must leave its loop."""
        self._source_open = True
        self._process()
        self._publish()
        return self._interrupt is not None or not self.hub.want_play

    def hold(self) -> bool:
        """Before the source opens: True while the show must not play (come back soon)."""
        d = self.daemon
        if self._source_open:
            self._source_open = False
            d.source.close()
            d.outputs.all_off()
        self._process()
        what, self._interrupt = self._interrupt, None
        if what == "next":
            d.source.skip_song()
        elif what == "relay-test":
            self._relay_test()
            return True
        if self.hub.want_play or d.stop.is_set():
            return False
        d.outputs.all_off()
        self._publish(force=True)
        self.hub.wake.wait(min(PUBLISH_S * 4, max(0.05, self._next_schedule - time.monotonic())))
        self.hub.wake.clear()
        return True

    def _process(self) -> None:
        hub, now = self.hub, time.monotonic()
        if hub.schedule is not None and now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_S
            on = hub.schedule.is_on(hub.clock())
            if on != self._sched_state:
                self._sched_state = on
                hub.want_play = on
                hub.blackout = False
                log.info("schedule: show hours %s", "begin" if on else "end: lamps off")
                self._sched_times = {}
        while hub.commands:
            name, args = hub.commands.popleft()
            log.info("control: %s%s", name, f" {args}" if args else "")
            if name == "start":
                hub.want_play, hub.blackout = True, False
            elif name == "stop":
                hub.want_play = False
            elif name == "blackout":
                hub.blackout = True
                self.daemon.outputs.all_off()
            elif name in ("next", "relay-test"):
                self._interrupt = name
            elif name == "override":
                ov = list(hub.overrides)
                ov[args["channel"] - 1] = MODES[args["mode"]]
                hub.overrides = tuple(ov)
            elif name == "restart":
                hub.exit_code = EXIT_RESTART
                self.daemon.stop.set()

    def _relay_test(self) -> None:
        d, n = self.daemon, self.hub.n_channels
        log.info("relay test: each channel on for %g s, in order", RELAY_TEST_STEP_S)
        t = time.monotonic()
        for ch in range(n):
            self._publish(force=True, state=f"relay test: channel {ch + 1}")
            d.outputs.direct([c == ch for c in range(n)], time.monotonic() - t)
            if d.stop.wait(RELAY_TEST_STEP_S):
                break
            # a stop or start during the test ends it
            if any(c[0] in ("stop", "start", "blackout") for c in tuple(self.hub.commands)):
                break
        d.outputs.all_off()

    def _state(self) -> str:
        hub = self.hub
        if not hub.want_play:
            return "off (schedule)" if self._sched_state is False else "stopped"
        if hub.blackout:
            return "blackout"
        return "playing"

    def _publish(self, *, force: bool = False, state: str | None = None) -> None:
        now = time.monotonic()
        if not force and now < self._next_publish:
            return
        self._next_publish = now + PUBLISH_S
        d, hub = self.daemon, self.hub
        feed = getattr(d.source, "feed", None)
        song = getattr(feed, "song", None)
        upcoming = feed.upcoming() if feed is not None and hasattr(feed, "upcoming") else None
        hub.snapshot = {
            "state": state or self._state(),
            "detail": d._heart._status,
            "song": song.name if song else None,
            "position_s": round(feed.position_s, 1) if song and feed else None,
            "next_song": upcoming.name if upcoming else None,
            "model": d.show.name if d.show else "sACN",
            "source": d.source.name,
            "channels": hub.n_channels,
            "overrides": [next(k for k, v in MODES.items() if v is o) for o in hub.overrides],
            "counters": dict(d.source.counters()),
            "errors": list(hub.recent.errors.copy())[-5:],
            "schedule": self._schedule_info(),
            "since": self._started,
            "wear": self._wear(),
        }

    def _wear(self) -> list[dict]:
        from pi.outputs.wear import find_counter, wear_rows

        counter = find_counter(self.daemon.outputs)
        if counter is None:
            return []
        g = self.daemon.config.outputs.rpigpio
        return wear_rows(counter, g.channels or range(1, len(g.pins) + 1))

    def _schedule_info(self) -> dict | None:
        s = self.hub.schedule
        if s is None:
            return None
        if not self._sched_times or time.time() >= self._sched_times.get("_refresh", 0):
            start, stop = s.next_changes(self.hub.clock())
            self._sched_times = {"next_start": start.isoformat() if start else None,
                                 "next_stop": stop.isoformat() if stop else None,
                                 "_refresh": time.time() + 60}
        return {k: v for k, v in self._sched_times.items() if not k.startswith("_")}


def attach(daemon, config) -> DaemonControl:
    """Put the daemon's outputs behind a hub and give it its control side."""
    from pi.config.panel import socket_path

    schedule = None
    if config.schedule.enabled:
        from pi.daemon.schedule import Schedule

        schedule = Schedule.from_config(config.schedule)
    hub = Hub(n_channels=config.show.channels, schedule=schedule)
    daemon.outputs = ControlledOutput(daemon.outputs, hub)
    return DaemonControl(daemon, hub, socket_path(config))
