"""The panel's side of the daemon's control socket (pi/daemon/control_socket.py): the same
newline-delimited JSON requests, made with asyncio so that a slow or absent daemon never blocks
the panel (pi/daemon/control_socket.py's own client blocks, which suits `lightshow ctl`).
"""
from __future__ import annotations

import asyncio
import json

TIMEOUT_S = 3.0
MAX_REPLY = 1 << 20


class DaemonDown(Exception):
    """The daemon is not running, or its socket refused or garbled a request; says which."""


async def request(path: str, cmd: str, *, timeout: float = TIMEOUT_S, **args) -> dict:
    """One request; the reply's object, or DaemonDown with the socket's or reply's error."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(path, limit=MAX_REPLY), timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonDown("the show is not running") from None
    except PermissionError:
        raise DaemonDown(f"{path}: permission denied; expected the panel to run as the "
                         f"service's user or group (lightshow)") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise DaemonDown(f"{path}: cannot connect: {exc or 'timed out'}") from None
    try:
        writer.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        raise DaemonDown(f"{path}: {cmd}: {exc or 'timed out'}") from None
    finally:
        writer.close()
    try:
        out = json.loads(line)
    except ValueError:
        raise DaemonDown(f"{path}: {cmd}: expected a JSON reply, found {line[:80]!r}") from None
    if not out.get("ok"):
        raise DaemonError(out.get("error") or f"{cmd} refused")
    return out


class DaemonError(Exception):
    """The daemon answered and refused the request; the message is its reason."""


async def status(path: str, n_channels: int) -> dict:
    """The daemon's status, or ``{"state": "not running", "lamps": [False, ...]}``."""
    try:
        return (await request(path, "status"))["status"]
    except (DaemonDown, DaemonError) as exc:
        return {"state": "not running", "detail": str(exc), "song": None, "position_s": None,
                "next_song": None, "lamps": [False] * n_channels, "channels": n_channels,
                "overrides": ["auto"] * n_channels}


async def lamp_stream(path: str):
    """Lamp updates ``{"seq", "wall", "lamps"}`` (the current lamps first) until the daemon
    closes the stream; DaemonDown when it cannot be opened."""
    try:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_REPLY)
    except OSError as exc:
        raise DaemonDown(f"the show is not running ({exc.strerror or exc})") from None
    try:
        writer.write(b'{"cmd": "stream"}\n')
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                return
            yield json.loads(line)
    finally:
        writer.close()
