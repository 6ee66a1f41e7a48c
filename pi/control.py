"""The daemon's control socket: status, a live lamp stream and commands, for `lightshow ctl`
and the web panel, over a Unix socket (newline-delimited JSON, one object per line).

The audio loop must never wait for a client. So nothing here takes a lock or does I/O on the
daemon's thread: the daemon publishes its status as a new dict swapped in by reference
(:attr:`Hub.snapshot`, never mutated), lamp changes go into one bounded deque per stream client
(a full deque marks that client dropped), and commands arrive through a deque the loop pops
without blocking. Socket threads do all the reading and writing; a stream client whose socket
does not keep up is dropped rather than buffered without end.

The socket is created under a temporary name, chmod 0660, then renamed into place, so it is
never reachable by anyone but the service's user and group (the folder is the service's
runtime directory, 0750).

Requests: ``{"cmd": "status"}``, ``"log"``, ``"stream"``, ``"start"``, ``"stop"``, ``"next"``,
``"blackout"``, ``"relay-test"``, ``{"cmd": "override", "channel": 3, "mode": "on"}`` (channels
from 1; "on", "off" or "auto"), ``"restart"``. Replies: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path

from pi.errors import LightshowError
from pi.outputs import Output

log = logging.getLogger(__name__)

COMMANDS = ("start", "stop", "next", "blackout", "relay-test", "override", "restart")
MODES = {"auto": None, "on": True, "off": False}
EXIT_RESTART = 75         # the unit's RestartForceExitStatus: restart with the new config
MAX_CLIENTS = 32
MAX_LINE = 4096
STREAM_QUEUE = 256        # lamp changes a stream client may fall behind before it is dropped
STREAM_BUFFER = 64 * 1024  # bytes waiting for a client's socket before it is dropped
STREAM_PERIOD_S = 0.01    # how often the stream thread forwards lamp changes
PUBLISH_S = 0.25          # how often the daemon refreshes its status snapshot
SCHEDULE_S = 1.0          # how often the show hours are looked at
RELAY_TEST_STEP_S = 1.0


class ControlError(LightshowError):
    """The control socket cannot be reached or refused a request; says which and why."""


class _RecentLog(logging.Handler):
    """The daemon's recent log lines (and its warnings and errors apart), for the panel."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: deque = deque(maxlen=200)
        self.errors: deque = deque(maxlen=20)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a bad log call must not break the show
            return
        self.lines.append(line)
        if record.levelno >= logging.WARNING:
            self.errors.append(line)


class _StreamClient:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.queue: deque = deque(maxlen=STREAM_QUEUE)
        self.dropped = False
        self.out = b""


class Hub:
    """What the daemon and the socket threads share; see the module docstring."""

    def __init__(self, *, n_channels: int, schedule=None, clock=time.time):
        self.n_channels = n_channels
        self.schedule = schedule
        self.clock = clock
        self.snapshot: dict = {"state": "starting"}
        self.lamps: tuple[bool, ...] = (False,) * n_channels
        self.overrides: tuple = (None,) * n_channels
        self.blackout = False
        self.want_play = True if schedule is None else schedule.is_on(clock())
        self.exit_code = 0
        self.commands: deque = deque(maxlen=64)
        self.wake = threading.Event()  # set by socket threads; the idle daemon waits on it
        self.clients: tuple[_StreamClient, ...] = ()
        self.recent = _RecentLog()
        self.seq = 0

    # --- the daemon's thread (hot path: push) ------------------------------------------

    def push(self, states: tuple[bool, ...]) -> None:
        """A lamp change: no lock, no I/O, O(clients) appends."""
        if states == self.lamps:
            return
        self.lamps = states
        self.seq += 1
        item = (self.seq, self.clock(), states)
        for c in self.clients:
            if len(c.queue) >= STREAM_QUEUE:
                c.dropped = True
            else:
                c.queue.append(item)

    def command(self, name: str, **args) -> None:
        """From a socket thread: queue a command for the daemon's loop."""
        self.commands.append((name, args))
        self.wake.set()


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
        from pi.wear import find_counter, wear_rows

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
    from pi.config_panel import socket_path

    schedule = None
    if config.schedule.enabled:
        from pi.schedule import Schedule

        schedule = Schedule.from_config(config.schedule)
    hub = Hub(n_channels=config.show.channels, schedule=schedule)
    daemon.outputs = ControlledOutput(daemon.outputs, hub)
    return DaemonControl(daemon, hub, socket_path(config))


# --- the socket threads -------------------------------------------------------------------

class ControlServer:
    def __init__(self, hub: Hub, path: str | Path):
        self.hub, self.path = hub, Path(path)
        self._sock: socket.socket | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns = 0

    def open(self) -> None:
        if not self.path.parent.is_dir():
            raise FileNotFoundError(2, "no such folder", str(self.path.parent))
        if self.path.exists():
            try:  # a live daemon keeps its socket; a stale file from a crash goes
                request(self.path, "status", timeout=1.0)
            except ControlError:
                self.path.unlink()
            else:
                raise OSError(98, "another lightshow daemon is listening there")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(tmp))
            os.chmod(tmp, 0o660)
            os.replace(tmp, self.path)
            sock.listen(8)
        except OSError:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        self._sock = sock
        for target in (self._accept, self._stream):
            th = threading.Thread(target=target, name=f"control-{target.__name__[1:]}",
                                  daemon=True)
            th.start()
            self._threads.append(th)
        log.info("control socket %s", self.path)

    def close(self) -> None:
        self._closing.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                pass
            self._sock.close()
        try:
            self.path.unlink()
        except OSError:
            pass
        for th in self._threads:
            th.join(timeout=2.0)
        for c in self.hub.clients:
            c.sock.close()
        self.hub.clients = ()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self._conns >= MAX_CLIENTS:
                conn.close()
                continue
            self._conns += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="control-client").start()

    def _serve(self, conn: socket.socket) -> None:
        streaming = False
        try:
            conn.settimeout(10.0)
            reader = conn.makefile("rb")
            while not self._closing.is_set():
                line = reader.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE:
                    conn.sendall(_reply(ok=False, error=f"expected a request line under "
                                                        f"{MAX_LINE} bytes"))
                    return
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except ValueError:
                    conn.sendall(_reply(ok=False, error='expected a JSON object such as '
                                                        '{"cmd": "status"}'))
                    continue
                if req.get("cmd") == "stream":
                    self._subscribe(conn)
                    streaming = True
                    return
                conn.sendall(self._answer(req))
        except OSError:
            return
        finally:
            self._conns -= 1
            if not streaming:
                conn.close()

    def _answer(self, req: dict) -> bytes:
        hub, cmd = self.hub, req.get("cmd")
        if cmd == "status":
            return _reply(ok=True, status={**hub.snapshot, "lamps": list(hub.lamps)})
        if cmd == "log":
            return _reply(ok=True, lines=list(hub.recent.lines.copy()))
        if cmd not in COMMANDS:
            return _reply(ok=False, error=f"unknown command {cmd!r}; expected one of status, "
                                          f"log, stream, {', '.join(COMMANDS)}")
        args = {}
        if cmd == "override":
            ch, mode = req.get("channel"), req.get("mode")
            if isinstance(ch, bool) or not isinstance(ch, int) or not 1 <= ch <= hub.n_channels:
                return _reply(ok=False, error=f"override: expected a channel from 1 to "
                                              f"{hub.n_channels}, found {ch!r}")
            if mode not in MODES:
                return _reply(ok=False, error=f"override: expected mode on, off or auto, "
                                              f"found {mode!r}")
            args = {"channel": ch, "mode": mode}
        hub.command(cmd, **args)
        return _reply(ok=True)

    def _subscribe(self, conn: socket.socket) -> None:
        c = _StreamClient(conn)
        conn.setblocking(False)
        c.out = _line({"seq": self.hub.seq, "wall": time.time(), "lamps": list(self.hub.lamps)})
        self.hub.clients = self.hub.clients + (c,)

    def _stream(self) -> None:
        while not self._closing.wait(STREAM_PERIOD_S):
            for c in self.hub.clients:
                q = c.queue
                while q:
                    seq, wall, states = q.popleft()
                    c.out += _line({"seq": seq, "wall": wall, "lamps": list(states)})
                try:
                    if c.out:
                        c.out = c.out[c.sock.send(c.out):]
                except BlockingIOError:
                    pass
                except OSError:
                    c.dropped = True
                if c.dropped or len(c.out) > STREAM_BUFFER:
                    self._drop(c)

    def _drop(self, c: _StreamClient) -> None:
        self.hub.clients = tuple(x for x in self.hub.clients if x is not c)
        if not c.dropped:
            log.warning("control: a lamp stream client fell %d bytes behind; dropped",
                        len(c.out))
        c.sock.close()


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def _reply(**obj) -> bytes:
    return _line(obj)


# --- clients --------------------------------------------------------------------------------

def connect(path: str | Path, *, timeout: float = 3.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise ControlError(f"the show is not running (no control socket at {path})") from None
    except ConnectionRefusedError:
        sock.close()
        raise ControlError(f"the show is not running ({path} refuses connections)") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"{path}: permission denied; expected to run as the service's "
                           f"user or group (lightshow)") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"{path}: cannot connect: {exc}") from None
    return sock


def request(path: str | Path, cmd: str, *, timeout: float = 3.0, **args) -> dict:
    """One request; the reply's object, or ControlError with the socket's or reply's error."""
    with connect(path, timeout=timeout) as sock:
        try:
            sock.sendall(_line({"cmd": cmd, **args}))
            reply = sock.makefile("rb").readline(1 << 20)
        except OSError as exc:
            raise ControlError(f"{path}: {cmd}: {exc}") from None
    try:
        out = json.loads(reply)
    except ValueError:
        raise ControlError(f"{path}: {cmd}: expected a JSON reply, found "
                           f"{reply[:80]!r}") from None
    if not out.get("ok"):
        raise ControlError(out.get("error") or f"{cmd} refused")
    return out


def stream(path: str | Path, *, timeout: float = 5.0):
    """Lamp updates ``{"seq", "wall", "lamps"}``, the current lamps first, until closed."""
    sock = connect(path, timeout=timeout)
    try:
        sock.sendall(_line({"cmd": "stream"}))
        reader = sock.makefile("rb")
        for line in reader:
            yield json.loads(line)
    finally:
        sock.close()
