"""What several test files share: a bounded wait on a condition, and a headless Chromium."""
from __future__ import annotations

import ast
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

INSTALL_HINT = "install Debian's chromium and chromium-driver (apt-get install chromium " \
               "chromium-driver) for the browser tests"


def modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter has imported after running ``code`` from the project
    root: how tests prove what pi/ keeps out (TensorFlow, SciPy, training, optional extras)."""
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(sorted(sys.modules))"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return ast.literal_eval(p.stdout.strip().splitlines()[-1])


def until(pred, what: str, timeout: float = 15.0, *, poll_s: float = 0.02):
    """Poll ``pred`` (bounded) until it returns something truthy, and return that; fail
    saying what we waited for."""
    ev, deadline = threading.Event(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        ev.wait(poll_s)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@contextlib.contextmanager
def chromium(*extra_args: str, script_timeout_s: float = 10.0, capabilities: dict | None = None):
    """A headless Debian Chromium driven by selenium, with a fresh profile and no background
    networking (this machine's network is closed); the test fails, never skips, without it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome"))), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
         if os.path.exists(p)), None)
    if not browser or not driver:
        pytest.fail(f"no chromium ({browser}) or chromedriver ({driver}): {INSTALL_HINT}")
    profile = tempfile.mkdtemp(prefix="lightshow-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio",
                "--window-size=1280,1000", f"--user-data-dir={profile}", *extra_args):
        opts.add_argument(arg)
    for key, value in (capabilities or {}).items():
        opts.set_capability(key, value)
    d = webdriver.Chrome(options=opts, service=Service(driver))
    d.set_script_timeout(script_timeout_s)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
