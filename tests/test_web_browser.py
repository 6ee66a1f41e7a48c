"""The web panel in a real headless Chromium (Debian's chromium + chromium-driver, selenium),
against the real daemon (`python -m pi run`, file source in real time, mock output recording
to a file) and the real panel (`python -m pi web`), each in its own process, talking over the
control socket in a tmp folder.

Log in; watch the lamps change live and match what the mock output got; press next,
blackout and a channel override and see the mock output follow; upload a generated song and
a bad file; edit the schedule; take a screenshot at phone size. Waits are WebDriverWait or
bounded polls of a condition, never fixed sleeps. ``LIGHTSHOW_SCREENSHOTS=DIR`` keeps the
screenshot (the README's is systemd/web-panel.png).
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pi.cli.panel import wait_for_socket
from pi.config.load import load_config
from pi.outputs.base import MockOutput
from pi.web.auth import write_password_file
from tests.helpers import chromium, until
from training.corpus.synth import synth_song

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "silent night holy night"
WAIT_S = 15.0
RATE = 44100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(pred, what: str, timeout: float = WAIT_S):
    return until(pred, what, timeout, poll_s=0.05)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """The daemon and the panel running: (base URL, tmp folder, config path, record path)."""
    tmp = tmp_path_factory.mktemp("web")
    music = tmp / "music"
    music.mkdir()
    for i, name in enumerate(("a first song.wav", "b second song.wav")):
        y, _ = synth_song(seconds=20.0, seed=30 + i, ending="hard_stop")
        sf.write(music / name, y, RATE)
    write_password_file(tmp / "web-password", PASSWORD)
    port = _free_port()
    record, sock = tmp / "record.jsonl", tmp / "control.sock"
    config = tmp / "config.toml"
    config.write_text(f"""
[audio]
source = "file"
playlist = ["{music}"]
repeat = true
[model]
mapper = "bands"
[show]
hold_ms = 100
[outputs]
enabled = ["mock"]
[outputs.mock]
record = "{record}"
[control]
socket = "{sock}"
[schedule]
enabled = false
[web]
listen = "127.0.0.1:{port}"
password_file = "{tmp / 'web-password'}"
max_upload_mb = 5
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CACHE_DIRECTORY": str(tmp / "cache")}
    procs = []
    try:
        for cmd in (["run", "--config", str(config), "--realtime"],
                    ["web", "--config", str(config)]):
            procs.append(subprocess.Popen([sys.executable, "-m", "pi", *cmd], env=env,
                                          stdout=subprocess.DEVNULL,
                                          stderr=open(tmp / f"{cmd[0]}.log", "w")))
        assert wait_for_socket(str(sock), WAIT_S), (tmp / "run.log").read_text()
        base = f"http://127.0.0.1:{port}"

        def panel_up():
            try:
                return urllib.request.urlopen(base + "/login", timeout=2).status == 200
            except OSError:
                return False
        _until(panel_up, "the panel to answer")
        yield base, tmp, config, record
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(WAIT_S)


@pytest.fixture(scope="module")
def driver():
    with chromium(script_timeout_s=WAIT_S) as d:
        yield d


def _wait(d, cond, what: str):
    try:
        # A page that navigates (a form post) can swap an element between finding it and
        # reading it: that is "not yet", not a failure.
        return WebDriverWait(d, WAIT_S, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(cond)
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; page state "
                    f"{d.execute_script('return {...document.body.dataset}')}")


def _data(d, key: str) -> str:
    return d.execute_script(f"return document.body.dataset.{key} || ''")


def _sets(record: Path) -> list[list[bool]]:
    return [e["states"] for e in MockOutput.read(record) if e["event"] == "set"]


def _msg(d, el_id: str, seq_before: str, what: str) -> str:
    """Wait for the message element to change (its data-seq), return its text."""
    _wait(d, lambda d: _seq(d, el_id) != seq_before, what)
    return d.find_element(By.ID, el_id).get_attribute("textContent")


def _seq(d, el_id: str) -> str:
    return d.find_element(By.ID, el_id).get_attribute("data-seq") or ""


def test_the_panel_in_a_browser(rig, driver, tmp_path):
    base, tmp, config, record = rig
    d = driver
    # Log in.
    d.get(base + "/")
    _wait(d, lambda d: d.current_url.endswith("/login"), "the redirect to the login page")
    d.find_element(By.ID, "password").send_keys("wrong password")
    d.find_element(By.ID, "login").click()
    _wait(d, lambda d: "Wrong password" in d.find_element(By.TAG_NAME, "body").text,
          "the refusal")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.ID, "login").click()
    _wait(d, lambda d: _data(d, "ready") == "1", "the panel page")
    cookie = d.get_cookie("lightshow_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # Lamps live: the page shows new patterns as the show plays, each one the mock output got.
    _wait(d, lambda d: _data(d, "state") == "playing", "state playing")
    seen = d.execute_async_script("""
        const done = arguments[0], seen = new Set([document.body.dataset.lamps]);
        new MutationObserver((_, obs) => {
          seen.add(document.body.dataset.lamps);
          if (seen.size >= 6) { obs.disconnect(); done([...seen]); }
        }).observe(document.body, {attributes: true, attributeFilter: ["data-lamps"]});""")
    recorded = {"".join("1" if x else "0" for x in s) for s in _sets(record)}
    assert set(seen) - {"00000000"} <= recorded and len(seen) >= 6

    # Next song: the daemon moves on and the page says so.
    song = _wait(d, lambda d: _data(d, "song"), "a song name")
    d.find_element(By.CSS_SELECTOR, "button[data-action=next]").click()
    _wait(d, lambda d: _data(d, "song") not in ("", song), "the next song")

    # Blackout: the page and the mock output go dark and stay dark while the music plays.
    d.find_element(By.CSS_SELECTOR, "button[data-action=blackout]").click()
    _wait(d, lambda d: _data(d, "state") == "blackout" and _data(d, "lamps") == "0" * 8,
          "blackout on the page")
    n = len(MockOutput.read(record))
    _until(lambda: len(MockOutput.read(record)) > n + 20, "more frames in blackout")
    assert all(not any(e["states"]) for e in MockOutput.read(record)[n:] if e["states"])

    # Start again, then channel 3 forced on: every later frame has it on, and the page too.
    d.find_element(By.CSS_SELECTOR, "button[data-action=start]").click()
    _wait(d, lambda d: _data(d, "state") == "playing", "playing again")
    d.find_element(By.CSS_SELECTOR, '#channels li[data-channel="3"] button[data-mode=on]').click()
    _wait(d, lambda d: d.find_element(
        By.CSS_SELECTOR, '#channels li[data-channel="3"] button[data-mode=on]')
        .get_attribute("class") == "here", "the override shown")
    n = len(_sets(record))
    _until(lambda: len(_sets(record)) > n + 20, "frames with the override")
    assert all(s[2] for s in _sets(record)[n:])
    _wait(d, lambda d: _data(d, "lamps")[2] == "1", "channel 3 lit on the page")
    d.find_element(By.CSS_SELECTOR, '#channels li[data-channel="3"] button[data-mode=auto]').click()

    # Latency from a lamp change in the daemon to the browser (printed, never asserted).
    lat = d.execute_script("return window.lampLatencyMs")
    print(f"\nlamp change -> browser: median {statistics.median(lat):.1f} ms, "
          f"p95 {np.percentile(lat, 95):.1f} ms over {len(lat)} changes")

    # Upload a generated song and a bad file.
    d.get(base + "/#songs")
    _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#song-list li")) == 2, "the songs")
    t = np.arange(RATE * 2) / RATE
    good = tmp_path / "Jingle  Bells?.wav"
    sf.write(good, 0.3 * np.sin(2 * np.pi * 330 * t), RATE)
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"ID3 this is not an mp3 at all" * 50)
    for path, want in ((good, "Jingle Bells.wav added"), (bad, "broken.mp3: not added")):
        d.find_element(By.ID, "upload-file").send_keys(str(path))
        d.find_element(By.ID, "upload-button").click()  # says "uploading ..." at once
        _wait(d, lambda d: "uploading" not in d.find_element(By.ID, "songs-msg").text,
              f"the upload of {path.name}")
        assert want in d.find_element(By.ID, "songs-msg").text
    music = tmp / "music"
    assert sorted(p.name for p in music.iterdir()) == [
        "Jingle Bells.wav", "a first song.wav", "b second song.wav"]
    _wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#song-list li")) == 3,
          "the new song listed")
    link = d.find_element(By.CSS_SELECTOR, '#song-list li[data-name="Jingle Bells.wav"] a')
    assert link.get_attribute("href").endswith("/songs/Jingle%20Bells.wav/preview")

    # Edit the schedule: saved through the checker, next start and stop shown.
    d.get(base + "/#schedule")
    _wait(d, lambda d: d.find_element(By.ID, "sched-on").get_attribute("value"), "the form")
    d.find_element(By.ID, "sched-enabled").click()
    for key, value in (("on", "17:30"), ("off", "23:45")):
        box = d.find_element(By.ID, f"sched-{key}")
        box.clear()
        box.send_keys(value)
    seq = _seq(d, "sched-msg")
    d.find_element(By.ID, "sched-save").click()
    assert "saved" in _msg(d, "sched-msg", seq, "the schedule saved")
    assert "Next start:" in d.find_element(By.ID, "sched-next").text
    s = load_config(config).schedule
    assert (s.enabled, s.on, s.off) == (True, "17:30", "23:45")
    box = d.find_element(By.ID, "sched-off")
    box.clear()
    box.send_keys("17:30")
    seq = _seq(d, "sched-msg")
    d.find_element(By.ID, "sched-save").click()
    assert "expected a time other than schedule.on" in _msg(d, "sched-msg", seq, "the refusal")
    assert load_config(config).schedule.off == "23:45"

    # The yard at phone size.
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    try:
        d.get(base + "/#yard")
        _wait(d, lambda d: _data(d, "state") == "playing" and _data(d, "lamps").count("1") >= 3,
              "a lively moment")
        width = d.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px phone"
        out = Path(os.environ.get("LIGHTSHOW_SCREENSHOTS") or tmp_path) / "web-panel.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(str(out))
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    for log in ("run.log", "web.log"):
        assert "Traceback" not in (tmp / log).read_text(), (tmp / log).read_text()
