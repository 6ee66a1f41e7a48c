"""The panel's gate, as ASGI middleware in front of every route:

- ``/api/...`` without a live session cookie: 401, whatever the method (GET /api/status too);
- pages other than /login and the static files without a session: a redirect to /login;
- any state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is not the panel's
  own (``http://`` + its Host): 403. Browsers send Origin on every such request, so a page on
  another site cannot post to the panel; a client without Origin (curl) passes this check;
- state-changing ``/api/...`` requests also need the session's CSRF token in the
  ``X-CSRF-Token`` header, which no cross-site form can set;
- every response carries a strict Content-Security-Policy, no framing, no sniffing, and
  ``Cache-Control: no-store`` for the API.
"""
from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie

COOKIE = "lightshow_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
# The preview pages carry their own policy (inline script and data: audio, no network).
PREVIEW_CSP = ("default-src 'none'; media-src data: blob:; style-src 'unsafe-inline'; "
               "script-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'")


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def session_token(headers: dict[str, str]) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def same_origin(scope, headers: dict[str, str]) -> bool:
    """True unless the request names an Origin other than the panel's own."""
    origin = headers.get("origin")
    if origin is None:
        # No Origin: not from a browser's cross-site request (they all send one on POST),
        # unless Fetch Metadata says otherwise.
        return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    host = headers.get("host")
    return bool(host) and origin == f"{scope.get('scheme', 'http')}://{host}"


class Gate:
    def __init__(self, app, sessions):
        self.app, self.sessions = app, sessions

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = _headers(scope)
        api = path.startswith("/api/")
        csrf = self.sessions.csrf(session_token(headers))
        if method in UNSAFE and not same_origin(scope, headers):
            return await _deny(send, 403, "cross-site request refused (Origin is not this "
                                          "panel's)", api)
        public = path in ("/login", "/favicon.ico") or path.startswith("/static/")
        if not public:
            if csrf is None:
                if api:
                    return await _deny(send, 401, "log in first", True)
                return await _redirect(send, "/login")
            if api and method in UNSAFE and not hmac.compare_digest(
                    headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
                return await _deny(send, 403, "missing or wrong X-CSRF-Token header", True)
        scope.setdefault("state", {})["csrf"] = csrf

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                hs = list(message.get("headers", []))
                names = {k.lower() for k, _ in hs}
                extra = [(b"x-content-type-options", b"nosniff"),
                         (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"same-origin")]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP.encode()))
                if api:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": hs + extra}
            await send(message)
        await self.app(scope, receive, send_with_headers)


async def _deny(send, status: int, why: str, as_json: bool) -> None:
    body = json.dumps({"error": why}).encode() if as_json else why.encode()
    kind = b"application/json" if as_json else b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"),
                            (b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, where: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", where.encode()), (b"content-length", b"0"),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})
