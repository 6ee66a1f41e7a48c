"""Show hours with a fake clock: fixed times, across midnight, across both DST changes,
relative to sunset (astral), days of the week; and the daemon keeping them."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import soundfile as sf

from pi.config.load import Config, ConfigError
from pi.daemon.control_socket import request
from pi.daemon.loop import Daemon
from pi.daemon.schedule import Schedule
from tests.test_control import status, until
from training.corpus.synth import synth_song

BERLIN = ZoneInfo("Europe/Berlin")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_fixed_times_same_evening():
    s = Schedule(on="17:30", off="23:00", zone=BERLIN)
    assert not s.is_on(local(2026, 12, 2, 17, 29))
    assert s.is_on(local(2026, 12, 2, 17, 30))
    assert s.is_on(local(2026, 12, 2, 22, 59))
    assert not s.is_on(local(2026, 12, 2, 23, 0))
    start, stop = s.next_changes(local(2026, 12, 2, 12, 0))
    assert start == local(2026, 12, 2, 17, 30) and stop == local(2026, 12, 2, 23, 0)


def test_across_midnight_and_days_of_the_week():
    # Friday and Saturday nights only, 20:00 to 01:00 the next morning.
    s = Schedule(days=["fri", "sat"], on="20:00", off="01:00", zone=BERLIN)
    fri = local(2026, 12, 4, 20, 0)
    assert fri.weekday() == 4
    assert s.is_on(fri) and s.is_on(fri + timedelta(hours=4, minutes=59))
    assert not s.is_on(fri + timedelta(hours=5))                 # Saturday 01:00
    assert s.is_on(local(2026, 12, 6, 0, 30))                    # Saturday's night, Sunday
    assert not s.is_on(local(2026, 12, 6, 20, 30))               # Sunday evening: no show
    assert not s.is_on(local(2026, 12, 4, 0, 30))                # Thursday's night
    start, stop = s.next_changes(local(2026, 12, 6, 2, 0))        # Sunday early
    assert start == local(2026, 12, 11, 20, 0) and stop == local(2026, 12, 12, 1, 0)
    # From inside a period, the next stop is its end and the next start the next day's.
    start, stop = s.next_changes(local(2026, 12, 4, 23, 0))
    assert stop == local(2026, 12, 5, 1, 0) and start == local(2026, 12, 5, 20, 0)


@pytest.mark.parametrize("day", [29, 30])
def test_spring_dst_change_keeps_wall_clock_times(day):
    # Berlin springs forward on 29 March 2026 at 02:00; a show 01:30-03:30 that night is
    # one hour shorter in real time, and 17:30 is still 17:30 local the next day.
    s = Schedule(on="01:30", off="03:30", zone=BERLIN)
    start, stop = s.next_changes(local(2026, 3, day, 0, 0))
    assert start.hour == 1 and start.minute == 30 and stop.hour == 3 and stop.minute == 30
    length = stop.astimezone(timezone.utc) - start.astimezone(timezone.utc)
    assert length == timedelta(hours=1 if day == 29 else 2)
    utc_inside = (start.astimezone(timezone.utc) + length / 2)
    assert s.is_on(utc_inside) and not s.is_on(stop.astimezone(timezone.utc))


def test_autumn_dst_change_and_midnight_in_utc():
    # Falls back on 25 October 2026 at 03:00: a 22:00-06:00 show that night lasts 9 hours.
    s = Schedule(on="22:00", off="06:00", zone=BERLIN)
    start, stop = s.next_changes(local(2026, 10, 24, 12, 0))
    assert stop - start == timedelta(hours=8)  # wall clock
    real = stop.astimezone(timezone.utc) - start.astimezone(timezone.utc)
    assert real == timedelta(hours=9)
    # Each UTC minute of that night is on exactly when it is inside the period.
    t = start.astimezone(timezone.utc) - timedelta(minutes=30)
    end = stop.astimezone(timezone.utc) + timedelta(minutes=30)
    on = []
    while t < end:
        on.append(s.is_on(t))
        t += timedelta(minutes=15)
    assert on == [False] * 2 + [True] * 36 + [False] * 2


def test_sunset_relative_times_follow_astral_and_the_season():
    from astral import Observer
    from astral.sun import sunset

    london = ZoneInfo("Europe/London")
    s = Schedule(on="sunset-00:15", off="sunrise+0:30", latitude=51.5, longitude=-0.13,
                 zone=london)
    day = datetime(2026, 12, 2, 12, 0, tzinfo=london)
    start, stop = s.next_changes(day)
    want = sunset(Observer(51.5, -0.13), date=day.date(), tzinfo=london) - timedelta(minutes=15)
    assert abs(start - want) < timedelta(seconds=1)
    assert 15 <= start.hour <= 16 and stop.date() == day.date() + timedelta(days=1)
    summer = s.next_changes(datetime(2026, 6, 21, 12, 0, tzinfo=london))[0]
    assert summer.hour in (20, 21)  # later in June, in summer time


def test_polar_night_means_no_show_and_a_warning(caplog):
    s = Schedule(on="sunset", off="23:00", latitude=78.2, longitude=15.6,
                 zone="Arctic/Longyearbyen")
    assert s.next_changes(datetime(2026, 6, 21, 12, 0, tzinfo=timezone.utc)) == (None, None)
    assert "no sunset" in caplog.text


@pytest.mark.parametrize("section, message", [
    ({"on": "25:00"}, 'schedule.on: expected a time "HH:MM"'),
    ({"off": "dusk"}, "schedule.off: expected a time"),
    ({"days": ["monday"]}, 'schedule.days[0]: expected one of "mon"'),
    ({"latitude": 91}, "schedule.latitude: expected a number from -90 to 90"),
    ({"timezone": "Mars/Olympus"}, "schedule.timezone: expected a time zone name"),
    ({"enabled": True, "on": "20:00", "off": "20:00"}, "expected a time other than"),
])
def test_bad_schedule_config_names_the_key(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Config.from_dict({"schedule": section})


def test_daemon_turns_off_outside_show_hours_and_on_again(tmp_path):
    y, _ = synth_song(seconds=10.0, seed=3, ending="hard_stop")
    sf.write(tmp_path / "song.wav", y, 44100)
    cfg = Config.from_dict({"audio": {"source": "file", "playlist": [str(tmp_path)]},
                            "model": {"mapper": "bands"}, "outputs": {"enabled": ["mock"]},
                            "control": {"socket": str(tmp_path / "c.sock")},
                            "schedule": {"enabled": True, "on": "17:00", "off": "23:00",
                                         "timezone": "Europe/Berlin"}})
    d = Daemon(cfg, realtime=True)
    clock = [local(2026, 12, 2, 23, 30).timestamp()]  # outside show hours
    hub, ctl = d.control.hub, d.control
    hub.clock = lambda: clock[0]
    hub.want_play = ctl._sched_state = hub.schedule.is_on(clock[0])
    mock = d.outputs.inner.outputs[0]
    th = threading.Thread(target=d.run, daemon=True)
    th.start()
    try:
        sock = tmp_path / "c.sock"
        until(lambda: sock.exists(), "the socket")
        st = until(lambda: (s := status(sock))["state"] == "off (schedule)" and s, "off")
        assert st["schedule"]["next_start"].startswith("2026-12-03T17:00:00+01:00")
        assert all(r[2] == (False,) * 8 for r in mock.records)
        clock[0] = local(2026, 12, 3, 17, 0, 5).timestamp()  # the next evening
        hub.wake.set()
        until(lambda: any(any(r[2]) for r in mock.records), "lamps in show hours")
        assert status(sock)["state"] == "playing"
        clock[0] = local(2026, 12, 3, 23, 0, 1).timestamp()
        until(lambda: status(sock)["state"] == "off (schedule)", "off at 23:00")
        n = len(mock.records)
        assert mock.records[-1][2] == (False,) * 8
        # A manual start outside show hours lasts until the next on or off time.
        request(sock, "start")
        until(lambda: status(sock)["state"] == "playing" and len(mock.records) > n,
              "started by hand")
    finally:
        d.stop.set()
        th.join(15)
