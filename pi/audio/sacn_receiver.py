"""Channel levels from an E1.31 (sACN) universe: a Pi without audio follows another lightshow
Pi, xLights, FPP or any sACN sender (`lightshow run --source sacn --universe N`).

What this receiver does, as E1.31 asks a receiver to declare:

* Senders are told apart by their CID. Each one times out on its own after ``timeout_s``
  (E1.31's 2.5 s) without a packet; a stream-terminated packet drops it at once, and the
  levels in that packet are ignored (E1.31 6.2.6).
* The highest priority among the live senders wins; lower ones are ignored while it lives.
  Several senders at that priority are merged address by address, highest level wins (HTP),
  up to ``MAX_SENDERS``; packets from further senders are ignored ("sources exceeded").
* A sender heard within the timeout keeps its place whatever else arrives: new senders are
  never let in by pushing one out. So that a flood of made-up CIDs from one machine cannot
  take every place and lock the real sender out, one source address holds at most
  ``MAX_PER_ADDRESS`` places. ``allowed_senders`` (CIDs or IPv4 source addresses) goes
  further: only those senders drive the lamps; the rest are counted ("not_allowed").
* Preview packets (for visualisers), out-of-sequence packets (E1.31 6.7.2), other universes,
  other START codes and anything malformed are ignored and counted, never fatal.
* Universe synchronisation is not supported: data is applied when it arrives.
* A channel is on from level 128 (``ON_LEVEL``) up. A relay keeps each state at least
  ``hold_s``, like the show's own; but lamps go off at once when the last sender is gone.

The packets are parsed by pi/net/e131.py (stdlib, strict); nothing is unpickled or evaluated.
"""
from __future__ import annotations

import errno
import logging
import math
import select
import socket
import time
import uuid
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from pi.net import e131
from pi.config.values import sender_id
from pi.audio.sources import DeviceError, Source
from pi.show.relay_rules import ChannelOverrides, ToggleGuard

log = logging.getLogger(__name__)

ON_LEVEL = 128 / 255
MAX_SENDERS = 8
MAX_PER_ADDRESS = MAX_SENDERS // 2  # places one IP address can hold (a flood leaves the rest)
MAX_BATCH = 256  # datagrams read per wake-up, so a flood cannot starve the watchdog


class _Lost:
    def __repr__(self) -> str:
        return "LOST"


LOST = _Lost()  # what read() returns when the last sender has gone: lamps off now


class _Sender:
    __slots__ = ("name", "priority", "sequence", "seen", "levels", "address")

    def __init__(self, name: str, priority: int, sequence: int, seen: float,
                 levels: np.ndarray, address: str | None):
        self.name, self.priority, self.sequence = name, priority, sequence
        self.seen, self.levels, self.address = seen, levels, address


class SACNSource(Source):
    """``read(timeout)`` gives channel levels in [0, 1] (a new array when they change),
    :data:`LOST` when the lamps must go off, or None; not audio blocks like the others."""

    name = "sacn"
    counters_label = "sACN packets ignored"
    device_label = "sACN socket"

    def __init__(self, *, universe: int, addresses: Sequence[int], port: int = e131.PORT,
                 interface: str = "", multicast: bool = True,
                 timeout_s: float = e131.DATA_LOSS_S, hold_s: float = 0.1,
                 overrides: ChannelOverrides | None = None,
                 max_toggles_per_s: int | None = None,
                 allowed_senders: Sequence[str] = (),
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(rate=0)
        self.universe, self.port, self.interface = universe, port, interface
        self.multicast, self.timeout_s, self.hold_s = multicast, timeout_s, hold_s
        self.index = np.asarray(addresses, dtype=np.intp) - 1
        self.n = len(self.index)
        self.overrides = overrides or ChannelOverrides()
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.packets = 0  # accepted data packets
        self.senders: dict[bytes, _Sender] = {}
        ids = [sender_id(x) for x in allowed_senders]
        if None in ids:
            raise ValueError(f"sacn_source.allowed_senders: expected CIDs or IPv4 addresses, "
                             f"found {list(allowed_senders)}")
        self.allowed_cids = {uuid.UUID(v).bytes for k, v in ids if k == "cid"}
        self.allowed_addresses = {v for k, v in ids if k == "address"}
        self._told_not_allowed = False
        self._sock: socket.socket | None = None
        self._held: np.ndarray | None = None   # levels after the hold rule; None = lamps off
        self._shown: np.ndarray | None = None  # what read() last returned (after overrides)
        self._changed_at = np.full(self.n, -math.inf)
        self._free_at = math.inf               # when a held-back change may go through
        # Whoever sends, each relay keeps the strict switch limit (pi/show/relay_rules.py).
        self.guard = (ToggleGuard(self.n, max_per_s=max_toggles_per_s, hold_s=hold_s)
                      if max_toggles_per_s else None)
        self.status = f"waiting for sACN on universe {universe}"

    # --- socket ------------------------------------------------------------------------------

    def open(self) -> None:
        where = f"{self.interface or 'every interface'} port {self.port}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            try:
                sock.bind((self.interface, self.port))
            except OSError as exc:
                busy = (" (another program, or another lightshow, uses it)"
                        if exc.errno == errno.EADDRINUSE else "")
                raise DeviceError(f"sacn_source.port: expected UDP {where} to be free, found "
                                  f"{exc.strerror or exc}{busy}") from None
            if self.multicast:
                group = e131.multicast_group(self.universe)
                mreq = socket.inet_aton(group) + socket.inet_aton(self.interface or "0.0.0.0")
                try:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                except OSError as exc:
                    raise DeviceError(f"sacn_source.multicast: expected to join {group} on "
                                      f"{self.interface or 'the default interface'}, found "
                                      f"{exc.strerror or exc} (is the network up?)") from None
        except DeviceError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        log.info("sACN: listening for universe %d on %s%s", self.universe, where,
                 f", multicast {e131.multicast_group(self.universe)}" if self.multicast else "")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.senders.clear()
        self._held = self._shown = None

    def counters(self) -> dict[str, int]:
        return dict(self.counts)

    # --- reading -----------------------------------------------------------------------------

    def read(self, timeout: float):
        assert self._sock is not None, "read() before open()"
        deadline = self.clock() + timeout
        while True:
            now = self.clock()
            out = self._update(now)
            if out is not None or now >= deadline:
                return out
            wake = min([deadline, self._free_at]
                       + [s.seen + self.timeout_s for s in self.senders.values()])
            if select.select([self._sock], [], [], max(0.0, wake - now))[0]:
                self._drain()

    def _drain(self) -> None:
        for _ in range(MAX_BATCH):
            try:
                data, peer = self._sock.recvfrom(1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on UDP: never fatal
                self.counts["socket_error"] += 1
                log.debug("sACN: recv: %s", exc)
                return
            self.take(data, self.clock(), address=peer[0])

    def take(self, data: bytes, now: float, *, address: str | None = None) -> None:
        """One datagram from ``address`` (the sender's IPv4 address): accepted into its
        sender's state, or counted under a reason."""
        try:
            p = e131.parse(data)
        except e131.PacketError as exc:
            self.counts[exc.reason] += 1
            return
        if p.universe != self.universe:
            self.counts["other_universe"] += 1
            return
        if p.preview:
            self.counts["preview"] += 1
            return
        if (self.allowed_cids or self.allowed_addresses) and not (
                p.cid in self.allowed_cids or address in self.allowed_addresses):
            self.counts["not_allowed"] += 1
            if not self._told_not_allowed:  # once: what to add to the list, if it is wanted
                self._told_not_allowed = True
                log.warning("sACN: ignoring sender %r (CID %s, address %s): not in "
                            "sacn_source.allowed_senders", p.source_name, uuid.UUID(bytes=p.cid),
                            address)
            return
        sender = self.senders.get(p.cid)
        if p.terminated:
            if sender is not None:
                del self.senders[p.cid]
                log.info("sACN: %r stopped its stream (stream terminated)", sender.name)
            return
        if sender is not None and e131.sequence_is_stale(p.sequence, sender.sequence):
            self.counts["out_of_order"] += 1
            return
        slots = np.frombuffer(p.slots, dtype=np.uint8)
        levels = np.zeros(self.n, np.uint8)
        seen = self.index < len(slots)  # a short packet leaves the rest of the universe at 0
        levels[seen] = slots[self.index[seen]]
        if sender is None:
            # Nobody is pushed out for a newcomer: places free up by timeout or termination.
            if len(self.senders) >= MAX_SENDERS:
                self.counts["sources_exceeded"] += 1
                return
            if address is not None and sum(s.address == address for s in
                                           self.senders.values()) >= MAX_PER_ADDRESS:
                self.counts["address_sources_exceeded"] += 1
                return
            self.senders[p.cid] = _Sender(p.source_name, p.priority, p.sequence, now, levels,
                                          address)
            log.info("sACN: sender %r (CID %s, address %s) on universe %d at priority %d",
                     p.source_name, uuid.UUID(bytes=p.cid), address or "?", self.universe,
                     p.priority)
        else:
            sender.name, sender.priority, sender.sequence = p.source_name, p.priority, p.sequence
            sender.seen, sender.levels = now, levels
        self.packets += 1

    def _update(self, now: float):
        """Expire senders, merge the winners, apply hold and overrides; a result only when
        something changed."""
        for cid, s in list(self.senders.items()):
            if now - s.seen >= self.timeout_s:
                del self.senders[cid]
                log.warning("sACN: no packet from %r for %.2f s (the timeout is %.1f s); "
                            "dropped", s.name, now - s.seen, self.timeout_s)
        if not self.senders:
            self._free_at = math.inf
            if self._held is None:
                return None
            # Lamps off at once, whatever the hold: that is what data loss means. The relays
            # that were on have just switched, so the hold starts again for them.
            self._changed_at[self._held >= ON_LEVEL] = now
            if self.guard is not None:  # switched off regardless: still switchings
                for c in np.flatnonzero(self._held >= ON_LEVEL):
                    self.guard.switched(c, now)
            self._held = self._shown = None
            self.status = f"lamps off: no sACN sender on universe {self.universe}"
            log.warning("sACN: no sender left on universe %d; lamps off", self.universe)
            return LOST
        top = max(s.priority for s in self.senders.values())
        winners = [s for s in self.senders.values() if s.priority == top]
        wanted = np.max([s.levels for s in winners], axis=0) / 255.0
        # The outputs start all-off, and are all-off after a loss: that is the baseline.
        held = self._hold(wanted, np.zeros(self.n) if self._held is None else self._held, now)
        self._held = held
        out = self.overrides.levels(held)
        names = ", ".join(repr(s.name) for s in winners)
        self.status = f"following {names} on universe {self.universe}, priority {top}"
        if self._shown is not None and np.array_equal(out, self._shown):
            return None
        self._shown = out
        return out.copy()

    def _hold(self, wanted: np.ndarray, held: np.ndarray, now: float) -> np.ndarray:
        """Relays keep a state at least hold_s: a flip that comes sooner waits (and wakes
        read() when it may go through)."""
        flips = (wanted >= ON_LEVEL) != (held >= ON_LEVEL)
        early = flips & (now - self._changed_at < self.hold_s - 1e-9)
        free = self._changed_at + self.hold_s
        if self.guard is not None:
            for c in np.flatnonzero(flips & ~early):
                if self.guard.may_switch(c, now):
                    self.guard.switched(c, now)
                else:
                    early[c] = True
                    free[c] = self.guard.free_at(c)
        self._changed_at[flips & ~early] = now
        self._free_at = float(np.min(free[early])) if early.any() else math.inf
        return np.where(early, held, wanted)
