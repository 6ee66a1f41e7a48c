"""The sACN output's packets on loopback (unicast 127.0.0.1, never multicast): levels,
dimmer grades, blackout then stream-terminated, and a clear error without the package."""
from __future__ import annotations

import socket
import sys

import pytest

from pi.net import e131

import sacn  # noqa: E402,F401 - installed in CI: missing is a failure, not a skip
from pi.outputs.sacn import SACNOutput, stable_cid  # noqa: E402

U = 7

@pytest.fixture
def rx_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(30.0)  # a bound, not a pace: each packet ends the wait
        yield s


def recv_packets(sock, until, limit=400):
    """Packets until `until(packets)` is true (bounded by count and the socket timeout)."""
    got = []
    for _ in range(limit):
        got.append(e131.parse(sock.recv(1024)))
        if until(got):
            return got
    raise AssertionError(f"condition not met within {limit} packets")


# --- the output ------------------------------------------------------------------------------

def test_output_levels_then_blackout_then_three_terminated(rx_socket):
    port = rx_socket.getsockname()[1]
    out = SACNOutput(4, universe=U, start_address=10, destination="127.0.0.1", port=port,
                     priority=123, source_name="unit test", fps=44)
    out.open()
    try:
        out.set([True, False, True, True], t=0.0)
        got = recv_packets(rx_socket, lambda ps: ps[-1].slots[9:13] == b"\xff\0\xff\xff")
    finally:
        out.close()
    p = got[-1]
    assert (p.universe, p.priority, p.source_name) == (U, 123, "unit test")
    assert p.cid == bytes(stable_cid("unit test")) and not any(p.slots[:9] + p.slots[13:])
    tail = recv_packets(rx_socket, lambda ps: sum(x.terminated for x in ps) == 3)
    terminated = [x for x in tail if x.terminated]
    before = [x for x in tail if not x.terminated]
    assert before and not any(before[-1].slots), "the last live packet must be the blackout"
    assert tail[-3:] == terminated, "terminated packets come last"
    rx_socket.settimeout(0.3)
    with pytest.raises(TimeoutError):  # the stream is over: nothing more for this universe
        rx_socket.recv(1024)


def test_dimmer_sends_graded_levels(rx_socket):
    port = rx_socket.getsockname()[1]
    with SACNOutput(3, universe=U, destination="127.0.0.1", port=port, dimmer=True) as out:
        out.set([True, True, False], t=0.0, levels=[0.5, 1.0, 0.0])
        got = recv_packets(rx_socket, lambda ps: ps[-1].slots[:3] == bytes([128, 255, 0]))
        out.set([True, False, False], t=0.1)  # no levels: on/off as 255/0
        got = recv_packets(rx_socket, lambda ps: ps[-1].slots[:3] == bytes([255, 0, 0]))
    assert got


def test_multicast_goes_to_the_universe_group(monkeypatch):
    from pi.outputs import sacn as sacn_output

    sent = []
    make = sacn_output._socket_class

    def recording(base):
        cls = make(base)

        class Recording(cls):
            def sendto(self, raw, destination):  # nothing leaves this machine
                sent.append((destination, e131.parse(raw)))

        return Recording

    monkeypatch.setattr(sacn_output, "_socket_class", recording)
    with SACNOutput(2, universe=258, destination="multicast") as out:
        out.set([True, True], t=0.0)
    assert {d for d, _ in sent} == {"239.255.1.2"}
    assert sent[-1][1].terminated and sum(p.terminated for _, p in sent) == 3


def test_missing_package_is_a_clear_error(monkeypatch):
    from pi.outputs.base import OutputError

    monkeypatch.setitem(sys.modules, "sacn", None)
    with pytest.raises(OutputError, match=r"sacn: expected the `sacn` package, found it not "
                                          r"installed; .*pip install"):
        SACNOutput(2, universe=1).open()
