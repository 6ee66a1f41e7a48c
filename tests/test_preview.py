"""The HTML preview in a real headless Chromium (Debian's chromium + chromium-driver, selenium).

The page is written from a synthetic song with the bands show; the expected lamp states come
from an independent render of the same file. Seeks wait for the audio's ``seeked`` event and
then poll (bounded) for the lamps; nothing waits on a fixed sleep.

Not skipped when the browser is missing: it fails and says what to install. Set
``LIGHTSHOW_SCREENSHOTS=DIR`` to keep the screenshots.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from pi.offline.metrics import show_metrics
from pi.offline.preview import build_html, write_preview
from pi.offline.render import Timeline, render_song
from pi.show.pipeline import make_show
from tests.helpers import chromium
from training.corpus.synth import synth_song

ROOT = Path(__file__).resolve().parent.parent
SR = 44100
SONG_S = 8.0
POLL_TIMEOUT_S = 10.0
@pytest.fixture(scope="module")
def driver():
    with chromium("--autoplay-policy=no-user-gesture-required", script_timeout_s=POLL_TIMEOUT_S,
                  capabilities={"goog:loggingPrefs": {"performance": "ALL"}}) as d:
        yield d


@pytest.fixture(scope="module")
def preview(tmp_path_factory):
    """(page path, write_preview's info, an independent render's timeline)."""
    folder = tmp_path_factory.mktemp("preview")
    y, _ = synth_song(seconds=SONG_S, seed=5, ending="hard_stop")
    song = folder / "carol of the relays.wav"
    sf.write(song, y, SR)
    out = folder / "show.html"
    info = write_preview(song, out, mapper="bands")
    # The preview shows what playlist mode plays: the look-ahead show.
    timeline = render_song(song, make_show(mapper="bands"), lookahead=True)
    return out, info, timeline


def _screenshot_dir(tmp_path) -> Path:
    d = os.environ.get("LIGHTSHOW_SCREENSHOTS")
    return Path(d) if d else tmp_path


def _open(d, page: Path) -> None:
    d.get(page.as_uri())
    WebDriverWait(d, POLL_TIMEOUT_S).until(lambda d: d.execute_script(
        "return document.body.dataset.ready === '1' && "
        "document.getElementById('audio').readyState >= 1"))


def _lamps(d) -> list[str]:
    return d.execute_script("return [...document.querySelectorAll('g.lamp')]"
                            ".map(g => g.getAttribute('class'))")


def _classes(row: np.ndarray) -> list[str]:
    return ["lamp on" if on else "lamp off" for on in row]


def _expected(timeline: Timeline, t: float) -> tuple[int, list[str]]:
    """The row with the largest time_s <= t, all off (-1) before the first row."""
    i = int(np.searchsorted(timeline.times_s, t, side="right")) - 1
    row = timeline.states[i] if i >= 0 else np.zeros(timeline.states.shape[1], bool)
    return i, _classes(row)


def _seek(d, t: float) -> float:
    """Set the audio's currentTime, wait for its 'seeked' event; the time it reports."""
    return d.execute_async_script("""
        const [t, done] = arguments, a = document.getElementById('audio');
        a.addEventListener('seeked', () => done(a.currentTime), {once: true});
        a.currentTime = t;""", t)


def _wait_lamps(d, want: list[str], what: str) -> None:
    try:
        WebDriverWait(d, POLL_TIMEOUT_S, poll_frequency=0.02).until(lambda d: _lamps(d) == want)
    except TimeoutException:
        pytest.fail(f"{what}: lamps {_lamps(d)}, expected {want}")


def _seek_times(timeline: Timeline) -> list[float]:
    """Mid-frame times with pairwise different patterns (a stale state cannot pass), in
    shuffled order so that some seeks go backwards, then an exact row boundary and the
    instant before it, then a time before the first row."""
    picked, seen = [], set()
    for t in np.arange(0.3, SONG_S - 0.3, 0.29):
        i, want = _expected(timeline, t)
        if i >= 0 and tuple(want) not in seen:
            seen.add(tuple(want))
            picked.append(float(t))
    assert len(picked) >= 5, "the synthetic song gives too few distinct lamp patterns"
    picked = [picked[k] for k in np.random.default_rng(1).permutation(len(picked))[:8]]
    s = timeline.states
    k = next(k for k in range(len(s) // 2, len(s)) if (s[k] != s[k - 1]).any())
    boundary = float(timeline.times_s[k])
    return picked + [boundary, float(np.nextafter(boundary, 0.0)), 0.01]


def test_preview_file_is_self_contained_and_small(preview):
    page, info, timeline = preview
    text = page.read_text().replace("http://www.w3.org/2000/svg", "")  # a name, not a URL
    assert info["bytes"] == page.stat().st_size
    # Ogg Vorbis mono, about 80 kbit/s, plus the timeline: a 4-minute song is a few MB.
    assert info["bytes"] < 25_000 * SONG_S + 50_000, info["bytes"]
    assert 'src="data:audio/ogg;base64,' in text
    assert "default-src 'none'" in text
    for banned in ("http://", "https://", "//cdn", "@import", "url(http"):
        assert banned not in text, banned
    assert info["model"] == "bands" and info["n_frames"] == len(timeline.times_s)
    assert info["n_channels"] == 8


def test_page_header_lamps_and_audio_alignment(driver, preview, tmp_path):
    page, info, timeline = preview
    _open(driver, page)
    assert driver.find_element("id", "song").text == "carol of the relays.wav"
    assert driver.find_element("id", "model").text == "bands"
    shown = {li.get_attribute("data-metric"): li.text
             for li in driver.find_elements("css selector", "#metrics li")}
    assert set(shown) == {"fluxCorr", "dead", "corr_max", "toggles_per_s", "min_run_ms",
                          "entropy_bits", "tail_off"}
    assert abs(float(shown["toggles_per_s"].split()[-1])
               - info["metrics"]["toggles_per_s"]) <= 0.0051  # JS rounds ties up
    assert shown["dead"].endswith(f"{info['metrics']['dead']}/8")
    # Before anything plays, t = 0 is before the first row: all lamps off.
    assert _lamps(driver) == ["lamp off"] * 8
    assert [int(c) for c in driver.execute_script(
        "return [...document.querySelectorAll('g.lamp')].map(g => g.dataset.channel)")] \
        == list(range(1, 9))
    # The embedded audio decodes in Chromium with no offset against the song the timeline
    # was rendered from (an encoder delay would put every lamp late).
    decoded = driver.execute_async_script("""
        const done = arguments[0], src = document.getElementById('audio').src;
        const s = atob(src.slice(src.indexOf(',') + 1)), b = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
        new OfflineAudioContext(1, 44100, 44100).decodeAudioData(b.buffer).then(
            buf => done({n: buf.length, x: Array.from(buf.getChannelData(0).slice(0, 44100))}),
            e => done({error: String(e)}));""")
    assert "error" not in decoded, decoded
    assert abs(decoded["n"] - SONG_S * SR) <= 1
    x = np.asarray(decoded["x"])
    y, _ = sf.read(page.parent / "carol of the relays.wav", frames=SR)
    lags = range(-200, 201)
    corr = [np.dot(x[max(0, l):SR + min(0, l)], y[max(0, -l):SR - max(0, l)]) for l in lags]
    assert lags[int(np.argmax(corr))] == 0
    assert np.corrcoef(x, y)[0, 1] > 0.99


def test_seek_jumps_to_the_timeline_states(driver, preview, tmp_path):
    page, _, timeline = preview
    _open(driver, page)
    for t in _seek_times(timeline):
        got_t = _seek(driver, t)
        assert abs(got_t - t) < 1e-6, (t, got_t)
        i, want = _expected(timeline, got_t)
        _wait_lamps(driver, want, f"after a seek to {got_t!r} s (row {i})")
        assert int(driver.execute_script("return document.body.dataset.frame")) == i
    # A moment with several lamps on, for the eye.
    busiest = int(np.argmax(timeline.states.sum(axis=1) * (timeline.times_s < SONG_S - 1)))
    t = float(timeline.times_s[busiest]) + 1e-3
    _wait_lamps(driver, _expected(timeline, _seek(driver, t))[1], f"seek to {t} s")
    # An on bulb is lit in its channel's colour; an off one is dark.
    fills = driver.execute_script("""return [...document.querySelectorAll('g.lamp')].map(g =>
        [g.classList.contains('on'), getComputedStyle(g.querySelector('.bulb, .pane, .star-shape')).fill,
         g.style.getPropertyValue('--c')])""")
    for on, fill, color in fills:
        rgb = tuple(int(color[k:k + 2], 16) for k in (1, 3, 5))
        assert (fill == f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})") == on, (on, fill, color)
    assert sum(on for on, _, _ in fills) >= 3
    driver.save_screenshot(str(_screenshot_dir(tmp_path) / "preview-busy.png"))


def test_play_advances_and_lamps_follow(driver, preview, tmp_path):
    page, _, timeline = preview
    _open(driver, page)
    # Start where the next 2 s hold the most distinct lamp patterns.
    def variety(t0):
        rows = timeline.states[(timeline.times_s >= t0) & (timeline.times_s < t0 + 2.0)]
        return len({r.tobytes() for r in rows})
    start = _seek(driver, max(np.arange(0.3, SONG_S - 2.5, 0.25), key=variety))
    assert driver.execute_async_script("""const done = arguments[0];
        document.getElementById('audio').play().then(() => done('playing'), e => done(String(e)));
        """) == "playing"
    snaps = []

    def advanced(d):
        snaps.append(d.execute_script("""const a = document.getElementById('audio');
            return [a.currentTime, Number(document.body.dataset.t),
                    Number(document.body.dataset.frame),
                    [...document.querySelectorAll('g.lamp')].map(g => g.getAttribute('class'))];
            """))
        return snaps[-1][0] >= start + 2.0

    try:
        WebDriverWait(driver, 15, poll_frequency=0.05).until(advanced)
    except TimeoutException:
        pytest.fail(f"currentTime stuck while playing: {[s[0] for s in snaps[-5:]]}")
    driver.save_screenshot(str(_screenshot_dir(tmp_path) / "preview-playing.png"))
    paused_at = driver.execute_async_script("""const done = arguments[0],
        a = document.getElementById('audio');
        a.addEventListener('pause', () => done(a.currentTime), {once: true}); a.pause();""")
    _wait_lamps(driver, _expected(timeline, paused_at)[1], f"paused at {paused_at} s")
    for now, t_page, frame, lamps in snaps:
        i, want = _expected(timeline, t_page)
        assert frame == i and lamps == want, (t_page, frame, i, lamps, want)
        assert abs(now - t_page) < 0.5, "the lamps lag the audio"
    assert len({tuple(s[3]) for s in snaps}) >= 3, "the lamps did not change while playing"


def test_page_makes_no_network_request(driver, preview):
    page, _, _ = preview
    driver.get("about:blank")
    driver.get_log("performance")  # drain what the browser did before the page
    _open(driver, page)
    driver.execute_async_script("""const done = arguments[0];
        document.getElementById('audio').play().then(() => done(), () => done());""")
    driver.execute_script("document.getElementById('audio').pause()")
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    assert page.as_uri() in urls, "the performance log saw no request at all"
    network = [u for u in urls if u.split(":", 1)[0] not in ("file", "data", "blob")]
    assert not network, network
    assert driver.execute_script("return window.cspViolations") == []
    # A request the page tried anyway would be refused by its Content-Security-Policy.
    blocked = driver.execute_async_script("""const done = arguments[0];
        fetch('http://127.0.0.1:9/x').then(() => done('fetched'), e => done('refused'));""")
    assert blocked == "refused"
    violations = driver.execute_script("return window.cspViolations")
    assert violations and all("127.0.0.1:9" in v for v in violations), violations


def test_more_channels_irregular_times_and_a_hostile_name(driver, tmp_path):
    """16 channels (two bitmask bytes), float64 times, a name that tries to end the script."""
    rng = np.random.default_rng(3)
    n, n_ch = 300, 16
    times = np.cumsum(rng.uniform(0.005, 0.02, n)) + 0.05
    states = rng.random((n, n_ch)) < 0.5
    tl = Timeline(times, states, rng.normal(size=(n, n_ch)).astype(np.float32))
    y = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(SR * (times[-1] + 0.5))) / SR)
         ).astype(np.float32)
    name = "</script><script>window.pwned=1</script>.wav"
    html, _ = build_html(song=name, model="model:test", timeline=tl, audio=y, sample_rate=SR,
                         metrics=show_metrics(y, times_s=times, states=states))
    page = tmp_path / "sixteen.html"
    page.write_text(html)
    _open(driver, page)
    assert driver.execute_script("return window.pwned") is None
    assert driver.find_element("id", "song").text == name
    assert len(_lamps(driver)) == 16
    for k in (7, 150, 151, 299):
        t = float(times[k])
        _wait_lamps(driver, _expected(tl, _seek(driver, t))[1], f"row {k}")
        _wait_lamps(driver, _expected(tl, _seek(driver, (t + times[k - 1]) / 2))[1],
                    f"between rows {k - 1} and {k}")
    driver.save_screenshot(str(_screenshot_dir(tmp_path) / "preview-16.png"))


def test_cli_writes_a_preview_and_reports_errors(preview, tmp_path):
    page, _, _ = preview
    song = page.parent / "carol of the relays.wav"
    out = tmp_path / "cli.html"
    run = subprocess.run([sys.executable, "-m", "pi.offline.preview", str(song), "--mapper",
                          "bands", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert out.is_file() and "file://" in run.stdout and "fluxCorr" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "pi.offline.preview", str(tmp_path / "none.wav"),
                          "--out", str(tmp_path / "x.html")], capture_output=True, text=True,
                         cwd=ROOT)
    assert bad.returncode == 2 and "none.wav" in bad.stderr
    assert not (tmp_path / "x.html").exists()
