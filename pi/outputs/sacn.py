"""The show's channels as E1.31 (sACN) DMX levels, sent with the `sacn` package.

`sacn` is imported when the output opens, never at import time, like RPi.GPIO in pi/outputs/gpio.py:
the other outputs work without it (`pip install 'lightshow[sacn]'`).

The package builds the packets and sends them from a thread: a packet when the levels changed
(at most `fps` a second) and the same levels again every second, which keeps receivers from
timing out (E1.31's data-loss timeout is 2.5 s). That thread runs in a socket object, which
the package lets us supply; ours changes five things:

* the levels are handed to that thread and set there. The package's thread clears its
  "changed" flag after each send, so levels set from another thread during a send were lost
  for up to a second (seen in the loopback tests: a whole show state never arrived);
* a change is sent at once (still at most `fps` a second) instead of at the next tick, which
  halves the average lag;
* a configurable destination port (tests on one machine);
* a send error is logged and retried instead of killing that thread (a LAN that is not up
  yet at boot raises ENETUNREACH), and the thread is a daemon thread, so a forgotten close()
  cannot hang the interpreter's exit before our atexit all-off runs;
* we see what went on the wire, so close() can wait for the blackout before it sends the
  stream-terminated packets.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
import uuid

from pi.net import e131
from pi.outputs.base import Output, OutputError

log = logging.getLogger(__name__)

BLACKOUT_WAIT_S = 1.5  # unchanged levels are re-sent every second, so one is out by then


def _import_sacn():
    try:
        import sacn
        from sacn.sending.sender_socket_udp import SenderSocketUDP
    except ModuleNotFoundError:
        raise OutputError("sacn: expected the `sacn` package, found it not installed; in the "
                          "lightshow venv: pip install 'sacn>=1.9' (or the [sacn] extra)"
                          ) from None
    logging.getLogger("sacn").setLevel(logging.WARNING)  # it logs every bind at INFO
    return sacn, SenderSocketUDP


def stable_cid(source_name: str) -> tuple[int, ...]:
    """E1.31 wants a CID that survives restarts: receivers track senders by it, and a new one
    at each start would look like a second sender at the same priority for 2.5 s."""
    return tuple(uuid.uuid5(uuid.NAMESPACE_URL,
                            f"lightshow:{socket.gethostname()}:{source_name}").bytes)


def _socket_class(base):
    class Socket(base):
        """The package's UDP socket, with the port, error handling and watching we need."""

        def __init__(self, *, port: int, fps: int):
            # Bound to an ephemeral port: a receiver on this machine owns e131.PORT.
            super().__init__(None, "0.0.0.0", 0, fps)
            self.port = port
            self.sent = self.errors = 0
            # Levels are numbered as they are posted; `sent_gen` is the number of the levels
            # in the last packet on the wire, so a waiter knows its levels went out.
            self.posted = self.applied = self.sent_gen = 0
            self.changed = threading.Condition()
            self.target = None  # the package's per-universe Output whose levels we post
            self._pending: tuple[int, tuple[int, ...]] | None = None
            self._lock = threading.Lock()
            self._wake = threading.Event()
            self._stop = threading.Event()
            self._thread: threading.Thread | None = None

        def post(self, values: tuple[int, ...]) -> None:
            """New levels for the sending thread (from any thread; the latest wins)."""
            with self._lock:
                self.posted += 1
                self._pending = (self.posted, values)
            self._wake.set()

        def start(self) -> None:
            self._thread = threading.Thread(target=self.send_loop, daemon=True,
                                            name="sacn sender")
            self._thread.start()

        def send_loop(self) -> None:
            # Replaces the package's loop, which also sets its run flag only once it runs, so
            # that a stop() right after start() could be undone and then wait forever.
            period, next_ok = 1.0 / self.fps, 0.0
            while not self._stop.is_set():
                self._wake.clear()  # before looking: a post() from now on wakes the wait
                now = time.monotonic()
                if now >= next_ok:
                    with self._lock:
                        pending, self._pending = self._pending, None
                    if pending is not None:
                        self.applied, self.target.dmx_data = pending  # marks it changed, here
                        next_ok = now + period
                self._listener.on_periodic_callback(time.time())  # changes and keep-alives
                waiting = self._pending is not None
                self._wake.wait(max(0.0, next_ok - time.monotonic()) if waiting else period)

        def stop(self) -> None:
            # sACNsender.start() calls stop() first: without a thread there is nothing to do.
            if self._thread is None:
                return
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._socket.close()

        def sendto(self, raw: bytes, destination: str) -> None:
            self._socket.sendto(raw, (destination, self.port))

        def send_packet(self, data, destination: str) -> None:
            try:
                self.sendto(bytes(data), destination)
            except OSError as exc:
                self.errors += 1
                if self.errors == 1:
                    log.warning("sacn: sending to %s:%d failed (%s); retrying with every "
                                "packet", destination, self.port, exc.strerror or exc)
                return
            if self.errors:
                log.info("sacn: sending to %s:%d again after %d failures", destination,
                         self.port, self.errors)
                self.errors = 0
            with self.changed:
                self.sent += 1
                self.sent_gen = self.applied
                self.changed.notify_all()

    return Socket


class SACNOutput(Output):
    """Channels on consecutive DMX addresses of one universe: 0/255 for on/off, or graded
    0..255 from the levels with ``dimmer``."""

    name = "sacn"

    def __init__(self, n_channels: int, *, universe: int, start_address: int = 1,
                 destination: str = "multicast", port: int = e131.PORT, priority: int = 100,
                 source_name: str = "lightshow", fps: int = 40, dimmer: bool = False):
        super().__init__(n_channels)
        last = start_address + n_channels - 1
        for what, ok, expected, found in (
                ("universe", e131.UNIVERSES[0] <= universe <= e131.UNIVERSES[1],
                 "%d..%d" % e131.UNIVERSES, universe),
                ("start_address", 1 <= start_address and last <= e131.MAX_SLOTS,
                 "channels within DMX addresses 1..512", f"{start_address}..{last}"),
                ("priority", e131.PRIORITIES[0] <= priority <= e131.PRIORITIES[1],
                 "%d..%d" % e131.PRIORITIES, priority),
                ("fps", 1 <= fps <= 44, "1..44", fps)):
            if not ok:
                raise OutputError(f"sacn {what}: expected {expected}, found {found}")
        self.universe, self.offset, self.destination = universe, start_address - 1, destination
        self.port, self.priority, self.source_name = port, priority, source_name
        self.fps, self.dimmer = fps, dimmer
        self.sender = self.socket = None
        self._values: tuple[int, ...] | None = None

    @property
    def where(self) -> str:
        to = (e131.multicast_group(self.universe) if self.destination == "multicast"
              else self.destination)
        return f"universe {self.universe} to {to}:{self.port}"

    def _open(self) -> None:
        sacn, base = _import_sacn()
        self.socket = _socket_class(base)(port=self.port, fps=self.fps)
        try:
            # Universe discovery goes to 255.255.255.255 every 10 s: the unit's IPAddressAllow
            # refuses broadcast, and no receiver we serve needs it.
            self.sender = sacn.sACNsender(source_name=self.source_name, fps=self.fps,
                                          cid=stable_cid(self.source_name),
                                          universeDiscovery=False, socket=self.socket)
            self.socket._listener = self.sender._sender_handler  # how the package wires it
            self.sender.activate_output(self.universe)
            out = self.sender[self.universe]
            out.priority = self.priority
            if self.destination == "multicast":
                out.multicast = True
            else:
                out.destination = self.destination
            self.socket.target = out
            self._send((0,) * self.n_channels)
            self.sender.start()
        except Exception:
            self.socket.stop()
            self.socket._socket.close()
            raise
        log.info("sacn: %d channels at DMX addresses %d..%d, %s, priority %d", self.n_channels,
                 self.offset + 1, self.offset + self.n_channels, self.where, self.priority)

    def _write(self, states, levels, t) -> None:
        if self.dimmer and levels is not None:
            self._send(tuple(int(round(x * 255)) for x in levels))
        else:
            self._send(tuple(255 if s else 0 for s in states))

    def _send(self, values: tuple[int, ...]) -> None:
        # Only real changes: an unchanged show costs the network one packet a second.
        if values != self._values:
            self._values = values
            self.socket.post((0,) * self.offset + values)

    def _release(self) -> None:
        """all_off() has just set the blackout. Receivers ignore the levels in a terminated
        packet (E1.31 6.2.6), so the blackout must be on the wire first; then the package's
        deactivate_output() sends the three stream-terminated packets; then its thread stops."""
        assert self.sender is not None and self.socket is not None
        try:
            if not self.socket.errors:
                sock = self.socket
                with sock.changed:
                    if not sock.changed.wait_for(lambda: sock.sent_gen >= sock.posted,
                                                 BLACKOUT_WAIT_S):
                        log.warning("sacn: the blackout was not sent within %.1f s; "
                                    "terminating the stream anyway", BLACKOUT_WAIT_S)
            self.sender.deactivate_output(self.universe)
        finally:
            self.sender.stop()
