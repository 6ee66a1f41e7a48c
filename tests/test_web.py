"""The web panel's rules, on the Starlette app in-process (TestClient): who gets in, what a
cross-site page can do, how passwords are kept, and what the library and config routes accept.
The live panel in Chromium is tests/test_web_browser.py.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from pi.config.load import Config, load_config
from pi.web import auth
from pi.web.app import bind_address, make_app
from pi.web.library import LibraryError, sanitise_name
from pi.web.security import COOKIE

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "http://testserver"
PASSWORD = "correct horse battery"
API = [("GET", "/api/status"), ("GET", "/api/session"), ("GET", "/api/events"),
       ("GET", "/api/log"), ("GET", "/api/songs"), ("GET", "/api/config"),
       ("GET", "/api/schedule"), ("POST", "/api/control/start"),
       ("POST", "/api/control/blackout"), ("POST", "/api/override"),
       ("POST", "/api/songs"), ("PUT", "/api/songs/order"), ("DELETE", "/api/songs/a.wav"),
       ("PUT", "/api/config"), ("PUT", "/api/schedule")]


@pytest.fixture
def setup(tmp_path):
    """(config file path, music folder, password file) with a password set."""
    music = tmp_path / "music"
    music.mkdir()
    pw = tmp_path / "web-password"
    auth.write_password_file(pw, PASSWORD)
    cfg = tmp_path / "config.toml"
    cfg.write_text((ROOT / "systemd/config.toml").read_text()
                   .replace('playlist = ["/var/lib/lightshow/music"]', f'playlist = ["{music}"]')
                   .replace('password_file = "/etc/lightshow/web-password"',
                            f'password_file = "{pw}"')
                   .replace('socket = ""', f'socket = "{tmp_path / "none.sock"}"'))
    return cfg, music, pw


@pytest.fixture
def client(setup):
    cfg, _, _ = setup
    with TestClient(make_app(load_config(cfg), cfg, cache=cfg.parent / "cache")) as c:
        yield c


def login(c: TestClient, password: str = PASSWORD, origin: str | None = ORIGIN):
    headers = {"Origin": origin} if origin else {}
    return c.post("/login", data={"password": password}, headers=headers,
                  follow_redirects=False)


def logged_in(c: TestClient) -> dict:
    """Log in; the headers a same-origin page sends on a state-changing request."""
    assert login(c).status_code == 303
    return {"Origin": ORIGIN, "X-CSRF-Token": c.get("/api/session").json()["csrf"]}


@pytest.mark.parametrize("method,path", API)
def test_every_api_route_needs_a_session(client, method, path):
    r = client.request(method, path, headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.json() == {"error": "log in first"}


def test_pages_redirect_to_the_login_and_static_files_are_public(client):
    for page in ("/", "/songs/a.wav/preview"):
        r = client.get(page, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/login").status_code == 200
    assert client.get("/static/panel.css").status_code == 200
    assert "drawYard" in client.get("/static/yard.js").text


def test_login_gives_an_httponly_strict_cookie_and_wrong_passwords_nothing(client):
    r = login(client, "not the password")
    assert r.status_code == 401 and "Wrong password" in r.text
    assert "set-cookie" not in r.headers and COOKIE not in client.cookies
    assert client.get("/api/status").status_code == 401
    r = login(client)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower() and "Path=/" in cookie
    assert client.get("/api/status").status_code == 200
    assert client.get("/").status_code == 200


def test_login_from_another_origin_is_refused_even_with_the_password(client):
    r = login(client, origin="http://evil.example")
    assert r.status_code == 403 and COOKIE not in client.cookies
    assert client.get("/api/status").status_code == 401


def test_a_huge_login_body_is_refused_unread(client):
    r = client.post("/login", content=b"password=" + b"x" * 100_000,
                    headers={"Origin": ORIGIN,
                             "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and COOKIE not in client.cookies


def test_logins_are_rate_limited_per_address(client):
    for _ in range(auth.LOGIN_ATTEMPTS):
        assert login(client, "guess").status_code == 401
    r = login(client)  # the right password, too late
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert COOKIE not in client.cookies


def test_limiter_window_and_addresses():
    now = [0.0]
    lim = auth.LoginLimiter(attempts=2, window_s=60, clock=lambda: now[0])
    assert lim.allow("10.0.0.2") == 0 and lim.allow("10.0.0.2") == 0
    assert lim.allow("10.0.0.2") == pytest.approx(60)
    assert lim.allow("10.0.0.3") == 0  # another address is not held back
    now[0] = 60.5
    assert lim.allow("10.0.0.2") == 0


def test_state_changes_need_same_origin_and_the_csrf_token(client):
    headers = logged_in(client)
    # The daemon is not running: a request that passes the gate gets 503 from the route.
    assert client.post("/api/control/start", headers=headers).status_code == 503
    no_token = {"Origin": ORIGIN}
    r = client.post("/api/control/start", headers=no_token)
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
    r = client.post("/api/control/start", headers={**headers, "X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = client.post("/api/control/start", headers={**headers, "Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    r = client.put("/api/config", json={"show.hold_ms": 200},
                   headers={"X-CSRF-Token": headers["X-CSRF-Token"],
                            "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403


def test_status_answers_without_a_daemon(client):
    logged_in(client)
    st = client.get("/api/status").json()
    assert st["state"] == "not running" and st["song"] is None
    assert st["lamps"] == [False] * 8


def test_logout_ends_the_session(client):
    logged_in(client)
    assert client.post("/logout", headers={"Origin": ORIGIN},
                       follow_redirects=False).status_code == 303
    assert client.get("/api/status").status_code == 401


def test_sessions_expire():
    now = [0.0]
    s = auth.Sessions(lifetime_s=10, clock=lambda: now[0])
    token, csrf = s.create()
    assert s.csrf(token) == csrf and s.csrf("other") is None and s.csrf(None) is None
    now[0] = 10.0
    assert s.csrf(token) is None


def test_responses_carry_a_strict_policy(client):
    r = client.get("/login")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    logged_in(client)
    assert client.get("/api/status").headers["cache-control"] == "no-store"


def test_set_password_stores_a_salted_scrypt_hash_only(tmp_path):
    pw = tmp_path / "etc" / "web-password"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[web]\npassword_file = "{pw}"\n')
    cmd = [sys.executable, "-m", "pi", "web", "set-password", "--config", str(cfg),
           "--password-stdin"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    text = pw.read_text()
    assert PASSWORD not in text and text.startswith("scrypt$16384$8$1$")
    assert stat.S_IMODE(pw.stat().st_mode) == 0o640
    assert auth.verify_password(PASSWORD, text) and not auth.verify_password("wrong", text)
    first = text
    subprocess.run(cmd, input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                   timeout=60, check=True)
    assert pw.read_text() != first  # a new salt each time
    short = subprocess.run(cmd, input="short\n", capture_output=True, text=True, env=env,
                           timeout=60)
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    assert auth.verify_password(PASSWORD, pw.read_text())  # unchanged


def test_without_a_password_only_loopback(tmp_path, caplog):
    none = Config.from_dict({"web": {"password_file": str(tmp_path / "none")}})
    assert bind_address(none, None) == ("127.0.0.1", 8080)
    assert "no panel password set" in caplog.text
    assert bind_address(none, "192.168.1.5:9000") == ("127.0.0.1", 9000)
    assert bind_address(none, "127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert bind_address(none, "[::1]:8081") == ("::1", 8081)
    auth.write_password_file(tmp_path / "pw", PASSWORD)
    set_ = Config.from_dict({"web": {"password_file": str(tmp_path / "pw")}})
    assert bind_address(set_, None) == ("0.0.0.0", 8080)


def test_no_password_no_login(tmp_path):
    cfg = Config.from_dict({"web": {"password_file": str(tmp_path / "none")}})
    with TestClient(make_app(cfg, None, cache=tmp_path)) as c:
        r = login(c, "anything at all")
        assert r.status_code == 401 and "set-password" in r.text


# --- the music folder ------------------------------------------------------------------------

def _wav(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(22050 * seconds)) / 22050
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 22050)
    return path


def test_sanitised_names():
    assert sanitise_name("../../etc/Jingle Bells.MP3") == "Jingle Bells.mp3"
    assert sanitise_name("C:\\music\\a<b>|c.wav") == "a_b__c.wav"
    assert sanitise_name("..hidden .flac") == "hidden.flac"
    assert sanitise_name("Stille Nacht – Grüße.ogg") == "Stille Nacht _ Grüße.ogg"
    assert len(sanitise_name("x" * 500 + ".wav")) == 120
    for bad in ("song.exe", "noext", ".wav", "////"):
        with pytest.raises(LibraryError):
            sanitise_name(bad)


def test_upload_checks_size_name_and_decoding(client, setup, tmp_path):
    _, music, _ = setup
    headers = logged_in(client)
    good = _wav(tmp_path / "good.wav")
    with good.open("rb") as f:
        r = client.post("/api/songs", files={"file": ("../My Song?.wav", f, "audio/wav")},
                        headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "My Song.wav" and (music / "My Song.wav").is_file()
    r = client.post("/api/songs", files={"file": ("bad.mp3", b"not audio" * 100, "audio/mpeg")},
                    headers=headers)
    assert r.status_code == 422 and "bad.mp3: not added" in r.json()["error"]
    with good.open("rb") as f:
        r = client.post("/api/songs", files={"file": ("My Song.wav", f)}, headers=headers)
    assert r.status_code == 409
    r = client.post("/api/songs", files={"file": ("x.exe", b"MZ")}, headers=headers)
    assert r.status_code == 400 and "expected a name ending in" in r.json()["error"]
    big = b"\0" * ((1 << 20) + 1)  # over a 1 MB limit
    client.app.state.panel.config = _with_upload_limit(client, 1)
    r = client.post("/api/songs", files={"file": ("big.wav", big)}, headers=headers)
    assert r.status_code == 413 and "at most 1 MB" in r.json()["error"]
    names = sorted(p.name for p in music.iterdir())
    assert names == ["My Song.wav"]  # nothing half-written or bad left behind


def _with_upload_limit(client, mb: int) -> Config:
    from dataclasses import replace

    cfg = client.app.state.panel.config
    return replace(cfg, web=replace(cfg.web, max_upload_mb=mb))


def test_list_reorder_delete(client, setup, tmp_path):
    _, music, _ = setup
    for name in ("a.wav", "b.wav", "c.wav"):
        _wav(music / name, 0.2)
    headers = logged_in(client)
    names = lambda: [s["name"] for s in client.get("/api/songs").json()["songs"]]  # noqa: E731
    assert names() == ["a.wav", "b.wav", "c.wav"]
    r = client.put("/api/songs/order", json=["c.wav", "a.wav"], headers=headers)
    assert r.status_code == 200 and names() == ["c.wav", "a.wav", "b.wav"]
    # The daemon plays the folder in that order too.
    from pi.audio.playlist import expand

    assert [p.name for p in expand([music])] == ["c.wav", "a.wav", "b.wav"]
    assert client.put("/api/songs/order", json=["../x.wav"], headers=headers).status_code == 404
    assert client.delete("/api/songs/..%2Fconfig.toml", headers=headers).status_code == 404
    assert client.delete("/api/songs/a.wav", headers=headers).status_code == 200
    assert names() == ["c.wav", "b.wav"] and not (music / "a.wav").exists()


# --- the config ------------------------------------------------------------------------------

def test_config_edits_go_through_the_checker_and_keep_comments(client, setup):
    cfg, _, _ = setup
    headers = logged_in(client)
    before = cfg.read_text()
    r = client.put("/api/config", json={"show.hold_ms": "10"}, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"].startswith("show.hold_ms: expected an integer from 50 to 10000")
    assert cfg.read_text() == before
    r = client.put("/api/config", json={"outputs.rpigpio.pins": [1]}, headers=headers)
    assert r.status_code == 422 and "not editable in the panel" in r.json()["error"]
    r = client.put("/api/config", json={"show.hold_ms": "250", "audio.shuffle": True,
                                        "show.latency_ms": "-40"}, headers=headers)
    assert r.status_code == 200, r.text
    after = load_config(cfg)
    assert (after.show.hold_ms, after.audio.shuffle, after.show.latency_ms) == (250, True, -40.0)
    text = cfg.read_text()
    assert "# Minimum time in milliseconds a relay stays on" in text  # comments kept
    assert len(text.splitlines()) == len(before.splitlines())
    assert not [p for p in cfg.parent.iterdir() if p.name.endswith(".tmp")]


def test_schedule_edit_shows_next_start_and_stop(client, setup):
    cfg, _, _ = setup
    headers = logged_in(client)
    assert client.get("/api/schedule").json()["next_start"] is None
    r = client.put("/api/schedule", json={
        "schedule.enabled": True, "schedule.days": ["fri", "sat"], "schedule.on": "17:30",
        "schedule.off": "01:00", "schedule.timezone": "Europe/London"}, headers=headers)
    assert r.status_code == 200, r.text
    d = r.json()
    assert "T17:30" in d["next_start"] and "T01:00" in d["next_stop"]
    assert load_config(cfg).schedule.days == ("fri", "sat")
    r = client.put("/api/schedule", json={"schedule.on": "dusk"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"].startswith("schedule.on: expected a time")
    r = client.put("/api/schedule", json={"show.hold_ms": 200}, headers=headers)
    assert r.status_code == 400


def test_the_panel_process_stays_lean():
    """No numpy, audio or GPIO library in the panel: decoding runs in child processes."""
    code = ("import sys, pi.cli.main, pi.web.app; "
            "print(sorted(m for m in ('numpy', 'soundfile', 'sounddevice', 'RPi',"
            " 'pi.outputs.base', 'pi.audio.decode') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_song_links_to_its_preview_page(client, setup):
    _, music, _ = setup
    _wav(music / "carol.wav", 3.0)
    logged_in(client)
    r = client.get("/songs/carol.wav/preview")
    assert r.status_code == 200, r.text
    assert "carol.wav" in r.text and "drawYard" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/songs/..%2Fconfig.toml/preview").status_code == 404


def test_hand_edits_are_read_again_and_a_broken_file_is_reported(client, setup):
    cfg, _, _ = setup
    logged_in(client)
    cfg.write_text(cfg.read_text().replace("hold_ms = 100", "hold_ms = 300"))
    assert client.get("/api/config").json()["values"]["show.hold_ms"] == 300
    cfg.write_text(cfg.read_text().replace("hold_ms = 300", "hold_ms = 3"))
    d = client.get("/api/config").json()
    assert d["error"].endswith("show.hold_ms: expected an integer from 50 to 10000 "
                               "(milliseconds; under 50 wears out relays), found integer 3")
    assert d["values"]["show.hold_ms"] == 300 and d["editable"] == {}


def test_an_unusual_file_layout_is_refused_not_mangled(tmp_path):
    from pi.config.values import ConfigError
    from pi.web.settings import edit_config

    cfg = tmp_path / "config.toml"
    cfg.write_text('show = { hold_ms = 100 }\n')  # an inline table: no [show] header to edit
    with pytest.raises(ConfigError, match="could not edit the file in place"):
        edit_config(cfg, {"show.hold_ms": 200})
    assert cfg.read_text() == 'show = { hold_ms = 100 }\n'
    cfg.write_text('# mine\n[show]\nhold_ms = 100  # slow relays\n\n[audio]\nshuffle = false\n')
    edit_config(cfg, {"show.hold_ms": 150, "schedule.on": "18:00", "schedule.days": "sat, sun"})
    assert cfg.read_text() == ('# mine\n[show]\nhold_ms = 150  # slow relays\n\n[audio]\n'
                               'shuffle = false\n\n[schedule]\non = "18:00"\n'
                               'days = ["sat", "sun"]\n')
