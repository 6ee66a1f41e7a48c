"""``lightshow web --config FILE``: the panel, a Starlette app on uvicorn.

A separate process from the show: it reaches the daemon only through its control socket
(pi/web/link.py), so a panel that crashes or hangs never touches the lamps, and the show runs
with no panel at all. The pages are static files (pi/web/static/, no CDN, no build step) that
call the JSON API below; lamps arrive live by Server-Sent Events fed from the socket's lamp
stream. The gate in front of it all is pi/web/security.py; passwords and sessions are
pi/web/auth.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import tempfile
import time
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (FileResponse, HTMLResponse, JSONResponse, RedirectResponse,
                                 Response)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pi.config.load import Config, ConfigError, load_config
from pi.config.panel import socket_path
from pi.daemon.control_socket import COMMANDS
from pi.web import auth, library, link, settings
from pi.web.live import events, log_lines
from pi.web.security import COOKIE, PREVIEW_CSP, Gate

log = logging.getLogger("lightshow.web")

ACTIONS = tuple(c for c in COMMANDS if c != "override")  # overrides have their own route
MAX_LOGIN_BODY = 4096
STATIC = resources.files("pi.web").joinpath("static")


class Panel:
    """What the routes share: the config, sessions, the login limiter."""

    def __init__(self, config: Config, config_path: str | Path | None, *, cache: Path):
        self.config, self.config_path = config, config_path
        self.socket = socket_path(config)
        self.sessions = auth.Sessions()
        self.limiter = auth.LoginLimiter()
        self.cache = cache
        self.verify_lock = asyncio.Lock()  # one scrypt at a time: 16 MB each
        self.event_clients = 0

    @property
    def channels(self) -> int:
        return self.config.show.channels

    def reload(self) -> str | None:
        """Read the config file again (it may have been edited by hand): None, or why the
        file cannot be used (the panel keeps the last good one)."""
        if self.config_path is not None:
            try:
                self.config = load_config(self.config_path)
            except ConfigError as exc:
                return str(exc)
        return None


def _panel(request: Request) -> Panel:
    return request.app.state.panel


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(STATIC.joinpath(name).read_text(encoding="utf-8"))


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# --- login ------------------------------------------------------------------------------

async def login_page(request: Request) -> Response:
    return _page("login.html")


async def login(request: Request) -> Response:
    p = _panel(request)
    address = request.client.host if request.client else "?"
    wait = p.limiter.allow(address)
    if wait:
        return HTMLResponse(_login_message("Too many attempts: wait a minute and try again."),
                            status_code=429, headers={"Retry-After": str(int(wait) + 1)})
    try:  # anyone may post here: a small body or none at all
        small = 0 < int(request.headers.get("content-length", "")) <= MAX_LOGIN_BODY
    except ValueError:
        small = False
    if not small:
        return HTMLResponse(_login_message("Expected a short login form."), status_code=413)
    form = await request.form(max_files=0, max_fields=4)
    password = str(form.get("password") or "")
    stored = auth.read_password_hash(p.config.web.password_file)
    ok = False
    if stored is not None and password:
        async with p.verify_lock:
            ok = await run_in_threadpool(auth.verify_password, password, stored)
    if not ok:
        log.warning("panel: failed login from %s", address)
        why = ("No password is set yet: run `sudo lightshow web set-password` on the Pi."
               if stored is None else "Wrong password.")
        return HTMLResponse(_login_message(why), status_code=401)
    token, _ = p.sessions.create()
    log.info("panel: login from %s", address)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, token, max_age=int(auth.SESSION_S), httponly=True,
                    samesite="strict", path="/")
    return resp


def _login_message(text: str) -> str:
    import html

    page = STATIC.joinpath("login.html").read_text(encoding="utf-8")
    return page.replace('<p id="message" hidden></p>',
                        f'<p id="message" role="alert">{html.escape(text)}</p>')


async def logout(request: Request) -> Response:
    _panel(request).sessions.end(request.cookies.get(COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


# --- pages and the show -----------------------------------------------------------------

async def index(request: Request) -> Response:
    return _page("index.html")


async def session(request: Request) -> Response:
    return JSONResponse({"csrf": request.scope["state"]["csrf"]})


async def status(request: Request) -> Response:
    p = _panel(request)
    st = await link.status(p.socket, p.channels)
    return JSONResponse(st)


async def control(request: Request) -> Response:
    action = request.path_params["action"]
    if action not in ACTIONS:
        return _error(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}", 404)
    return await _to_daemon(_panel(request), action)


async def override(request: Request) -> Response:
    try:
        body = await request.json()
        channel, mode = int(body["channel"]), str(body["mode"])
    except (ValueError, KeyError, TypeError):
        return _error('expected JSON {"channel": 1, "mode": "on" | "off" | "auto"}')
    return await _to_daemon(_panel(request), "override", channel=channel, mode=mode)


async def _to_daemon(p: Panel, cmd: str, **args) -> Response:
    try:
        await link.request(p.socket, cmd, **args)
    except link.DaemonDown as exc:
        return _error(f"{cmd}: {exc}", 503)
    except link.DaemonError as exc:
        return _error(str(exc), 400)
    return JSONResponse({"ok": True})


# --- the music folder -------------------------------------------------------------------

def _folder(p: Panel) -> Path | None:
    return library.music_folder(p.config)


async def songs(request: Request) -> Response:
    p = _panel(request)
    folder = _folder(p)
    return JSONResponse({"folder": str(folder) if folder else None,
                         "songs": library.list_songs(folder),
                         "max_upload_mb": p.config.web.max_upload_mb})


async def upload(request: Request) -> Response:
    p = _panel(request)
    limit = p.config.web.max_upload_mb << 20
    try:
        length = int(request.headers["content-length"])
    except (KeyError, ValueError):
        return _error("expected a Content-Length header", 411)
    if length > limit + (64 << 10):  # the multipart framing around the file
        return _error(f"expected at most {p.config.web.max_upload_mb} MB "
                      f"(web.max_upload_mb), found {length / (1 << 20):.1f} MB", 413)
    form = await request.form(max_files=1, max_fields=2)
    item = form.get("file")
    if item is None or isinstance(item, str):
        return _error("expected a form field 'file' holding the song")
    try:
        added = await library.add_song(_folder(p), item.filename or "", item, limit)
    except library.LibraryError as exc:
        return _error(str(exc), exc.status)
    finally:
        await form.close()
    log.info("panel: song %s added (%d bytes)", added["name"], added["bytes"])
    return JSONResponse(added, status_code=201)


async def delete_song(request: Request) -> Response:
    p, name = _panel(request), request.path_params["name"]
    try:
        library.delete_song(_folder(p), name)
    except library.LibraryError as exc:
        return _error(str(exc), exc.status)
    log.info("panel: song %s deleted", name)
    return JSONResponse({"ok": True})


async def reorder(request: Request) -> Response:
    p = _panel(request)
    try:
        out = library.reorder(_folder(p), await request.json())
    except ValueError:
        return _error("expected a JSON list of song names")
    except library.LibraryError as exc:
        return _error(str(exc), exc.status)
    return JSONResponse({"songs": out})


async def preview(request: Request) -> Response:
    p = _panel(request)
    try:
        page = await library.preview_page(p.config, _folder(p), request.path_params["name"],
                                          p.cache)
    except library.LibraryError as exc:
        return Response(str(exc), status_code=exc.status, media_type="text/plain")
    return FileResponse(page, media_type="text/html",
                        headers={"Content-Security-Policy": PREVIEW_CSP})


def _shared_with_preview(name: str, media_type: str):
    """The yard drawing and its style, shared with the preview page (pi/offline/yard.js,
    pi/offline/yard.css)."""
    async def serve(request: Request) -> Response:
        text = resources.files("pi.offline").joinpath(name).read_text(encoding="utf-8")
        return Response(text, media_type=media_type)
    return serve


# --- config and schedule ----------------------------------------------------------------

async def get_config(request: Request) -> Response:
    p = _panel(request)
    error = p.reload()
    return JSONResponse({"path": str(p.config_path) if p.config_path else None,
                         "values": settings.flat_values(p.config),
                         "editable": {} if error else settings.EDITABLE, "error": error})


async def put_config(request: Request, keys=None) -> Response:
    p = _panel(request)
    if p.config_path is None:
        return _error("the panel runs without --config: nothing to edit", 409)
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError
    except ValueError:
        return _error('expected a JSON object {"section.key": value}')
    if keys is not None and not set(changes) <= set(keys):
        return _error(f"expected only {', '.join(keys)}")
    try:
        p.config = await run_in_threadpool(settings.edit_config, p.config_path, changes)
    except ConfigError as exc:
        return _error(str(exc), 422)
    log.info("panel: config changed: %s", ", ".join(changes))
    return JSONResponse({"ok": True, "values": settings.flat_values(p.config),
                         "note": "saved; restart the show to apply it"})


async def get_schedule(request: Request) -> Response:
    p = _panel(request)
    error = p.reload()
    return JSONResponse({**settings.schedule_info(p.config, time.time()), "error": error})


async def put_schedule(request: Request) -> Response:
    resp = await put_config(request, keys=settings.SCHEDULE_KEYS)
    if resp.status_code != 200:
        return resp
    return JSONResponse({**settings.schedule_info(_panel(request).config, time.time()),
                         "note": "saved; restart the show to apply it"})


def make_app(config: Config, config_path: str | Path | None = None, *,
             cache: Path | None = None) -> Starlette:
    cache = cache or Path(os.environ.get("CACHE_DIRECTORY")
                          or Path(tempfile.gettempdir()) / "lightshow-web")
    routes = [
        Route("/", index), Route("/login", login_page), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/songs/{name:path}/preview", preview),
        Route("/api/session", session), Route("/api/status", status),
        Route("/api/events", events), Route("/api/log", log_lines),
        Route("/api/control/{action}", control, methods=["POST"]),
        Route("/api/override", override, methods=["POST"]),
        Route("/api/songs", songs), Route("/api/songs", upload, methods=["POST"]),
        Route("/api/songs/order", reorder, methods=["PUT"]),
        Route("/api/songs/{name:path}", delete_song, methods=["DELETE"]),
        Route("/api/config", get_config), Route("/api/config", put_config, methods=["PUT"]),
        Route("/api/schedule", get_schedule),
        Route("/api/schedule", put_schedule, methods=["PUT"]),
        Route("/static/yard.js", _shared_with_preview("yard.js", "text/javascript")),
        Route("/static/yard.css", _shared_with_preview("yard.css", "text/css")),
        Mount("/static", StaticFiles(packages=[("pi.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.panel = Panel(config, config_path, cache=cache)
    app.add_middleware(Gate, sessions=app.state.panel.sessions)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_address(config: Config, listen: str | None) -> tuple[str, int]:
    """Host and port to listen on: without a password, loopback only (with a warning)."""
    host, _, port = (listen or config.web.listen).rpartition(":")
    if not port.isdigit() or not host:
        raise ConfigError(f'--listen: expected "host:port", found {listen!r}')
    if auth.read_password_hash(config.web.password_file) is None and not is_loopback(host):
        log.warning("no panel password set (%s): listening on 127.0.0.1 only, not %s. Set "
                    "one with `sudo lightshow web set-password --config FILE`, then restart "
                    "the panel", config.web.password_file, host)
        host = "127.0.0.1"
    return host.strip("[]"), int(port)


def serve(config: Config, *, config_path=None, listen: str | None = None) -> int:
    import uvicorn

    host, port = bind_address(config, listen)
    app = make_app(config, config_path)
    log.info("panel on http://%s:%d/ (control socket %s)", host, port, socket_path(config))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                server_header=False, proxy_headers=False, timeout_graceful_shutdown=2)
    return 0
