"""Show hours: on and off times on chosen days, fixed or relative to sunset and sunrise.

A show period starts on a listed day at its ``on`` time and ends at the next ``off`` time: the
same evening, or the next morning when ``off`` comes before ``on`` on the clock ("sunset" to
"01:00"). Times are local wall-clock times in the configured zone (zoneinfo), so summer time
moves nothing: "17:30" is 17:30 on both sides of the change. Sun times come from the `astral`
package for the configured latitude and longitude, imported only when a time uses the sun.

Everything is a pure function of the time passed in (aware datetimes), so tests drive it with
a fake clock.
"""
from __future__ import annotations

import logging
import os
import zoneinfo
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path

from pi.config.panel import DAYS, TIME_RE

log = logging.getLogger(__name__)


def system_zone() -> tzinfo:
    """The system's time zone as a zoneinfo zone (so summer time is known), from TZ,
    /etc/timezone or the /etc/localtime link; UTC if none of them names one."""
    names = [os.environ.get("TZ", "").lstrip(":")]
    try:
        names.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            names.append(link.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in filter(None, names):
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
    return timezone.utc


class Schedule:
    """``is_on(now)`` and ``next_changes(now)``; see the module docstring."""

    def __init__(self, *, days=DAYS, on: str = "sunset-00:15", off: str = "23:00",
                 latitude: float = 51.48, longitude: float = 0.0,
                 zone: tzinfo | str | None = None):
        self.days = {DAYS.index(d) for d in days}
        self.on, self.off = on, off
        self.latitude, self.longitude = float(latitude), float(longitude)
        self.zone = (zoneinfo.ZoneInfo(zone) if isinstance(zone, str) and zone
                     else zone if isinstance(zone, tzinfo) else system_zone())
        for spec in (on, off):
            if not TIME_RE.match(spec):
                raise ValueError(f"schedule: expected a time such as \"17:30\" or "
                                 f"\"sunset-00:15\", found {spec!r}")
        self._warned: set = set()

    @classmethod
    def from_config(cls, s) -> "Schedule":
        return cls(days=s.days, on=s.on, off=s.off, latitude=s.latitude,
                   longitude=s.longitude, zone=s.timezone or None)

    def at(self, spec: str, day: date) -> datetime | None:
        """The moment `spec` means on `day` (aware, in the zone); None if the sun does not
        rise or set there that day."""
        m = TIME_RE.match(spec)
        if m["h"] is not None:
            # fold=0: a time that exists twice (autumn) is its first occurrence; one that
            # does not exist (spring) comes out an hour later in UTC, which is what a
            # wall clock shows.
            naive = datetime.combine(day, time(int(m["h"]), int(m["m"])))
            return naive.replace(tzinfo=self.zone)
        from astral import Observer
        from astral.sun import sunrise, sunset

        fn = sunset if m["sun"] == "sunset" else sunrise
        try:
            t = fn(Observer(self.latitude, self.longitude), date=day, tzinfo=self.zone)
        except ValueError as exc:  # polar day or night
            if day not in self._warned:
                self._warned.add(day)
                log.warning("schedule: no %s on %s at latitude %g: %s; no show that day",
                            m["sun"], day, self.latitude, exc)
            return None
        if m["sign"]:
            delta = timedelta(hours=int(m["oh"]), minutes=int(m["om"]))
            t = t + delta if m["sign"] == "+" else t - delta
        return t

    def periods(self, now: datetime, *, back: int = 2, ahead: int = 8):
        """(start, end) show periods that start from `back` days before `now` to `ahead`
        days after it, in order."""
        today = now.astimezone(self.zone).date()
        out = []
        for k in range(-back, ahead + 1):
            day = today + timedelta(days=k)
            if day.weekday() not in self.days:
                continue
            start = self.at(self.on, day)
            if start is None:
                continue
            end = self.at(self.off, day)
            if end is None or end <= start:
                end = self.at(self.off, day + timedelta(days=1))
            if end is None or end <= start:
                continue
            # In UTC: aware datetimes that share a zone compare by wall clock, which is wrong
            # in the hour a clock change repeats.
            out.append((start.astimezone(timezone.utc), end.astimezone(timezone.utc)))
        return out

    def is_on(self, now: datetime | float) -> bool:
        now = _aware(now)
        return any(start <= now < end for start, end in self.periods(now))

    def next_changes(self, now: datetime | float) -> tuple[datetime | None, datetime | None]:
        """The next start after `now` and the next stop after `now` (None: none within a
        week), in the zone."""
        now = _aware(now)
        periods = self.periods(now, ahead=8)
        start = next((s for s, _ in periods if s > now), None)
        stop = next((e for _, e in periods if e > now), None)
        conv = (lambda t: t and t.astimezone(self.zone))
        return conv(start), conv(stop)


def _aware(now: datetime | float) -> datetime:
    if isinstance(now, (int, float)):
        return datetime.fromtimestamp(now, timezone.utc)
    if now.tzinfo is None:
        raise ValueError("schedule: expected an aware datetime, found a naive one")
    return now
