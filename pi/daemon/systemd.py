"""Talk to systemd without libsystemd: sd_notify(3) over a datagram socket, and SIGTERM handling.

Everything here is a no-op outside systemd (no $NOTIFY_SOCKET), so the same code path runs
from a terminal, in tests and under ``Type=notify``.
"""
from __future__ import annotations

import os
import socket

__all__ = ["notify", "ready", "stopping", "status", "watchdog_ping", "watchdog_interval_s",
           "install_sigterm_handler"]


def _address() -> str | bytes | None:
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):
        # Linux abstract namespace: systemd writes it with a leading '@', the kernel wants NUL.
        return b"\0" + addr[1:].encode()
    if addr.startswith("/"):
        return addr
    return None  # vsock addresses (vsock:CID:PORT) are for VMs, not this appliance


def notify(message: str) -> bool:
    """Send one sd_notify message; True if it was handed to systemd, False if there is none.

    Errors are swallowed on purpose: a lost status line must never stop the light show.
    """
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up is finished (``Type=notify`` waits for this)."""
    return notify("READY=1")


def stopping() -> bool:
    """Tell systemd shutdown has begun, so `systemctl status` says "deactivating" meanwhile."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """One line shown by ``systemctl status``; newlines would end the message field."""
    return notify("STATUS=" + " ".join(text.split()))


def watchdog_ping() -> bool:
    """Reset the ``WatchdogSec=`` timer; call at least every ``watchdog_interval_s()``."""
    return notify("WATCHDOG=1")


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout in seconds (the ping period sd_watchdog_enabled(3) advises),
    or None when the watchdog is off or meant for another process.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    # WATCHDOG_PID is set when the variables may have leaked to a child; only that pid pings.
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1e6 / 2


def install_sigterm_handler() -> dict:
    """Make SIGTERM (what ``systemctl stop`` sends) raise SystemExit(0), and SIGHUP, SIGQUIT
    and SIGINT unwind too (pi/daemon/stopping.py maps them all); returns the previous handlers.

    Python's default for SIGTERM kills the process without unwinding, so `finally` blocks that
    switch the relays off would never run. As an exception it unwinds like Ctrl-C does.
    """
    from pi.daemon import stopping

    return stopping.install()
