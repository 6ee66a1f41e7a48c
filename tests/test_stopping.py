"""Every stop path ends all-off: each command that opens outputs, run in a subprocess, gets
each stop signal while a lamp is on. The record is a FIFO read by a thread, so the test
waits on the states themselves (no sleeps, no polling of a file)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf

from pi.daemon import stopping
from pi.outputs.base import MockOutput
from training.corpus.synth import synth_song

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT]
EXPECTED_RC = {signal.SIGTERM: 0, signal.SIGINT: 130, signal.SIGHUP: 129,
               signal.SIGQUIT: 131}


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("stop") / "long.wav"
    y, _ = synth_song(seconds=30.0, seed=5, ending="fade")
    sf.write(path, y, RATE)
    return path


def _records(fifo: Path) -> "queue.Queue[dict | None]":
    """Lines of the FIFO as dicts, then None at EOF (the writer closed it)."""
    q: queue.Queue = queue.Queue()

    def read() -> None:
        with open(fifo, encoding="utf-8") as f:  # blocks until the child opens it
            for line in f:
                q.put(json.loads(line))
        q.put(None)

    threading.Thread(target=read, daemon=True).start()
    return q


def _assert_unwound_all_off(signum: int, rc: int, records: list[dict], stderr: str) -> None:
    """The run unwound: the signal's exit code, no traceback, every lamp off before the close."""
    assert rc == EXPECTED_RC[signum], stderr
    assert "Traceback" not in stderr, stderr
    assert records[-1]["event"] == "close"
    assert records[-2]["event"] == "all_off" and not any(records[-2]["states"])


def _stop_while_lit(args: list[str], fifo: Path, signum: int) -> tuple[int, list[dict], str]:
    os.mkfifo(fifo)
    q = _records(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "pi", *args, "--record", str(fifo)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seen: list[dict] = []
    try:
        while True:  # until a lamp is on: the state a stop must not leave behind
            r = q.get(timeout=60)
            assert r is not None, f"ended before any lamp was on: {proc.stderr.read()}"
            seen.append(r)
            if r["event"] == "set" and any(r["states"]):
                break
        proc.send_signal(signum)
        while (r := q.get(timeout=60)) is not None:
            seen.append(r)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            with open(fifo, "w"):  # unblocks the reader thread if the child never opened it
                pass
    return rc, seen, proc.stderr.read()


COMMANDS = {
    "run": lambda song: ["run", "--source", "file", "--realtime", "--output", "mock",
                         "--mapper", "bands", str(song)],
    "relays": lambda song: ["relays", "--output", "mock", "--step-s", "30"],
}


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_stop_signal_ends_all_off(command, signum, song, tmp_path):
    rc, records, stderr = _stop_while_lit(COMMANDS[command](song), tmp_path / "rec", signum)
    _assert_unwound_all_off(signum, rc, records, stderr)


def test_a_second_signal_during_the_all_off_waits_until_it_is_done(tmp_path):
    """Ctrl-C twice: the second one lands while the relays are being switched off."""

    class Interrupted(MockOutput):
        writes = 0

        def _write(self, states, levels, t):
            if t is None and self.opened and self.writes == 2:  # close()'s all-off
                os.kill(os.getpid(), signal.SIGTERM)
                signal.sigtimedwait([], 0)  # a syscall: the handler runs here, mid-write
            self.writes += 1
            super()._write(states, levels, t)

    previous = stopping.install()
    try:
        out = Interrupted(8, tmp_path / "rec.jsonl")
        out.open()
        out.set([True] * 8, t=0.0)
        with pytest.raises(stopping.Stopped) as exc:
            out.close()
        assert exc.value.code == 0
    finally:
        stopping.restore(previous)
    events = MockOutput.read(tmp_path / "rec.jsonl")
    assert [e["event"] for e in events] == ["open", "all_off", "set", "all_off", "close"]
    assert not any(events[-2]["states"])


def test_an_exception_in_the_show_ends_all_off(song, tmp_path, monkeypatch):
    from pi.cli import main as cli
    from pi.show.pipeline import Show

    calls = {"n": 0}
    real = Show.process

    def failing(self, frames, times):
        calls["n"] += 1
        if calls["n"] == 20:
            raise RuntimeError("a bug in the show")
        return real(self, frames, times)

    monkeypatch.setattr(Show, "process", failing)
    # Songs from files play their planned show: its per-block step fails the same way.
    from pi.daemon.loop import Daemon

    planned = Daemon._planned

    def failing_plan(self, *args):
        calls["n"] += 1
        if calls["n"] == 20:
            raise RuntimeError("a bug in the show")
        return planned(self, *args)

    monkeypatch.setattr(Daemon, "_planned", failing_plan)
    rec = tmp_path / "rec.jsonl"
    with pytest.raises(RuntimeError, match="a bug in the show"):
        cli.main(["run", "--source", "file", "--output", "mock", "--mapper", "bands",
                  "--record", str(rec), str(song)])
    events = MockOutput.read(rec)
    assert any(any(e["states"]) for e in events if e["event"] == "set")
    assert [e["event"] for e in events[-2:]] == ["all_off", "close"]
    assert not any(events[-2]["states"])


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_each_stop_signal_ends_all_off_when_following_sacn(signum, tmp_path):
    """`run --source sacn` has its own loop (no audio): a sender on loopback lights channel
    1 until the receiver is stopped."""
    import socket

    from pi.net import e131

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "rx.toml"
    config.write_text(f'[audio]\nsource = "sacn"\n[sacn_source]\nuniverse = 7\n'
                      f'interface = "127.0.0.1"\nmulticast = false\nport = {port}\n')
    done = threading.Event()

    def send() -> None:  # a sender at 20 packets a second, as long as the test runs
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            seq = 0
            while not done.wait(0.05):  # the sender's own pace, not a synchronisation
                tx.sendto(e131.build(cid=b"S" * 16, universe=7, slots=bytes([255]),
                                     sequence=seq), ("127.0.0.1", port))
                seq += 1

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        rc, records, stderr = _stop_while_lit(["run", "--config", str(config), "--output",
                                               "mock"], tmp_path / "rec", signum)
    finally:
        done.set()
        sender.join(10)
    _assert_unwound_all_off(signum, rc, records, stderr)
