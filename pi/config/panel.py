"""Config sections for running the show without a terminal: the control socket, the show
hours and the web panel. Stdlib only, checked like the rest of pi/config/load.py (which merges
these into the one Config and its checkers).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pi.config.values import ConfigError, check_bool, check_list, check_num, check_str, fail

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "17:30", "sunset", "sunset-00:15", "sunrise+1:00"
TIME_RE = re.compile(r"^(?:(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)|"
                     r"(?P<sun>sunset|sunrise)(?:(?P<sign>[+-])(?P<oh>\d{1,2}):(?P<om>[0-5]\d))?)$")
DEFAULT_SOCKET = "/run/lightshow/control.sock"


@dataclass(frozen=True)
class ControlConfig:
    socket: str = ""


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = False
    days: tuple[str, ...] = DAYS
    on: str = "sunset-00:15"
    off: str = "23:00"
    latitude: float = 51.48
    longitude: float = 0.0
    timezone: str = ""


@dataclass(frozen=True)
class WebConfig:
    listen: str = "0.0.0.0:8080"
    password_file: str = "/etc/lightshow/web-password"
    max_upload_mb: int = 100


def _days(key: str, v: Any) -> tuple[str, ...]:
    out = []
    for i, d in enumerate(check_list(key, v)):
        if not isinstance(d, str) or d.lower() not in DAYS:
            raise fail(f"{key}[{i}]", "one of " + ", ".join(f'"{x}"' for x in DAYS), d)
        if d.lower() in out:
            raise ConfigError(f"{key}: expected each day once, found {d!r} twice")
        out.append(d.lower())
    if not out:
        raise fail(key, "at least one day", v)
    return tuple(out)


def _show_time(key: str, v: Any) -> str:
    if not isinstance(v, str) or not TIME_RE.match(v.strip()):
        raise fail(key, 'a time "HH:MM" (24 h), or "sunset"/"sunrise" with an optional '
                    'offset such as "sunset-00:15"', v)
    return v.strip()


def _timezone(key: str, v: Any) -> str:
    v = check_str(key, v, 'a time zone name such as "Europe/London", or "" for the system\'s')
    if v:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise fail(key, 'a time zone name such as "Europe/London", or "" for the '
                        "system's", v) from None
    return v


def _listen(key: str, v: Any) -> str:
    host, sep, port = check_str(key, v, 'an address "host:port" such as "0.0.0.0:8080"') \
        .rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise fail(key, 'an address "host:port" such as "0.0.0.0:8080" or '
                    '"127.0.0.1:8080"', v)
    return v


def _upload_mb(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2000:
        raise fail(key, "an integer from 1 to 2000 (megabytes)", v)
    return v


CHECKS = {
    "control.socket": lambda k, v: check_str(k, v, 'a socket path, or "" for '
                                        f'{DEFAULT_SOCKET}'),
    "schedule.enabled": check_bool,
    "schedule.days": _days,
    "schedule.on": _show_time,
    "schedule.off": _show_time,
    "schedule.latitude": lambda k, v: check_num(k, v, -90, 90, " (degrees north)"),
    "schedule.longitude": lambda k, v: check_num(k, v, -180, 180, " (degrees east)"),
    "schedule.timezone": _timezone,
    "web.listen": _listen,
    "web.password_file": lambda k, v: check_str(k, v, "a file path"),
    "web.max_upload_mb": _upload_mb,
}


def check_cross(cfg) -> None:
    s = cfg.schedule
    if s.enabled and s.on == s.off:
        raise ConfigError(f'schedule.off: expected a time other than schedule.on, found both '
                          f'"{s.on}"')


def socket_path(cfg) -> str:
    """Where the daemon listens and `lightshow ctl` and the panel connect."""
    return cfg.control.socket or DEFAULT_SOCKET
