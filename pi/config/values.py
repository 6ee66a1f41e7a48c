"""Value checkers for pi/config/load.py: each takes the dotted key and the value as TOML gave it,
and returns the typed value or raises ConfigError naming the key, what was expected and what
was found (quoted as the user wrote it). Stdlib only, like the config.
"""
from __future__ import annotations

import ipaddress
import json
from typing import Any

from pi.net import e131
from pi.errors import ConfigError, LightshowError  # noqa: F401 - ConfigError is public here

MAX_CHANNELS = 16
BCM_PINS = range(0, 28)  # the 40-pin header's GPIO 0..27 on every Pi since the B+
DMX_SLOTS = e131.MAX_SLOTS

# `outputs.rpigpio.relay` picks these defaults. A cheap mechanical relay is rated for about
# 10^5 switchings at its rated load. 3 a second caps the bursts that chatter a relay to death,
# but it is no season's budget: the default show averages ~3,800 switchings a channel an hour
# (about 6 nights of 4 hours), which the counter's 80% warning reports. Solid-state relays
# do not wear by switching; 20 a second is as fast as a lamp reads.
RELAY_KINDS = ("mechanical", "ssr")
MECHANICAL_MAX_TOGGLES_PER_S = 3
RELAY_DEFAULTS = {"mechanical": {"max_toggles_per_s": MECHANICAL_MAX_TOGGLES_PER_S,
                                 "rated_switchings": 100_000},
                  "ssr": {"max_toggles_per_s": 20, "rated_switchings": 0}}


def _toml(value: Any) -> str:
    """A value as it would be written in the file, so errors quote what the user typed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return repr(value)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list"}.get(type(value), type(value).__name__)
    return f"{kind} {_toml(value)}"


def fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, found {_describe(value)}")


def check_int(key: str, v: Any, lo: int, hi: int, what: str = "") -> int:
    # bool is an int subclass in Python; `channels = true` is a mistake, not 1.
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise fail(key, f"an integer from {lo} to {hi}{what}", v)
    return v


def check_num(key: str, v: Any, lo: float, hi: float, what: str = "") -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise fail(key, f"a number from {lo:g} to {hi:g}{what}", v)
    return float(v)


def check_bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise fail(key, "true or false", v)
    return v


def check_choice(key: str, v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise fail(key, "one of " + ", ".join(f'"{c}"' for c in choices), v)
    return v


def check_list(key: str, v: Any) -> list:
    if not isinstance(v, list):
        raise fail(key, "a list [...]", v)
    return v


def check_channels(key: str, v: Any) -> tuple[int, ...]:
    out = tuple(check_int(f"{key}[{i}]", x, 1, MAX_CHANNELS, " (a 1-based channel number)")
                for i, x in enumerate(check_list(key, v)))
    check_no_duplicates(key, out)
    return out


def check_no_duplicates(key: str, items: tuple) -> None:
    seen = set()
    for x in items:
        if x in seen:
            raise ConfigError(f"{key}: expected each entry once, found {x!r} twice")
        seen.add(x)


def check_bcm_pins(pins: Any, key: str = "pins") -> tuple[int, ...]:
    """BCM numbers 0..27 without duplicates; shared with pi.outputs.base so both say the same."""
    out = []
    for i, pin in enumerate(check_list(key, pins)):
        if isinstance(pin, bool) or not isinstance(pin, int) or pin not in BCM_PINS:
            raise ConfigError(f"{key}[{i}]: expected a BCM GPIO number from 0 to 27, "
                              f"found {_describe(pin)}")
        if pin in out:
            raise ConfigError(f"{key}[{i}]: GPIO {pin} is listed twice; expected each pin "
                              f"once (channel {out.index(pin) + 1} already uses it)")
        out.append(pin)
    if not out:
        raise ConfigError(f"{key}: expected at least one BCM pin, found an empty list")
    return tuple(out)


def check_str(key: str, v: Any, expected: str) -> str:
    if not isinstance(v, str):
        raise fail(key, expected, v)
    return v


def check_device(key: str, v: Any) -> str | int:
    if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise fail(key, 'a device name (substring), an index >= 0, or "" for the default', v)


def check_strings(key: str, v: Any) -> tuple[str, ...]:
    out = tuple(check_list(key, v))
    for i, x in enumerate(out):
        if not isinstance(x, str) or not x:
            raise fail(f"{key}[{i}]", "a non-empty path string", x)
    return out


def check_latency(key: str, v: Any) -> float | str:
    if v == "auto":
        return v
    if isinstance(v, str):
        raise fail(key, '"auto" or a number of milliseconds', v)
    return check_num(key, v, -1000, 1000, ' (milliseconds) or "auto"')


def check_addresses(key: str, v: Any) -> tuple[int, ...]:
    out = tuple(check_int(f"{key}[{i}]", x, 1, DMX_SLOTS, " (a DMX address)")
                for i, x in enumerate(check_list(key, v)))
    check_no_duplicates(key, out)
    return out


def check_ipv4(key: str, v: Any, *, keyword: str) -> str:
    """An IPv4 address for unicast, or `keyword` ("multicast" or "")."""
    expected = (f'"{keyword}" or an IPv4 address such as "192.168.1.50"' if keyword else
                'an IPv4 address such as "192.168.1.20", or "" for every interface')
    if v == keyword:
        return v
    try:
        ip = ipaddress.IPv4Address(check_str(key, v, expected))
    except ValueError:
        raise fail(key, expected, v) from None
    if ip.is_multicast or ip.is_unspecified:
        raise fail(key, expected + " (not a multicast or 0.0.0.0 address: E1.31 picks the "
                    "multicast group from the universe)", v)
    return v


def sender_id(text: str) -> tuple[str, str] | None:
    """An ``allowed_senders`` entry as ("cid", canonical UUID) or ("address", IPv4), or None.
    Shared with pi/audio/sacn_receiver.py, so the config and the receiver read entries alike."""
    import uuid

    try:
        return "address", str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    try:
        return "cid", str(uuid.UUID(text))
    except ValueError:
        return None


def check_senders(key: str, v: Any) -> tuple[str, ...]:
    out, seen = [], {}
    for i, x in enumerate(check_list(key, v)):
        ident = sender_id(x) if isinstance(x, str) else None
        if ident is None:
            raise fail(f"{key}[{i}]", 'a sender CID such as "6ba7b810-9dad-11d1-80b4-'
                        '00c04fd430c8" (as the receiver logs it) or an IPv4 address such as '
                        '"192.168.1.20"', x)
        if ident in seen:
            raise ConfigError(f"{key}[{i}]: expected each sender once, found {_toml(x)}, the "
                              f"same as entry {seen[ident]}")
        seen[ident] = i
        out.append(x)
    return tuple(out)


def check_source_name(key: str, v: Any) -> str:
    if not isinstance(v, str) or not 1 <= len(v.encode("utf-8")) <= 63:
        raise fail(key, "a name of 1 to 63 UTF-8 bytes", v)
    return v


def check_pwm(key: str, v: Any) -> int:
    if v == 0:
        return 0
    return check_int(key, v, 50, 2000, " Hz, or 0 for plain on/off")


def check_auto_int(lo: int, hi: int, what: str):
    """"auto" (the relay kind's default) or an integer in range."""
    def check(key: str, v: Any) -> int | str:
        if v == "auto":
            return v
        if isinstance(v, str):
            raise fail(key, f'"auto" or an integer from {lo} to {hi}{what}', v)
        return check_int(key, v, lo, hi, what + ' or "auto"')
    return check
