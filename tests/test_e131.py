"""E1.31 parsing and the sacn source's receiver rules, in process: crafted packets through a
real UDP socket on 127.0.0.1 (unicast only), and a fake clock for the timeouts."""
from __future__ import annotations

import socket

import numpy as np
import pytest

from pi.net import e131
from pi.show.relay_rules import ChannelOverrides
from pi.audio.sacn_receiver import LOST, MAX_SENDERS, SACNSource
from pi.audio.sources import DeviceError

CID_A, CID_B = bytes(range(16)), bytes(range(16, 32))
U = 7


def packet(slots=b"", *, cid=CID_A, universe=U, **kw) -> bytes:
    return e131.build(cid=cid, universe=universe, slots=bytes(slots), **kw)


# --- the parser ------------------------------------------------------------------------------

def test_parses_what_the_sacn_package_sends():
    import sacn.messages.data_packet as sacn_dp  # the extra: a failure, not a skip, if missing
    p = sacn_dp.DataPacket(cid=tuple(CID_A), sourceName="xLights ☃", universe=U,
                           dmxData=(0, 255, 7), priority=150, sequence=42,
                           streamTerminated=True)
    raw = bytes(p.getBytes())
    got = e131.parse(raw)
    assert (got.cid, got.source_name, got.priority, got.sequence, got.universe) == (
        CID_A, "xLights ☃", 150, 42, U)
    assert got.terminated and not got.preview
    assert got.slots[:4] == bytes([0, 255, 7, 0]) and len(got.slots) == 512
    assert raw == e131.build(cid=CID_A, universe=U, slots=bytes([0, 255, 7]) + bytes(509),
                             source_name="xLights ☃", priority=150, sequence=42,
                             options=e131.OPT_TERMINATED)


def _with(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value):]


GOOD = packet(bytes([255, 0, 128]))


@pytest.mark.parametrize("raw, reason", [
    (GOOD[:20], "truncated"),
    (GOOD[:100], "truncated"),
    (GOOD[:-1], "bad_length"),                                 # count says 3 slots, has 2
    (GOOD + b"\0", "bad_length"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not_e131"),
    (bytes(200), "not_e131"),
    (_with(GOOD, 4, b"ASC-E1.18"), "not_e131"),
    (_with(GOOD, 18, b"\0\0\0\x05"), "bad_vector"),            # root vector
    (_with(GOOD, 18, b"\0\0\0\x08"), "extended"),              # sync / discovery
    (_with(GOOD, 40, b"\0\0\0\x03"), "bad_vector"),            # framing vector
    (_with(GOOD, 117, b"\x03"), "bad_vector"),                 # DMP vector
    (_with(GOOD, 118, b"\xa2"), "bad_vector"),                 # address and data type
    (_with(GOOD, 16, b"\x70\x00"), "bad_length"),              # root flags and length
    (_with(GOOD, 38, b"\x72\x00"), "bad_length"),
    (_with(GOOD, 123, b"\x02\x02"), "bad_length"),             # 513 values announced
    (packet(priority=201), "bad_priority"),
    (packet(universe=0), "bad_universe"),
    (packet(universe=64000), "bad_universe"),
    (packet(bytes(8), start_code=0xDD), "start_code"),          # per-address priority
])
def test_malformed_packets_raise_with_a_reason(raw, reason):
    with pytest.raises(e131.PacketError) as exc:
        e131.parse(raw)
    assert exc.value.reason == reason
    assert "expected" in str(exc.value) or reason == "extended"


def test_a_name_that_is_not_utf8_does_not_cost_the_packet():
    raw = _with(GOOD, 44, b"\xff\xfeabc\0")
    assert e131.parse(raw).source_name.endswith("abc")


def test_zero_slots_and_full_universe():
    assert e131.parse(packet(b"")).slots == b""
    assert len(e131.parse(packet(bytes(512))).slots) == 512
    with pytest.raises(ValueError):
        packet(bytes(513))


@pytest.mark.parametrize("new, last, stale", [
    (5, 5, True), (4, 5, True), (250, 5, True), (240, 3, True), (6, 5, False),
    (0, 255, False), (255, 0, True), (100, 5, False), (236, 0, False), (237, 0, True)])
def test_sequence_rule_of_e131_6_7_2(new, last, stale):
    assert e131.sequence_is_stale(new, last) is stale


def test_multicast_group():
    assert e131.multicast_group(1) == "239.255.0.1"
    assert e131.multicast_group(63999) == "239.255.249.255"


# --- the source, over loopback ---------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def source():
    clock = Clock()
    src = SACNSource(universe=U, addresses=[1, 2, 3, 10], port=0, interface="127.0.0.1",
                     multicast=False, hold_s=0.1, clock=clock)
    src.open()
    yield src, clock
    src.close()


def levels_of(src: SACNSource):
    got = src.read(0)
    return got if got is LOST or got is None else list(np.round(got * 255).astype(int))


def test_source_over_loopback_counts_malformed_and_foreign_packets():
    src = SACNSource(universe=U, addresses=[1, 2], port=0, interface="127.0.0.1",
                     multicast=False)
    src.open()
    port = src._sock.getsockname()[1]
    junk = [GOOD[:50], GOOD[:-1], _with(GOOD, 18, b"\0\0\0\x05"), b"\x00garbage" * 20,
            packet(universe=U + 1), packet(bytes([255]), options=e131.OPT_PREVIEW),
            packet(bytes(4), start_code=0xDD)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for raw in junk + [packet(bytes([255, 0]), sequence=1)]:
                tx.sendto(raw, ("127.0.0.1", port))
            got = None
            for _ in range(50):  # bounded: each read waits at most 0.1 s for the valid one
                got = src.read(0.1)
                if got is not None:
                    break
    finally:
        src.close()
    assert list(got) == [1.0, 0.0]
    assert src.counters() == {"truncated": 1, "bad_length": 1, "bad_vector": 1,
                              "not_e131": 1, "other_universe": 1, "preview": 1,
                              "start_code": 1}
    assert src.packets == 1


def test_addresses_map_channels_and_short_packets_leave_zeros(source):
    src, clock = source
    src.take(packet(bytes([10, 20, 200]), sequence=1), clock.t)
    assert levels_of(src) == [10, 20, 200, 0]  # address 10 is beyond this packet's 3 slots
    clock.t += 0.2  # past the hold: channel 3 may go off
    src.take(packet(bytes(range(0, 100, 10)), sequence=2), clock.t)
    assert levels_of(src) == [0, 10, 20, 90]


def test_higher_priority_wins_and_lower_takes_over_when_it_terminates(source):
    src, clock = source
    src.take(packet(bytes([255, 0, 0, 0]), cid=CID_B, priority=100, source_name="lo"), clock.t)
    assert levels_of(src)[:2] == [255, 0]
    src.take(packet(bytes([0, 255, 0, 0]), priority=150, source_name="hi"), clock.t)
    clock.t += 0.2  # past the hold: channel 1 may go off, channel 2 on
    assert levels_of(src)[:2] == [0, 255]
    clock.t += 0.2
    src.take(packet(bytes([255, 255, 255, 255]), cid=CID_B, priority=100, sequence=1),
             clock.t)
    assert levels_of(src) is None  # the lower sender changed, but it is not in charge
    src.take(packet(bytes(4), priority=150, sequence=1, options=e131.OPT_TERMINATED),
             clock.t)
    assert levels_of(src) == [255, 255, 255, 0]  # terminated: dropped at once, lo rules


def test_equal_priorities_merge_highest_level_per_address(source):
    src, clock = source
    src.take(packet(bytes([200, 0, 10])), clock.t)
    src.take(packet(bytes([100, 50, 0]), cid=CID_B), clock.t)
    assert levels_of(src)[:3] == [200, 50, 10]


def test_timeout_per_sender_then_lost(source):
    src, clock = source
    src.take(packet(bytes([255])), clock.t)
    assert levels_of(src)[0] == 255
    clock.t += 2.0
    src.take(packet(bytes([0, 255]), cid=CID_B, source_name="late"), clock.t)
    clock.t += 0.49
    assert levels_of(src)[:2] == [255, 255]  # both live: HTP
    clock.t += 0.02  # A was last heard 2.51 s ago
    assert levels_of(src)[:2] == [0, 255]
    clock.t += 2.5
    assert src.read(0) is LOST
    assert src.read(0) is None  # lamps are already off: said once
    assert "no sACN sender" in src.status


def test_stale_sequence_is_dropped_and_counted(source):
    src, clock = source
    src.take(packet(bytes([255]), sequence=10), clock.t)
    src.take(packet(bytes([0]), sequence=9), clock.t + 0.5)
    assert levels_of(src)[0] == 255 and src.counts["out_of_order"] == 1


def test_hold_time_defers_a_quick_flip_and_read_wakes_for_it(source):
    src, clock = source
    src.take(packet(bytes([255])), clock.t)
    assert levels_of(src)[0] == 255
    clock.t += 0.03
    src.take(packet(bytes([0]), sequence=1), clock.t)
    assert levels_of(src) is None  # on for 30 ms only: held
    assert src._free_at == pytest.approx(clock.t + 0.07)
    clock.t += 0.07
    assert levels_of(src)[0] == 0


def test_overrides_apply_after_the_network(source):
    src, clock = source
    src.overrides = ChannelOverrides(invert=(0,), always_on=(1,), always_off=(2,))
    src.take(packet(bytes([255, 0, 255]) + bytes(6) + bytes([64])), clock.t)
    got = src.read(0)
    assert list(np.round(got * 255)) == [0, 255, 0, 64]


def test_sources_exceeded_are_counted(source):
    src, clock = source
    for i in range(MAX_SENDERS + 2):
        src.take(packet(bytes([i]), cid=bytes([i]) * 16), clock.t)
    assert len(src.senders) == MAX_SENDERS and src.counts["sources_exceeded"] == 2


def test_port_in_use_is_a_device_error_naming_the_key():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        src = SACNSource(universe=U, addresses=[1], port=busy.getsockname()[1],
                         interface="127.0.0.1", multicast=False)
        with pytest.raises(DeviceError, match=r"sacn_source\.port: expected UDP 127\.0\.0\.1 "
                                              r"port \d+ to be free, found .*in use"):
            src.open()


# --- senders: floods and the allow-list (issue 13 item 9) -------------------------------------

REAL, OTHER_HOST, FLOODER = "192.168.1.20", "192.168.1.21", "192.168.1.66"


def flood(src, clock, n, *, address=FLOODER, priority=100, first=0):
    rng = np.random.default_rng(first)
    for i in range(n):
        src.take(packet(bytes([255] * 4), cid=rng.bytes(16), priority=priority,
                        sequence=i), clock.t, address=address)


def test_a_flood_of_new_senders_never_pushes_out_a_known_one(source):
    src, clock = source
    src.take(packet(bytes([255, 0, 0, 0]), source_name="real"), clock.t, address=REAL)
    assert levels_of(src) == [255, 0, 0, 0]
    for k in range(1, 40):  # 4 s of flood, the real sender sending on at 10 packets a second
        clock.t += 0.1
        flood(src, clock, 50, first=k)
        src.take(packet(bytes([255, 0, 0, 0]), sequence=k), clock.t, address=REAL)
        src.read(0)
        assert CID_A in src.senders
        assert sum(s.address == FLOODER for s in src.senders.values()) <= MAX_SENDERS // 2
    assert src.counts["address_sources_exceeded"] > 39 * 45
    # A real sender starting on another machine during the flood still gets a place.
    src.take(packet(bytes([0, 255, 0, 0]), cid=CID_B, source_name="second"), clock.t,
             address=OTHER_HOST)
    assert CID_B in src.senders
    assert src.counts["sources_exceeded"] == 0


def test_only_allowed_senders_drive_the_lamps_by_cid_or_address():
    import uuid

    clock = Clock()
    src = SACNSource(universe=U, addresses=[1, 2], port=0, multicast=False, clock=clock,
                     allowed_senders=[str(uuid.UUID(bytes=CID_B)), REAL])
    flood(src, clock, 100, priority=200)
    src.take(packet(bytes([255, 0]), priority=200), clock.t, address=OTHER_HOST)  # CID_A
    assert src._update(clock.t) is None and not src.senders
    assert src.counts["not_allowed"] == 101
    src.take(packet(bytes([0, 255]), cid=CID_B), clock.t, address=OTHER_HOST)  # by CID
    assert list(src._update(clock.t)) == [0.0, 1.0]
    src.take(packet(bytes([255, 0]), cid=bytes(16)), clock.t, address=REAL)  # by address
    assert list(src._update(clock.t)) == [1.0, 1.0]


def test_the_allow_list_applies_to_packets_from_the_socket(caplog):
    """Over loopback: the source address comes from the datagram itself."""
    src = SACNSource(universe=U, addresses=[1], port=0, interface="127.0.0.1",
                     multicast=False, allowed_senders=["127.0.0.2"])
    src.open()
    port = src._sock.getsockname()[1]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(packet(bytes([255])), ("127.0.0.1", port))
            while not src.counts["not_allowed"]:  # each read waits for the datagram
                assert src.read(1.0) is None
    finally:
        src.close()
    assert src.senders == {} and src.packets == 0
    assert "not in sacn_source.allowed_senders" in caplog.text and "127.0.0.1" in caplog.text


@pytest.mark.parametrize("value, message", [
    (["192.168.1.300"], r"allowed_senders\[0\]: expected a sender CID"),
    ([5], r"allowed_senders\[0\]: expected a sender CID .* found integer 5"),
    ("10.0.0.1", r"allowed_senders: expected a list"),
    (["10.0.0.1", "10.0.0.1"], r"allowed_senders\[1\]: expected each sender once"),
    (["6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6BA7B8109DAD11D180B400C04FD430C8"],
     r"allowed_senders\[1\]: expected each sender once"),
])
def test_allowed_senders_are_checked(value, message):
    from pi.config.load import Config, ConfigError

    with pytest.raises(ConfigError, match=message):
        Config.from_dict({"sacn_source": {"allowed_senders": value}})
    ok = Config.from_dict({"sacn_source": {"allowed_senders": [
        "10.0.0.1", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"]}})
    assert len(ok.sacn_source.allowed_senders) == 2


def test_the_daemon_gives_the_allow_list_to_its_sacn_source():
    from pi.config.load import Config
    from pi.app import make_source

    cfg = Config.from_dict({"audio": {"source": "sacn"},
                            "sacn_source": {"allowed_senders": ["10.0.0.7"]}})
    assert make_source(cfg, rate=0).allowed_addresses == {"10.0.0.7"}


def test_check_config_names_the_allowed_senders(tmp_path):
    from pi.config.load import check_config

    path = tmp_path / "rx.toml"
    path.write_text('[audio]\nsource = "sacn"\n[sacn_source]\nallowed_senders = ["10.0.0.7"]\n')
    assert "senders: 10.0.0.7" in check_config(path)
    path.write_text('[audio]\nsource = "sacn"\n')
    assert "senders: any (no sacn_source.allowed_senders)" in check_config(path)
