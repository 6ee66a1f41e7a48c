"""The control socket on a real daemon (file source in real time, mock output): status, the
lamp stream, start/stop/next/blackout, overrides, the relay test, `lightshow ctl`, the
socket's permissions, and a stream client that never reads (dropped; the loop never waits).

Waits are on socket reads with timeouts or bounded polls of the status; no fixed sleeps.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time

import pytest
import soundfile as sf

from pi.cli import main as cli
from pi.config.load import Config
from pi.daemon.control_socket import (STREAM_QUEUE, ControlError, ControlServer, Hub, request,
                               stream)
from pi.daemon.loop import Daemon
from tests.helpers import until
from training.corpus.synth import synth_song

RATE = 44100
TIMEOUT_S = 60.0  # a bound for a busy machine, not a pace


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    d = tmp_path_factory.mktemp("music")
    for i, name in enumerate(("a first song.wav", "b second song.wav")):
        y, _ = synth_song(seconds=12.0, seed=20 + i, ending="hard_stop")
        sf.write(d / name, y, RATE)
    return d


@pytest.fixture
def show(music, tmp_path):
    """A running daemon: (daemon, socket path, mock output)."""
    sock = tmp_path / "control.sock"
    cfg = Config.from_dict({"audio": {"source": "file", "playlist": [str(music)],
                                      "repeat": True},
                            "model": {"mapper": "bands"},
                            "outputs": {"enabled": ["mock"]},
                            "control": {"socket": str(sock)}})
    d = Daemon(cfg, realtime=True)
    rc = []
    th = threading.Thread(target=lambda: rc.append(d.run()), daemon=True)
    th.start()
    until(lambda: sock.exists(), "the control socket")
    mock = d.outputs.inner.outputs[0]
    yield d, sock, mock
    d.stop.set()
    th.join(TIMEOUT_S)
    assert rc == [0]
    assert not sock.exists()  # removed at exit
    assert mock.records[-1][2] == (False,) * 8  # lamps off at exit


def status(sock) -> dict:
    return request(sock, "status")["status"]


def test_socket_mode_is_owner_and_group_only(show):
    _, sock, _ = show
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(sock).st_mode)


def test_status_and_live_lamps(show, music):
    d, sock, mock = show
    st = until(lambda: (s := status(sock))["state"] == "playing" and s["song"] and s,
               "state playing")
    assert st["song"] == "a first song.wav" and st["next_song"] == "b second song.wav"
    assert st["model"] == "bands" and st["channels"] == 8 and len(st["lamps"]) == 8
    assert set(st["counters"]) == {"overflows", "underflows", "xruns"}
    assert st["overrides"] == ["auto"] * 8
    # The stream: the current lamps first, then every change, as the mock output got them.
    seen = []
    for msg in stream(sock):
        seen.append(tuple(msg["lamps"]))
        if len(seen) >= 6:
            break
    # Every message after the first is a change (a blink may come back to a pattern seen).
    assert all(a != b for a, b in zip(seen, seen[1:]))
    recorded = {r[2] for r in mock.records}
    assert set(seen[1:]) <= recorded


def test_stop_start_next_blackout_override(show):
    d, sock, mock = show
    until(lambda: status(sock)["state"] == "playing", "playing")
    request(sock, "stop")
    until(lambda: status(sock)["state"] == "stopped", "stopped")
    n = len(mock.records)
    assert mock.records[-1][2] == (False,) * 8
    request(sock, "start")
    until(lambda: len(mock.records) > n + 3 and status(sock)["state"] == "playing",
          "playing again")
    request(sock, "next")
    until(lambda: status(sock).get("song") == "b second song.wav", "the second song")
    # Blackout: lamps off at once and for as long as it lasts, while the music goes on.
    request(sock, "blackout")
    until(lambda: status(sock)["state"] == "blackout", "blackout")
    n = len(mock.records)
    pos = status(sock)["position_s"]
    until(lambda: status(sock)["position_s"] > pos + 0.5, "the song going on")
    assert len(mock.records) > n + 10
    assert all(r[2] == (False,) * 8 for r in mock.records[n:])
    # Overrides: channel 2 on, channel 1 off, applied to every state from then on.
    request(sock, "start")
    request(sock, "override", channel=2, mode="on")
    request(sock, "override", channel=1, mode="off")
    until(lambda: status(sock)["overrides"][:2] == ["off", "on"], "overrides in the status")
    n = len(mock.records)
    until(lambda: len(mock.records) > n + 10, "more frames")
    assert all(r[2][1] and not r[2][0] for r in mock.records[n + 1:])
    request(sock, "override", channel=2, mode="auto")
    until(lambda: status(sock)["overrides"][1] == "auto", "channel 2 back to auto")


def test_relay_test_steps_through_each_channel(show):
    d, sock, mock = show
    request(sock, "stop")
    until(lambda: status(sock)["state"] == "stopped", "stopped")
    n = len(mock.records)
    request(sock, "relay-test")
    until(lambda: status(sock)["state"] == "relay test: channel 3", "channel 3 under test",
          timeout=10)
    ones = [r[2] for r in mock.records[n:] if any(r[2])]
    assert ones[:3] == [tuple(c == k for c in range(8)) for k in range(3)]
    request(sock, "stop")  # ends the test early
    until(lambda: status(sock)["state"] == "stopped", "stopped after the test")
    assert mock.records[-1][2] == (False,) * 8


def test_bad_requests_are_refused_with_a_reason(show):
    _, sock, _ = show
    with pytest.raises(ControlError, match="expected a channel from 1 to 8, found 9"):
        request(sock, "override", channel=9, mode="on")
    with pytest.raises(ControlError, match="expected mode on, off or auto"):
        request(sock, "override", channel=1, mode="dim")
    with pytest.raises(ControlError, match="unknown command 'reboot'"):
        request(sock, "reboot")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"not json\n")
        assert b"expected a JSON object" in s.makefile("rb").readline()


def test_ctl_cli(show, capsys):
    _, sock, _ = show
    until(lambda: status(sock).get("song"), "a song playing")  # not in the first snapshot
    assert cli.main(["ctl", "status", "--socket", str(sock)]) == 0
    out = capsys.readouterr().out
    assert "state:   playing" in out and "a first song.wav" in out
    assert cli.main(["ctl", "status", "--json", "--socket", str(sock)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "playing"
    assert cli.main(["ctl", "stop", "--socket", str(sock)]) == 0
    until(lambda: status(sock)["state"] == "stopped", "stopped by ctl")


def test_ctl_without_a_daemon_says_it_is_not_running(tmp_path, capsys):
    assert cli.main(["ctl", "status", "--socket", str(tmp_path / "none.sock")]) == 3
    assert "the show is not running (no control socket at" in capsys.readouterr().err


def test_a_stream_client_that_never_reads_is_dropped_and_never_blocks(tmp_path):
    hub = Hub(n_channels=8)
    server = ControlServer(hub, tmp_path / "c.sock")
    server.open()
    try:
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(str(tmp_path / "c.sock"))
        idle.sendall(b'{"cmd": "stream"}\n')
        until(lambda: hub.clients, "the client registered")
        client = hub.clients[0]
        # Far more changes than any buffer holds; push() must stay a few appends each.
        worst = 0.0
        for i in range(200_000):
            t = time.perf_counter()
            hub.push(tuple(bool((i >> c) & 1) for c in range(8)))
            worst = max(worst, time.perf_counter() - t)
            if not hub.clients:
                break
        until(lambda: not hub.clients, "the slow client dropped")
        assert client.dropped or len(client.out) > 0
        assert len(client.queue) <= STREAM_QUEUE
        # The socket is closed from our side: the idle client reads what was sent, then EOF.
        idle.settimeout(TIMEOUT_S)
        while idle.recv(1 << 16):
            pass
        idle.close()
        # A fresh client still gets served.
        assert request(tmp_path / "c.sock", "status")["status"]["state"] == "starting"
    finally:
        server.close()


def test_a_second_daemon_leaves_a_live_socket_alone(tmp_path):
    path = tmp_path / "c.sock"
    first = ControlServer(Hub(n_channels=2), path)
    first.open()
    try:
        with pytest.raises(OSError, match="another lightshow daemon"):
            ControlServer(Hub(n_channels=2), path).open()
        assert request(path, "status")["ok"]
    finally:
        first.close()
    # A stale file (a crash) is replaced.
    path.touch()
    second = ControlServer(Hub(n_channels=2), path)
    second.open()
    assert request(path, "status")["ok"]
    second.close()
