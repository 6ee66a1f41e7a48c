"""sACN end to end on loopback: the output's packets, and sender and receiver daemons
(`python -m pi run`) talking unicast over 127.0.0.1 on a free port; never multicast.

Processes are synchronised on sd_notify READY, on their JSONL records, their log lines and
their exit, with bounded polls. The assertions are about order and cause, never about how
fast: the receiver takes only states the sender had, in the sender's order and after it
had them (CLOCK_MONOTONIC, which all processes share); it goes off because the sender
terminated its stream, or because of the data-loss timeout, as its log says. The lags are
printed as figures. The receiver's timers themselves are tested on a fake clock in
tests/test_e131.py, so a loaded machine (training on both cores) cannot fail these tests."""
from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pi.net import e131
from pi.outputs.base import MockOutput
from training.corpus.synth import synth_song

import sacn  # noqa: E402,F401 - the extra is installed in CI: missing is a failure, not a skip

ROOT = Path(__file__).resolve().parents[1]
U = 7
HELD_S = 0.3   # sender states held this long are compared (a handful of 1/fps send periods)
PY = sys.executable
WAIT_S = 60.0  # bounds of the waits: generous, a busy machine is slow, not wrong


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- daemons ---------------------------------------------------------------------------------

def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return MockOutput.read(path) if text.endswith("\n") else \
        MockOutput.read(path)[:-1]  # the writer is between write and flush


def wait_for(what: str, cond, timeout: float, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)  # polling interval of a bounded wait, not synchronisation


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def readme_configs() -> list[str]:
    """The sender and receiver configs of the README's "Many Pis / xLights / FPP"."""
    text = (ROOT / "README.md").read_text().split("## Many Pis / xLights / FPP", 1)[1]
    return re.findall(r"```toml\n(.*?)```", text, re.S)[:2]


# What the README's configs become on one machine: unicast to 127.0.0.1 on a free port, no
# multicast; the relays are replaced on the command line (--output, --record).
def readme_sender(tmp: Path, port: int) -> Path:
    text = re.sub(r'destination = "multicast".*', f'destination = "127.0.0.1"\nport = {port}',
                  readme_configs()[0])
    return write_config(tmp / "tx.toml", text)


SSR = '[outputs.rpigpio]\nrelay = "ssr"\n'  # dimmers: a faster switch limit than relays'


def rx_config(tmp: Path, port: int, *, channels: int = 8, tables: str = "") -> Path:
    text = readme_configs()[1]
    if channels != 8:  # the file must be valid alone: 8 pins are no good for 16 channels
        text = text.replace("channels = 8", f"channels = {channels}").replace(
            'enabled = ["rpigpio"]', 'enabled = ["mock"]')
    text = re.sub(r"addresses = .*", f"addresses = {list(range(1, channels + 1))}", text)
    return write_config(tmp / "rx.toml", text + f'interface = "127.0.0.1"\nmulticast = false\n'
                                                f'port = {port}\n' + tables)


def test_readme_configs_are_valid_and_the_tests_use_them(tmp_path):
    from pi.config.load import load_config

    sender, receiver = readme_configs()
    for text in (sender, receiver):
        load_config(write_config(tmp_path / "c.toml", text))
    tx = load_config(readme_sender(tmp_path, 5569)).outputs.sacn
    assert (tx.universe, tx.destination, tx.port) == (U, "127.0.0.1", 5569)
    rx = load_config(rx_config(tmp_path, 5569))
    assert rx.audio.source == "sacn" and rx.sacn_source.universe == U
    assert (rx.sacn_source.interface, rx.sacn_source.multicast) == ("127.0.0.1", False)


def tx_config(tmp: Path, name: str, port: int, song: Path, *, priority: int = 100,
              extra: str = "", channels: int = 8, dimmer: bool = False) -> Path:
    return write_config(tmp / f"{name}.toml", f"""
[audio]
source = "file"
repeat = false
playlist = ["{song}"]
[model]
mapper = "bands"
[show]
channels = {channels}
{extra}
[outputs]
enabled = ["sacn", "mock"]
[outputs.mock]
record = "{tmp / (name + '.jsonl')}"
[outputs.sacn]
universe = {U}
destination = "127.0.0.1"
port = {port}
priority = {priority}
source_name = "{name}"
dimmer = {str(dimmer).lower()}
""")


RX_ARGS = ("--output", "mock", "--record")


class Daemon:
    """`python -m pi run --config ...` with stderr in a file and READY awaited."""

    def __init__(self, tmp: Path, name: str, config: Path, *args: str, ready: bool = True):
        self.err = tmp / f"{name}.err"
        self.record = tmp / f"{name}.jsonl"
        env = dict(os.environ)
        sock = None
        if ready:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(tmp / f"{name}.notify"))
            sock.settimeout(0.5)
            env["NOTIFY_SOCKET"] = str(tmp / f"{name}.notify")
        with self.err.open("w") as err:
            self.proc = subprocess.Popen([PY, "-m", "pi", "run", "--config", str(config),
                                          *args], cwd=ROOT, env=env,
                                         stdout=subprocess.DEVNULL, stderr=err)
        if sock is not None:
            with sock:
                wait_for(f"{name} READY", lambda: self._ready(sock), 30, self.proc)

    @staticmethod
    def _ready(sock) -> bool:
        try:
            return sock.recv(4096) == b"READY=1"
        except TimeoutError:
            return False

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    @property
    def stderr(self) -> str:
        return self.err.read_text()


@pytest.fixture
def daemons():
    started = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=10)


def song(tmp: Path, seconds: float, seed: int = 11) -> Path:
    path = tmp / f"song_{seconds:g}_{seed}.wav"
    y, _ = synth_song(seconds=seconds, seed=seed, ending="hard_stop")
    sf.write(path, y, 44100)
    return path


def last_set(recs: list[dict]) -> float:
    """When the sender's show last set its lamps: closing (blackout, terminate) follows."""
    return [r["mono"] for r in recs if r["event"] == "set"][-1]


def changes(recs: list[dict], key: str = "states") -> list[dict]:
    """When the states (or levels; an all-off has none: zeros) changed, and to what."""
    out, last = [], None
    for r in recs:
        if r["event"] in ("set", "all_off"):
            value = r.get(key, [0.0] * len(r["states"]))
            if value != last:
                out.append({"mono": r["mono"], "value": value})
                last = value
    return out


def value_at(ch: list[dict], t: float):
    before = [c["value"] for c in ch if c["mono"] <= t]
    return before[-1] if before else None


def assert_follows(tx: list[dict], rx: list[dict], *, until: float | None = None,
                   same=lambda a, b: a == b, held_s: float = HELD_S) -> list[float]:
    """While the sender ran, each of the receiver's channels only took values that channel
    had at the sender, after the sender had them and in the sender's order (a receiver may
    skip a change, or hold one back for its hold time or switch limit; it never invents one
    or goes back); and it took most of the states the sender held for HELD_S, whole. Returns
    the lags behind the sender of the receiver's whole-state changes (figures only)."""
    end = until or float("inf")
    n = len(tx[0]["value"])
    last = [0] * n  # per channel: the sender state its value last came from
    lags, whole = [], set()
    for r in rx:
        if not tx[0]["mono"] <= r["mono"] <= end:
            continue
        now = max(i for i, c in enumerate(tx) if c["mono"] <= r["mono"])
        for ch in range(n):
            i = next((i for i in range(now, last[ch] - 1, -1)
                      if same(tx[i]["value"][ch], r["value"][ch])), None)
            assert i is not None, (
                f"at +{r['mono'] - tx[0]['mono']:.3f} s channel {ch + 1} took "
                f"{r['value'][ch]}, which the sender's channel did not have since its state "
                f"#{last[ch]}")
            last[ch] = i
        i = next((i for i in range(now, -1, -1) if all(
            same(a, b) for a, b in zip(tx[i]["value"], r["value"]))), None)
        if i is not None:
            whole.add(i)
            lags.append(r["mono"] - tx[i]["mono"])
    held = [i for i, c in enumerate(tx)
            if (tx[i + 1]["mono"] if i + 1 < len(tx) else end) - c["mono"] >= held_s]
    taken = sum(i in whole for i in held)
    print(f"\nthe receiver took {taken} of the {len(held)} states the sender held {held_s} s")
    assert taken >= 5 and taken >= len(held) // 2, \
        f"the receiver took {taken} of the {len(held)} states the sender held {held_s} s"
    return lags


def lag_figures(lags: list[float]) -> str:
    return (f"median {statistics.median(lags) * 1e3:.1f} ms, max {max(lags) * 1e3:.1f} ms "
            f"over {len(lags)} changes")


def run_readme_sender(tmp: Path, port: int, seconds: float) -> "Daemon":
    return Daemon(tmp, "tx", readme_sender(tmp, port), "--source", "file", "--realtime",
                  "--mapper", "bands", "--output", "sacn", "--record", str(tmp / "tx.jsonl"),
                  str(song(tmp, seconds)), ready=False)


def start_rx(tmp: Path, port: int, **kw) -> "Daemon":
    return Daemon(tmp, "rx", rx_config(tmp, port, **kw), *RX_ARGS, str(tmp / "rx.jsonl"))


def test_receiver_follows_the_sender_and_goes_off_when_it_stops(tmp_path, daemons):
    port = free_port()
    rx = start_rx(tmp_path, port)
    daemons.append(rx)
    good = e131.build(cid=bytes(16), universe=U, slots=bytes([255]))
    junk = [good[:60], good[:18] + b"\0\0\0\x05" + good[22:],
            e131.build(cid=bytes(16), universe=U + 1), b"\xff garbage " * 9]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for raw in junk:
            s.sendto(raw, ("127.0.0.1", port))
    tx = run_readme_sender(tmp_path, port, 5.0)
    daemons.append(tx)
    # The README's sender repeats its playlist, as the service does: stop it as systemd would.
    wait_for("the song played", lambda: any((r["t"] or 0) > 4.5 for r in records(tx.record)),
             WAIT_S, tx.proc)
    assert tx.stop() == 0, tx.stderr
    tx_recs = MockOutput.read(tmp_path / "tx.jsonl")
    closed = last_set(tx_recs)
    off = wait_for("receiver all-off after the sender stopped",
                   lambda: [r for r in records(rx.record)
                            if r["event"] == "all_off" and r["mono"] > closed], WAIT_S, rx.proc)
    assert rx.stop() == 0
    # Off because the stream was terminated, not after the 2.5 s data-loss timeout.
    assert "stopped its stream (stream terminated)" in rx.stderr
    assert "no packet from" not in rx.stderr
    print(f"\nall-off {(off[0]['mono'] - closed) * 1e3:.0f} ms after the sender's last state")
    # Malformed and foreign packets: counted, logged, never fatal.
    assert "sACN packets ignored in total: 1 truncated, 1 bad_vector, 1 other_universe, " \
           "1 not_e131" in rx.stderr
    lags = assert_follows(changes(tx_recs), changes(records(rx.record)), until=closed)
    print(f"sender -> receiver lag over loopback: {lag_figures(lags)}")


def test_receiver_is_all_off_after_the_timeout_when_the_sender_is_killed(tmp_path, daemons):
    port = free_port()
    rx = start_rx(tmp_path, port)
    daemons.append(rx)
    tx = run_readme_sender(tmp_path, port, 20.0)
    daemons.append(tx)
    wait_for("lamps lit on the receiver", lambda: sum(
        r["event"] == "set" and any(r["states"]) for r in records(rx.record)) >= 3, WAIT_S,
        rx.proc)
    tx.stop(signal.SIGKILL)  # no blackout, no stream-terminated: only the timeout helps
    killed = time.monotonic()
    off = wait_for("receiver all-off", lambda: [r for r in records(rx.record)
                                                if r["event"] == "all_off"
                                                and r["mono"] > killed], WAIT_S, rx.proc)
    assert rx.stop() == 0
    after_kill = off[0]["mono"] - killed
    # The cause: the data-loss timeout (the receiver measures the silence itself; its
    # timer's exactness is tested on a fake clock in tests/test_e131.py).
    silent = float(re.search(r"no packet from 'audio-pi' for (\d+\.\d+) s",
                             rx.stderr).group(1))
    print(f"\nall-off {after_kill:.3f} s after SIGKILL, {silent:.2f} s after the last packet")
    assert silent >= 2.5 and "stopped its stream" not in rx.stderr
    assert not any(any(r["states"] or ()) for r in records(rx.record)
                   if r["mono"] > off[0]["mono"])


def test_the_higher_priority_sender_wins(tmp_path, daemons):
    port = free_port()
    rx = start_rx(tmp_path, port)
    daemons.append(rx)
    everything = "always_on = [1, 2, 3, 4, 5, 6, 7, 8]"
    lo = Daemon(tmp_path, "lo", tx_config(tmp_path, "lo", port, song(tmp_path, 30.0, 5),
                                          priority=100, extra=everything),
                "--realtime", ready=False)
    daemons.append(lo)
    all_on = [True] * 8
    wait_for("the low-priority sender followed", lambda: any(
        r["states"] == all_on for r in records(rx.record)), WAIT_S, rx.proc)
    hi = subprocess.run([PY, "-m", "pi", "run", "--config",
                         str(tx_config(tmp_path, "hi", port, song(tmp_path, 5.0), priority=150)),
                         "--realtime"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert hi.returncode == 0, hi.stderr
    hi_recs = MockOutput.read(tmp_path / "hi.jsonl")
    closed = last_set(hi_recs)
    wait_for("hi's stream terminated", lambda: "'hi' stopped its stream" in rx.stderr, WAIT_S,
             rx.proc)
    wait_for("back to the low-priority sender", lambda: changes(records(rx.record))[-1]
             ["value"] == all_on, WAIT_S, rx.proc)
    rx_ch = changes(records(rx.record))
    lags = assert_follows(changes(hi_recs), rx_ch, until=closed)
    print(f"\nhigh-priority sender -> receiver lag: {lag_figures(lags)}")
    assert lo.stop() == 0  # SIGTERM: the low sender terminates its stream too
    wait_for("receiver off after the last sender", lambda: records(rx.record)[-1]["event"]
             == "all_off", WAIT_S, rx.proc)
    assert rx.stop() == 0
    assert "'lo' stopped its stream" in rx.stderr and "no packet from" not in rx.stderr


# --- 16 channels from the workshop to the relays ---------------------------------------------

@pytest.fixture(scope="module")
def model16(tmp_path_factory):
    """A 16-channel bundle from the real `make train` pipeline (--bottleneck 16), kept tiny."""
    tmp = tmp_path_factory.mktemp("m16")
    music = tmp / "music"
    music.mkdir()
    for i, ending in enumerate(("fade", "hard_stop", "quiet_tail")):
        y, _ = synth_song(seconds=15.0, seed=20 + i, ending=ending)
        sf.write(music / f"s{i}.wav", y, 44100)
    out = subprocess.run([PY, "-m", "training", "train", "--music-dir", str(music),
                          "--bottleneck", "16", "--epochs", "1", "--max-frames", "1000",
                          "--no-ablations", "--models-dir", str(tmp), "--cache-dir",
                          str(tmp / "cache"), "--name", "m16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "m16"


def test_sixteen_channel_model_drives_sixteen_dimmer_channels(tmp_path, daemons, model16):
    port = free_port()
    rx = start_rx(tmp_path, port, channels=16, tables=SSR)
    daemons.append(rx)
    cfg = tx_config(tmp_path, "tx", port, song(tmp_path, 6.0, 21), channels=16, dimmer=True,
                    extra=SSR)
    cfg.write_text(cfg.read_text().replace('mapper = "bands"', f'path = "{model16}"'))
    tx = subprocess.run([PY, "-m", "pi", "run", "--config", str(cfg), "--realtime"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert tx.returncode == 0, tx.stderr
    assert "show model:m16, 16 channels" in tx.stderr
    tx_recs = MockOutput.read(tmp_path / "tx.jsonl")
    closed = last_set(tx_recs)
    wait_for("receiver off", lambda: [r for r in records(rx.record)
                                      if r["event"] == "all_off" and r["mono"] > closed],
             WAIT_S, rx.proc)
    assert rx.stop() == 0
    levels = np.array([r["levels"] for r in tx_recs if r["event"] == "set"])
    assert levels.shape[1] == 16
    assert ((levels > 0) & (levels < 1)).any(), "dimmer levels should be graded"
    assert (np.diff(levels[:, 8:], axis=0) != 0).any(), "channels 9..16 never changed"

    def same_dmx(x, y):  # the records round levels to 4 decimals: allow one DMX step
        return abs(x - y) * 255 <= 1.01

    assert_follows(changes(tx_recs, "levels"), changes(records(rx.record), "levels"),
                   until=closed, same=same_dmx, held_s=0.1)  # levels change often
