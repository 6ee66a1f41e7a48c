"""The panel's live parts: Server-Sent Events fed from the daemon's lamp stream and status,
and the daemon's recent log lines. One lamp-stream connection to the daemon per open page;
the daemon drops it if it does not keep up, and this side drops events for a browser that
does not (the status repeats every second, the next lamp change brings the page up to date).
"""
from __future__ import annotations

import asyncio
import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from pi.web import link

STATUS_EVERY_S = 1.0
RETRY_S = 1.0
MAX_EVENT_CLIENTS = 8


async def events(request: Request) -> Response:
    """Server-Sent Events: ``lamps`` on every change, ``status`` every second."""
    p = request.app.state.panel
    if p.event_clients >= MAX_EVENT_CLIENTS:
        return JSONResponse({"error": f"at most {MAX_EVENT_CLIENTS} live views at once"},
                            status_code=503)
    queue: asyncio.Queue = asyncio.Queue(maxsize=512)

    def put(kind: str, obj: dict) -> None:
        try:
            queue.put_nowait(f"event: {kind}\ndata: {json.dumps(obj)}\n\n")
        except asyncio.QueueFull:
            pass  # a browser that does not keep up sees the next change; status repeats

    async def lamps() -> None:
        while True:
            try:
                async for msg in link.lamp_stream(p.socket):
                    put("lamps", msg)
            except (link.DaemonDown, OSError, ValueError):
                pass
            put("lamps", {"seq": None, "wall": time.time(), "lamps": [False] * p.channels,
                          "running": False})
            await asyncio.sleep(RETRY_S)  # the daemon is down: look again in a second

    async def statuses() -> None:
        while True:
            put("status", await link.status(p.socket, p.channels))
            await asyncio.sleep(STATUS_EVERY_S)

    async def stream():
        p.event_clients += 1
        tasks = [asyncio.create_task(lamps()), asyncio.create_task(statuses())]
        try:
            yield ": lightshow panel\nretry: 1000\n\n"
            while True:
                yield await queue.get()
        finally:
            p.event_clients -= 1
            for t in tasks:
                t.cancel()
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def log_lines(request: Request) -> Response:
    p = request.app.state.panel
    try:
        lines = (await link.request(p.socket, "log"))["lines"]
    except (link.DaemonDown, link.DaemonError) as exc:
        return JSONResponse({"lines": [], "error": str(exc)})
    return JSONResponse({"lines": lines[-100:]})
