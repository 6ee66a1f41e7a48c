"""The harness of the sACN loopback tests (tests/test_sacn_receiver.py): sender and receiver
daemons (`python -m pi run`) talking unicast over 127.0.0.1 on a free port; never multicast.

Processes are synchronised on sd_notify READY, on their JSONL records, their log lines and
their exit, with bounded polls. The assertions are about order and cause, never about how
fast: the receiver takes only states the sender had, in the sender's order and after it
had them (CLOCK_MONOTONIC, which all processes share). The lags are printed as figures."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from training.corpus.synth import synth_song

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
    # One read, parsed here: reading the file again (MockOutput.read) could meet a line the
    # writer is half-way through. The piece after the last newline is that line, or "".
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


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
