"""E1.31 (streaming ACN, "sACN") data packets: a strict parser, and a builder for tests and
benchmarks. Stdlib only.

The receiving side is ours, not the `sacn` package's: its receiver drops what it cannot parse
without counting it, lets a non-UTF-8 source name kill its thread, mixes sources of a
universe without looking at their CID, and treats a per-address-priority packet (START code
0xDD) as levels. Here every packet either parses completely or raises :class:`PacketError`
with a reason that is also a counter name; nothing is ever unpickled or evaluated.

Offsets follow ANSI E1.31-2018, section 4.1 (a data packet is 126 octets plus 0..512 slots).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

PORT = 5568  # ACN_SDT_MULTICAST_PORT
ACN_ID = b"ASC-E1.17\0\0\0"
ROOT_DATA, ROOT_EXTENDED = 0x04, 0x08          # root layer vectors
FRAMING_DATA = 0x02                            # VECTOR_E131_DATA_PACKET
DMP_SET_PROPERTY, DMP_TYPES = 0x02, 0xA1
HEADER = 126                                   # octets before the first slot
MAX_SLOTS = 512
# The ranges E1.31 allows (section 6.2.3 priority, 6.2.7 universe); config and output check them.
UNIVERSES = (1, 63999)
PRIORITIES = (0, 200)
OPT_PREVIEW, OPT_TERMINATED, OPT_FORCE_SYNC = 0x80, 0x40, 0x20
DATA_LOSS_S = 2.5                              # E131_NETWORK_DATA_LOSS_TIMEOUT

# preamble, postamble, ACN id, root flags+length, root vector, CID,
# framing flags+length, framing vector, source name, priority, sync address, sequence,
# options, universe, DMP flags+length, DMP vector, address+data type, first address,
# address increment, property value count, START code
_HEADER = struct.Struct("!HH12sHI16sHI64sBHBBHHBBHHHB")
assert _HEADER.size == HEADER


class PacketError(ValueError):
    """Not a usable E1.31 data packet. ``reason`` is a short counter name."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class DataPacket:
    cid: bytes
    source_name: str
    priority: int
    sequence: int
    options: int
    universe: int
    slots: bytes  # the DMX levels after the START code; slot k is DMX address k + 1

    @property
    def terminated(self) -> bool:
        return bool(self.options & OPT_TERMINATED)

    @property
    def preview(self) -> bool:
        return bool(self.options & OPT_PREVIEW)


def _expect(ok: bool, reason: str, what: str, expected: str, found: object) -> None:
    if not ok:
        raise PacketError(reason, f"{what}: expected {expected}, found {found}")


def parse(data: bytes) -> DataPacket:
    """A data packet with START code 0 (levels), or :class:`PacketError`.

    Reasons: ``truncated``, ``not_e131`` (another protocol on the port), ``extended`` (E1.31
    sync or discovery: valid, but not levels), ``bad_vector``, ``bad_length``,
    ``bad_priority``, ``bad_universe``, ``start_code`` (e.g. 0xDD per-address priority).
    """
    n = len(data)
    _expect(n >= 22, "truncated", "packet", "at least 22 octets for a root layer", n)
    preamble, postamble, acn_id, root_fl, root_vector = struct.unpack_from("!HH12sHI", data)
    _expect(preamble == 0x10 and postamble == 0 and acn_id == ACN_ID, "not_e131",
            "root layer", "an ACN preamble and ASC-E1.17", acn_id[:9])
    if root_vector == ROOT_EXTENDED:
        raise PacketError("extended", "a synchronization or discovery packet, not levels")
    _expect(root_vector == ROOT_DATA, "bad_vector", "root vector", "0x00000004",
            f"0x{root_vector:08x}")
    _expect(n >= HEADER, "truncated", "data packet", f"at least {HEADER} octets", n)
    (_, _, _, root_fl, _, cid, frame_fl, frame_vector, name, priority, _sync, sequence,
     options, universe, dmp_fl, dmp_vector, types, first, incr, count,
     start_code) = _HEADER.unpack_from(data)
    _expect(frame_vector == FRAMING_DATA, "bad_vector", "framing vector", "0x00000002",
            f"0x{frame_vector:08x}")
    _expect(dmp_vector == DMP_SET_PROPERTY and types == DMP_TYPES and first == 0
            and incr == 1, "bad_vector", "DMP layer", "vector 0x02, types 0xa1, address 0, "
            "increment 1", f"{dmp_vector:#04x}, {types:#04x}, {first}, {incr}")
    _expect(1 <= count <= MAX_SLOTS + 1 and n == HEADER - 1 + count, "bad_length",
            "property value count", f"1..513 values filling the {n} received octets", count)
    end = HEADER - 1 + count
    # Each layer's length runs from its own start to the end of the PDU; 0x7 are the flags.
    for layer, start, fl in (("root", 16, root_fl), ("framing", 38, frame_fl),
                             ("DMP", 115, dmp_fl)):
        _expect(fl == 0x7000 | (end - start), "bad_length", f"{layer} layer flags and length",
                f"0x{0x7000 | (end - start):04x}", f"0x{fl:04x}")
    _expect(priority <= PRIORITIES[1], "bad_priority", "priority", "%d..%d" % PRIORITIES,
            priority)
    _expect(UNIVERSES[0] <= universe <= UNIVERSES[1], "bad_universe", "universe",
            "%d..%d" % UNIVERSES, universe)
    _expect(start_code == 0, "start_code", "START code", "0x00 (levels)", f"0x{start_code:02x}")
    # A name that is not valid UTF-8 is only a label: it must not cost the packet.
    source_name = name.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return DataPacket(cid=cid, source_name=source_name, priority=priority, sequence=sequence,
                      options=options, universe=universe, slots=bytes(data[HEADER:end]))


def build(*, cid: bytes, universe: int, slots: bytes = b"", source_name: str = "lightshow",
          priority: int = 100, sequence: int = 0, options: int = 0,
          start_code: int = 0) -> bytes:
    """An E1.31 data packet (tests, benchmarks; the appliance sends with the `sacn` package)."""
    if len(cid) != 16 or len(slots) > MAX_SLOTS:
        raise ValueError(f"expected a 16-octet CID and at most 512 slots, found "
                         f"{len(cid)} and {len(slots)}")
    end = HEADER + len(slots)
    header = _HEADER.pack(0x10, 0, ACN_ID, 0x7000 | (end - 16), ROOT_DATA, cid,
                          0x7000 | (end - 38), FRAMING_DATA,
                          source_name.encode("utf-8")[:63], priority, 0, sequence & 0xFF,
                          options, universe, 0x7000 | (end - 115), DMP_SET_PROPERTY, DMP_TYPES,
                          0, 1, len(slots) + 1, start_code)
    return header + bytes(slots)


def multicast_group(universe: int) -> str:
    """E1.31's multicast address for a universe: 239.255.<high byte>.<low byte>."""
    return f"239.255.{universe >> 8}.{universe & 0xFF}"


def sequence_is_stale(new: int, last: int) -> bool:
    """E1.31 6.7.2: B - A in signed 8-bit arithmetic within (-20, 0] means out of order."""
    diff = (new - last + 128) % 256 - 128
    return -20 < diff <= 0
