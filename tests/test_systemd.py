"""sd_notify over real sockets, SIGTERM -> SystemExit, the unit's hardening, the install scripts."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from pi.daemon import systemd
from pi.outputs.base import MockOutput

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "lightshow.service"
WEB_UNIT = ROOT / "systemd" / "lightshow-web.service"
MAX_EXPOSURE = 3.0


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_messages_reach_the_socket(notify_socket):
    assert systemd.ready()
    assert systemd.status("playing  song.flac\nblock 3")
    assert systemd.watchdog_ping()
    assert systemd.stopping()
    got = [notify_socket.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1", "STATUS=playing song.flac block 3", "WATCHDOG=1", "STOPPING=1"]


def test_notify_abstract_socket(monkeypatch):
    name = f"lightshow-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_notify_without_systemd_is_a_quiet_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert systemd.ready() is False  # an error is swallowed: status must never stop a show


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    assert systemd.watchdog_interval_s() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval_s() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval_s() is None


def test_sigterm_raises_system_exit():
    old = signal.getsignal(signal.SIGTERM)
    try:
        systemd.install_sigterm_handler()
        with pytest.raises(SystemExit) as exc:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # a syscall, so the handler runs before we leave
        assert exc.value.code == 0
    finally:
        signal.signal(signal.SIGTERM, old)


def test_sigterm_in_a_real_process_switches_relays_off(tmp_path, notify_socket):
    """What `systemctl stop` does: the service reports READY, gets SIGTERM, its finally runs,
    lamps go off, exit code 0. Synchronised on the notify socket, no sleeps."""
    record = tmp_path / "rec.jsonl"
    script = textwrap.dedent(f"""
        import signal
        from pi.daemon import systemd
        from pi.outputs.base import MockOutput
        systemd.install_sigterm_handler()
        out = MockOutput(8, {str(record)!r})
        try:
            out.open()
            out.set([True] * 8, t=1.0)
            systemd.ready()
            signal.pause()
        finally:
            out.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                            env={**os.environ, "NOTIFY_SOCKET": notify_socket.getsockname()})
    try:
        assert notify_socket.recv(4096) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    events = MockOutput.read(record)
    assert [e["event"] for e in events] == ["open", "all_off", "set", "all_off", "close"]
    assert events[-2]["states"] == [False] * 8


# --- the unit file ---------------------------------------------------------------------------

def _unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_file_essentials():
    s = _unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["10"] and s["Restart"] == ["on-failure"]
    assert s["WatchdogSignal"] == ["SIGTERM"]  # SIGABRT would skip the all-off in `finally`
    assert s["ExecStart"] == ["/opt/lightshow/.venv/bin/lightshow run "
                              "--config /etc/lightshow/config.toml"]
    assert s["User"] == ["lightshow"] and set(s["SupplementaryGroups"][0].split()) == {
        "gpio", "audio"}
    allowed = " ".join(s["DeviceAllow"])
    for device in ("gpiochip", "gpiomem", "char-alsa"):
        assert device in allowed
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(s["RestrictAddressFamilies"][0].split())
    # Settings that would silently break the appliance (see the unit's header for why).
    assert s.get("MemoryDenyWriteExecute", ["no"]) == ["no"]
    assert s.get("ProcSubset", ["all"]) == ["all"]
    assert s.get("PrivateDevices", ["no"]) == ["no"]
    assert "Overall exposure level" in UNIT.read_text()


@pytest.mark.parametrize("unit", [UNIT, WEB_UNIT], ids=lambda p: p.name)
def test_unit_exposure_is_at_most_3(unit):
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    proc = subprocess.run([exe, "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze too old for --offline (needs systemd >= 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


def test_web_unit_essentials():
    s = _unit_settings(WEB_UNIT)
    assert s["ExecStart"] == ["/opt/lightshow/.venv/bin/lightshow web "
                              "--config /etc/lightshow/config.toml"]
    assert s["User"] == ["lightshow"] and s["Group"] == ["lightshow"]  # the socket's group
    assert "SupplementaryGroups" not in s  # no gpio, no audio: the panel drives nothing
    assert s["PrivateDevices"] == ["yes"] and s["MemoryDenyWriteExecute"] == ["no"]
    assert s["ReadWritePaths"] == ["/etc/lightshow"] and s["StateDirectory"] == ["lightshow"]
    assert s["CapabilityBoundingSet"] == [""] and s["NoNewPrivileges"] == ["yes"]
    d = _unit_settings(UNIT)
    assert d["RuntimeDirectory"] == ["lightshow"]  # /run/lightshow/control.sock
    assert d["RuntimeDirectoryMode"] == ["0750"] and d["RestartForceExitStatus"] == ["75"]


# --- install / uninstall ---------------------------------------------------------------------

SCRIPTS = [ROOT / "systemd" / "install.sh", ROOT / "systemd" / "uninstall.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "set -euo pipefail" in script.read_text()


def _run(script: Path, *args: str, **env: str) -> str:
    proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_install_into_destdir_is_idempotent_and_keeps_config(tmp_path):
    root = tmp_path / "root"
    out = _run(SCRIPTS[0], DESTDIR=str(root), LIGHTSHOW_MODEL_FILE="/nonexistent")
    assert "skipped (DESTDIR): systemctl enable lightshow.service lightshow-web.service" in out
    unit = root / "etc/systemd/system/lightshow.service"
    web_unit = root / "etc/systemd/system/lightshow-web.service"
    assert web_unit.read_text() == WEB_UNIT.read_text()
    assert (root / "opt/lightshow/pi/web/static/index.html").is_file()
    assert stat.S_IMODE((root / "etc/lightshow").stat().st_mode) == 0o775
    config = root / "etc/lightshow/config.toml"
    assert unit.read_text() == UNIT.read_text()
    assert config.read_text() == (ROOT / "systemd/config.toml").read_text()
    assert (root / "opt/lightshow/pi/outputs/base.py").is_file()
    assert (root / "var/lib/lightshow/music").is_dir()
    assert not (root / "opt/lightshow/.git").exists()

    config.write_text("[show]\nhold_ms = 250\n")  # the user's edit survives an upgrade
    out = _run(SCRIPTS[0], DESTDIR=str(root), LIGHTSHOW_MODEL_FILE="/nonexistent")
    assert "exists: kept as is" in out
    assert config.read_text() == "[show]\nhold_ms = 250\n"

    out = _run(SCRIPTS[1], DESTDIR=str(root))
    assert not unit.exists() and not web_unit.exists() and not (root / "opt/lightshow").exists()
    assert config.exists() and "Kept: /etc/lightshow" in out
    _run(SCRIPTS[1], DESTDIR=str(root))  # again: nothing left to do, still fine


@pytest.mark.parametrize("model,lib", [("Raspberry Pi 5 Model B Rev 1.0", "rpi-lgpio"),
                                       ("Raspberry Pi 4 Model B Rev 1.4", "RPi.GPIO")])
def test_install_dry_run_picks_the_gpio_library(tmp_path, model, lib):
    model_file = tmp_path / "model"
    model_file.write_bytes(model.encode() + b"\0")
    out = _run(SCRIPTS[0], "--dry-run", LIGHTSHOW_MODEL_FILE=str(model_file),
               PREFIX=str(tmp_path / "opt"))
    assert f"pip install --quiet {lib}" in out
    plain = out.replace("\\", "")  # undo printf %q quoting
    assert "--editable" not in plain and "/opt[pi,web]" in plain  # a plain install
    assert "tensorflow" not in plain.lower()
    assert "+ systemctl enable lightshow.service lightshow-web.service" in out
    assert not (tmp_path / "opt").exists()  # dry run: nothing created


SHIM = """#!/usr/bin/env bash
# Stands in for a system command: logs the call, then behaves as on a fresh Pi.
echo "$(basename "$0") $*" >> "$SHIM_LOG"
case "$(basename "$0")" in
    getent|id|dpkg-query) exit 2 ;;  # no such group/user/package yet
    python3)  # `python3 -m venv [opts] DIR`: a venv whose pip and python are shims too
        dir="${@: -1}"; mkdir -p "$dir/bin"
        cp "$0" "$dir/bin/pip"; cp "$0" "$dir/bin/python" ;;
    pip)
        [[ "$1" == show ]] && exit 1  # rpi-lgpio not installed
        [[ "$*" == *"install --quiet RPi.GPIO"* && -n "${FAIL_GPIO_PIP:-}" ]] && exit 1 ;;
esac
exit 0
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh insists on root outside --dry-run")
@pytest.mark.parametrize("pip_fails", [False, True])
def test_install_real_mode_with_system_commands_stubbed(tmp_path, pip_fails):
    """The non-dry branches, run for real against stand-ins for useradd, apt-get, systemctl,
    python3 and pip, with every path under tmp: the order and arguments a Pi would see."""
    shims, log = tmp_path / "shims", tmp_path / "calls.log"
    shims.mkdir()
    for cmd in ("getent", "id", "groupadd", "useradd", "usermod", "dpkg-query", "apt-get",
                "chown", "chgrp", "systemctl", "python3"):
        (shims / cmd).write_text(SHIM)
        (shims / cmd).chmod(0o755)
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    root = tmp_path / "root"
    env = dict(PATH=f"{shims}:{os.environ['PATH']}", SHIM_LOG=str(log),
               LIGHTSHOW_MODEL_FILE=str(model), PREFIX=f"{root}/opt/lightshow",
               CONFDIR=f"{root}/etc/lightshow", UNITDIR=f"{root}/etc/systemd/system",
               STATEDIR=f"{root}/var/lib/lightshow", **({"FAIL_GPIO_PIP": "1"} if pip_fails
                                                       else {}))
    _run(SCRIPTS[0], **env)
    calls = log.read_text().replace(str(root), "").splitlines()
    venv = "/opt/lightshow/.venv"
    expected = [
        "groupadd --system gpio", "groupadd --system audio",
        "useradd --system --user-group --groups gpio,audio --home-dir /var/lib/lightshow "
        "--no-create-home --shell /usr/sbin/nologin lightshow",
        "apt-get update -qq",
        "apt-get install -y --no-install-recommends python3-venv libportaudio2 libsndfile1",
        f"python3 -m venv --system-site-packages {venv}",
        "pip install --quiet /opt/lightshow[pi,web]",
        "pip install --quiet --no-deps --force-reinstall /opt/lightshow",
        "pip show --quiet rpi-lgpio",
        "pip install --quiet RPi.GPIO",
        *(["apt-get update -qq", "apt-get install -y --no-install-recommends python3-rpi.gpio"]
          if pip_fails else []),
        "chgrp lightshow /etc/lightshow",
        "chown -R lightshow:lightshow /var/lib/lightshow",
        "systemctl daemon-reload", "systemctl enable lightshow.service lightshow-web.service",
        "systemctl try-restart lightshow.service lightshow-web.service",
    ]
    assert [c for c in calls if not c.startswith(("getent", "id ", "dpkg-query"))] == expected
    assert (root / "etc/systemd/system/lightshow.service").read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/lightshow-web.service").read_text() == \
        WEB_UNIT.read_text()
    assert (root / "etc/lightshow/config.toml").is_file()
    assert (root / "opt/lightshow/pi/config/load.py").is_file()
