"""The panel's password, sessions and login rate limit. Stdlib only.

The password is stored as a salted scrypt hash (``hashlib.scrypt``, n=2**14, r=8, p=1: about
16 MB and a tenth of a second on a Pi Zero 2, Percival's parameters for interactive logins),
one line ``scrypt$n$r$p$salt$hash`` with base64 salt and hash. The parameters travel with the
hash so that they can be raised later without breaking stored passwords.

Sessions live in the panel's memory only: a restart of the panel logs everyone out, and no
session secret is ever written to disk.
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import time
from collections import deque
from pathlib import Path

from pi.files import atomic_write

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD = 8
SESSION_S = 30 * 24 * 3600          # a phone stays logged in for a season's month
MAX_SESSIONS = 64
LOGIN_WINDOW_S = 60.0
LOGIN_ATTEMPTS = 5                  # per client address and window
SERVICE_GROUP = "lightshow"


class PasswordError(Exception):
    """A password that cannot be set, or a password file that cannot be read."""


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N,
                  r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                         maxmem=256 * r * n + (1 << 20), dklen=KEY_BYTES)
    b64 = (lambda b: base64.b64encode(b).decode("ascii"))
    return f"scrypt${n}${r}${p}${b64(salt)}${b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches the stored line; False for a malformed line too."""
    try:
        kind, n, r, p, salt, key = stored.strip().split("$")
        if kind != "scrypt":
            return False
        n, r, p = int(n), int(r), int(p)
        if not (2 <= n <= 2 ** 20 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        salt, key = base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)
    except ValueError:
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                         maxmem=256 * r * n + (1 << 20), dklen=len(key))
    return hmac.compare_digest(got, key)


def read_password_hash(path: str | Path) -> str | None:
    """The stored hash line, or None when no password is set (no file, or an empty one)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordError(f"{path}: cannot read the panel's password hash: {exc}") from None
    return text or None


def read_new_password(*, stdin: bool) -> str:
    """One line from standard input (``--password-stdin``), or asked twice at the terminal."""
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New panel password: ")
        if getpass.getpass("Again: ") != password:
            raise PasswordError("the two passwords differ; nothing changed")
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"expected a password of at least {MIN_PASSWORD} characters, "
                            f"found {len(password)}; nothing changed")
    return password


def write_password_file(path: str | Path, password: str) -> Path:
    """Write the hash atomically, mode 0640; as root, group `lightshow` so the panel's
    service user can read it and nobody else can."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="ascii", file_mode=0o640) as f:
        f.write(hash_password(password) + "\n")
        if os.geteuid() == 0:
            import grp

            try:
                os.fchown(f.fileno(), 0, grp.getgrnam(SERVICE_GROUP).gr_gid)
            except KeyError:
                pass  # no service user yet (not installed): root only
    return path


class Sessions:
    """Random session tokens with an expiry and a CSRF token each, in memory."""

    def __init__(self, *, lifetime_s: float = SESSION_S, clock=time.monotonic):
        self.lifetime_s, self.clock = lifetime_s, clock
        self._by_token: dict[str, tuple[float, str]] = {}

    def create(self) -> tuple[str, str]:
        """A new session: (cookie token, CSRF token)."""
        now = self.clock()
        self._by_token = {t: v for t, v in self._by_token.items() if v[0] > now}
        while len(self._by_token) >= MAX_SESSIONS:  # the oldest goes first
            self._by_token.pop(min(self._by_token, key=lambda t: self._by_token[t][0]))
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._by_token[token] = (now + self.lifetime_s, csrf)
        return token, csrf

    def csrf(self, token: str | None) -> str | None:
        """The session's CSRF token, or None when `token` is no live session."""
        if not token:
            return None
        got = self._by_token.get(token)
        if got is None or got[0] <= self.clock():
            self._by_token.pop(token, None)
            return None
        return got[1]

    def end(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)


class LoginLimiter:
    """At most LOGIN_ATTEMPTS login attempts per client address in any LOGIN_WINDOW_S."""

    def __init__(self, *, attempts: int = LOGIN_ATTEMPTS, window_s: float = LOGIN_WINDOW_S,
                 clock=time.monotonic):
        self.attempts, self.window_s, self.clock = attempts, window_s, clock
        self._seen: dict[str, deque] = {}

    def allow(self, address: str) -> float:
        """0 if this attempt may go ahead (and counts it), else seconds until one may."""
        now = self.clock()
        if len(self._seen) > 4096:  # forget quiet addresses, so the table stays small
            self._seen = {a: q for a, q in self._seen.items() if q and q[-1] > now - self.window_s}
        q = self._seen.setdefault(address, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if len(q) >= self.attempts:
            return q[0] + self.window_s - now
        q.append(now)
        return 0.0
