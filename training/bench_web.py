"""``make bench``'s web panel figures: the peak RSS of a `lightshow web` process after a
phone's worth of requests (login with its scrypt, the pages, status polls, a song upload, the
live lamp stream), and the lag from a lamp change in the daemon to an SSE client.

Both processes run as users run them (`python -m pi run` with the file source in real time on
a mock output, `python -m pi web`), over a control socket in a temporary folder.
"""
from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll(pred, timeout: float = 30.0) -> None:
    ev, until = threading.Event(), time.monotonic() + timeout
    while not pred():
        if time.monotonic() > until:
            raise RuntimeError("bench: the daemon or the panel did not come up")
        ev.wait(0.05)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def web_figures(song: Path, *, stream_s: float = 5.0) -> dict[str, float]:
    import soundfile as sf

    from pi.web.auth import write_password_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        music = tmp / "music"
        music.mkdir()
        os.symlink(song, music / song.name)
        write_password_file(tmp / "pw", PASSWORD)
        port, sock = _free_port(), tmp / "control.sock"
        cfg = tmp / "config.toml"
        cfg.write_text(f'[audio]\nsource = "file"\nplaylist = ["{music}"]\n'
                       f'[model]\nmapper = "bands"\n[outputs]\nenabled = ["mock"]\n'
                       f'[control]\nsocket = "{sock}"\n'
                       f'[web]\nlisten = "127.0.0.1:{port}"\npassword_file = "{tmp / "pw"}"\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CACHE_DIRECTORY": str(tmp / "cache")}
        run = subprocess.Popen([sys.executable, "-m", "pi", "run", "--config", str(cfg),
                                "--realtime"], env=env, stderr=subprocess.DEVNULL)
        web = subprocess.Popen([sys.executable, "-m", "pi", "web", "--config", str(cfg)],
                               env=env, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            _poll(sock.exists)
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

            def up() -> bool:
                try:
                    return opener.open(base + "/login", timeout=2).status == 200
                except OSError:
                    return False
            _poll(up)
            rss_idle = _vm_hwm_mb(web.pid)
            form = urllib.parse.urlencode({"password": PASSWORD}).encode()
            opener.open(urllib.request.Request(base + "/login", data=form,
                                               headers={"Origin": base}))
            csrf = json.load(opener.open(base + "/api/session"))["csrf"]
            for path in ("/", "/static/panel.js", "/static/yard.js", "/static/panel.css",
                         "/api/songs", "/api/config", "/api/schedule", "/api/log"):
                opener.open(base + path).read()
            for _ in range(20):
                opener.open(base + "/api/status").read()
            upload = tmp / "upload.wav"
            sf.write(upload, np.zeros(44100 * 5, np.float32), 44100)
            body, ctype = _multipart(upload)
            opener.open(urllib.request.Request(
                base + "/api/songs", data=body, headers={"Content-Type": ctype, "Origin": base,
                                                         "X-CSRF-Token": csrf}))
            lags = _sse_lags(port, "; ".join(f"{c.name}={c.value}" for c in jar), stream_s)
            rss = _vm_hwm_mb(web.pid)
        finally:
            for p in (web, run):
                p.terminate()
            for p in (web, run):
                p.wait(30)
    return {"web: peak RSS MB": rss, "web: RSS after start-up MB": rss_idle,
            "web: lamp change -> SSE client, median ms": float(np.median(lags)) * 1e3,
            "web: lamp change -> SSE client, p95 ms": float(np.percentile(lags, 95)) * 1e3}


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = "lightshowbench"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: audio/wav\r\n\r\n').encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def _sse_lags(port: int, cookie: str, seconds: float) -> list[float]:
    """Receive time minus the daemon's time of each lamp change (same machine clock)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/events", headers={"Cookie": cookie})
    resp = conn.getresponse()
    lags, event, until = [], None, time.time() + seconds
    try:
        while time.time() < until:
            line = resp.fp.readline().decode()
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event == "lamps":
                msg = json.loads(line[6:])
                if msg.get("seq") is not None:
                    lags.append(time.time() - msg["wall"])
    finally:
        conn.close()
    return lags[1:]  # the first is the state at subscription, not a change
