"""The daemon's control socket: status, a live lamp stream and commands, for `lightshow ctl`
and the web panel, over a Unix socket (newline-delimited JSON, one object per line): the
server's threads, the :class:`Hub` they share with the daemon, and the clients. The daemon's
own side (commands, show hours, blackout and overrides on the outputs) is pi/daemon/control.py.

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

log = logging.getLogger(__name__)

COMMANDS = ("start", "stop", "next", "blackout", "relay-test", "override", "restart")
MODES = {"auto": None, "on": True, "off": False}
MAX_CLIENTS = 32
MAX_LINE = 4096
STREAM_QUEUE = 256        # lamp changes a stream client may fall behind before it is dropped
STREAM_BUFFER = 64 * 1024  # bytes waiting for a client's socket before it is dropped
STREAM_PERIOD_S = 0.01    # how often the stream thread forwards lamp changes


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
