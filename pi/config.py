"""The appliance's TOML config: documented defaults, strict checking, errors that name the key.

systemd/config.toml is the documented copy of the defaults (a test keeps the two equal).
Stdlib only: `lightshow check-config` must work before numpy or audio libraries load.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCES = ("line-in", "playlist", "file")
MAPPERS = ("model", "bands")
OUTPUT_NAMES = ("rpigpio", "terminal", "mock")
MIN_HOLD_MS = 50  # below this, mechanical relays chatter and wear out; SSRs don't care
MAX_CHANNELS = 16
BCM_PINS = range(0, 28)  # the 40-pin header's GPIO 0..27 on every Pi since the B+


class ConfigError(Exception):
    """A config that cannot be used; the message names the key and what was expected."""


@dataclass(frozen=True)
class AudioConfig:
    source: str = "playlist"
    device: str | int = ""
    playlist: tuple[str, ...] = ("/var/lib/lightshow/music",)
    shuffle: bool = False
    repeat: bool = True
    block_ms: int = 20


@dataclass(frozen=True)
class ModelConfig:
    path: str = ""
    mapper: str = "model"


@dataclass(frozen=True)
class ShowConfig:
    channels: int = 8
    hold_ms: int = 100
    silence_db: float = -60.0
    invert: tuple[int, ...] = ()
    always_on: tuple[int, ...] = ()
    always_off: tuple[int, ...] = ()
    latency_ms: float | str = "auto"


@dataclass(frozen=True)
class RPiGPIOConfig:
    pins: tuple[int, ...] = (17, 18, 27, 22, 23, 24, 25, 4)
    active_low: bool = True


@dataclass(frozen=True)
class MockConfig:
    record: str = ""


@dataclass(frozen=True)
class OutputsConfig:
    enabled: tuple[str, ...] = ("rpigpio",)
    rpigpio: RPiGPIOConfig = field(default_factory=RPiGPIOConfig)
    mock: MockConfig = field(default_factory=MockConfig)


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    show: ShowConfig = field(default_factory=ShowConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build and check a Config from parsed TOML; missing keys take their defaults."""
        cfg = _build(cls, d, "")
        _check_cross(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- generic section walking ---------------------------------------------------------------

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


def _fail(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, found {_describe(value)}")


def _build(cls: type, d: Any, prefix: str) -> Any:
    name = prefix.rstrip(".") or "the config"
    if not isinstance(d, dict):
        raise _fail(name, "a table", d)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in d:
        if key not in fields:
            known = [prefix + k for k in fields]
            close = difflib.get_close_matches(prefix + key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key{hint}; expected one of "
                              f"{', '.join(known)}")
    values = {}
    for fname, f in fields.items():
        if fname not in d:
            continue
        key = prefix + fname
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            values[fname] = _build(type(default), d[fname], key + ".")
        else:
            values[fname] = _CHECKS[key](key, d[fname])
    return cls(**values)


def _int(key: str, v: Any, lo: int, hi: int, what: str = "") -> int:
    # bool is an int subclass in Python; `channels = true` is a mistake, not 1.
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(key, f"an integer from {lo} to {hi}{what}", v)
    return v


def _num(key: str, v: Any, lo: float, hi: float, what: str = "") -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise _fail(key, f"a number from {lo:g} to {hi:g}{what}", v)
    return float(v)


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(key, "true or false", v)
    return v


def _choice(key: str, v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise _fail(key, "one of " + ", ".join(f'"{c}"' for c in choices), v)
    return v


def _list(key: str, v: Any) -> list:
    if not isinstance(v, list):
        raise _fail(key, "a list [...]", v)
    return v


def _channels(key: str, v: Any) -> tuple[int, ...]:
    out = tuple(_int(f"{key}[{i}]", x, 1, MAX_CHANNELS, " (a 1-based channel number)")
                for i, x in enumerate(_list(key, v)))
    _no_duplicates(key, out)
    return out


def _no_duplicates(key: str, items: tuple) -> None:
    seen = set()
    for x in items:
        if x in seen:
            raise ConfigError(f"{key}: expected each entry once, found {x!r} twice")
        seen.add(x)


def check_bcm_pins(pins: Any, key: str = "pins") -> tuple[int, ...]:
    """BCM numbers 0..27 without duplicates; shared with pi.outputs so both say the same."""
    out = []
    for i, pin in enumerate(_list(key, pins)):
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


def _str(key: str, v: Any, expected: str) -> str:
    if not isinstance(v, str):
        raise _fail(key, expected, v)
    return v


def _device(key: str, v: Any) -> str | int:
    if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise _fail(key, 'a device name (substring), an index >= 0, or "" for the default', v)


def _strings(key: str, v: Any) -> tuple[str, ...]:
    out = tuple(_list(key, v))
    for i, x in enumerate(out):
        if not isinstance(x, str) or not x:
            raise _fail(f"{key}[{i}]", "a non-empty path string", x)
    return out


def _latency(key: str, v: Any) -> float | str:
    if v == "auto":
        return v
    if isinstance(v, str):
        raise _fail(key, '"auto" or a number of milliseconds', v)
    return _num(key, v, -1000, 1000, ' (milliseconds) or "auto"')


def _enabled(key: str, v: Any) -> tuple[str, ...]:
    out = tuple(_choice(f"{key}[{i}]", x, OUTPUT_NAMES) for i, x in enumerate(_list(key, v)))
    if not out:
        raise _fail(key, "at least one of " + ", ".join(OUTPUT_NAMES), v)
    _no_duplicates(key, out)
    return out


_CHECKS = {
    "audio.source": lambda k, v: _choice(k, v, SOURCES),
    "audio.device": _device,
    "audio.playlist": _strings,
    "audio.shuffle": _bool,
    "audio.repeat": _bool,
    "audio.block_ms": lambda k, v: _int(k, v, 5, 200, " (milliseconds)"),
    "model.path": lambda k, v: _str(k, v, 'a bundle folder path, or "" for the shipped model'),
    "model.mapper": lambda k, v: _choice(k, v, MAPPERS),
    "show.channels": lambda k, v: _int(k, v, 1, MAX_CHANNELS),
    "show.hold_ms": lambda k, v: _int(k, v, MIN_HOLD_MS, 10_000,
                                      " (milliseconds; under 50 wears out relays)"),
    "show.silence_db": lambda k, v: _num(k, v, -120, 0, " (dBFS)"),
    "show.invert": _channels,
    "show.always_on": _channels,
    "show.always_off": _channels,
    "show.latency_ms": _latency,
    "outputs.enabled": _enabled,
    "outputs.rpigpio.pins": lambda k, v: check_bcm_pins(v, k),
    "outputs.rpigpio.active_low": _bool,
    "outputs.mock.record": lambda k, v: _str(k, v, 'a JSONL file path, or "" for memory only'),
}


def _check_cross(cfg: Config) -> None:
    """Constraints between keys, after each key is valid on its own."""
    n = cfg.show.channels
    for name in ("invert", "always_on", "always_off"):
        for ch in getattr(cfg.show, name):
            if ch > n:
                raise ConfigError(f"show.{name}: channel {ch} does not exist; expected channel "
                                  f"numbers from 1 to show.channels = {n}")
    both = sorted(set(cfg.show.always_on) & set(cfg.show.always_off))
    if both:
        raise ConfigError(f"show.always_on and show.always_off: channel {both[0]} is in both; "
                          f"expected each channel in at most one of them")
    if "rpigpio" in cfg.outputs.enabled and len(cfg.outputs.rpigpio.pins) != n:
        raise ConfigError(f"outputs.rpigpio.pins: expected one pin per channel "
                          f"(show.channels = {n}), found {len(cfg.outputs.rpigpio.pins)} pins")
    if cfg.audio.source in ("playlist", "file") and not cfg.audio.playlist:
        raise ConfigError(f'audio.playlist: expected at least one file or folder for '
                          f'audio.source = "{cfg.audio.source}", found an empty list')


# --- public entry points --------------------------------------------------------------------

def load_config(path: str | Path | None) -> Config:
    """The config at `path`, or the defaults for None. Errors start with the file's path."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: expected a TOML config file, found nothing there") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: expected valid TOML, found a syntax error: {exc}") from None
    try:
        return Config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def check_config(path: str | Path | None) -> str:
    """Human summary for `lightshow check-config`; raises ConfigError when unusable."""
    cfg = load_config(path)
    a, s, o = cfg.audio, cfg.show, cfg.outputs
    on_off = {True: "on", False: "off"}
    device = "default" if a.device == "" else repr(a.device)
    lines = [f"{path if path is not None else '(built-in defaults)'}: OK"]
    if a.source == "line-in":
        lines.append(f"  audio:   line-in from device {device}, {a.block_ms} ms blocks")
    else:
        lines.append(f"  audio:   {a.source} of {len(a.playlist)} entr"
                     f"{'y' if len(a.playlist) == 1 else 'ies'}, shuffle {on_off[a.shuffle]}, "
                     f"repeat {on_off[a.repeat]}, device {device}, {a.block_ms} ms blocks")
    lines.append(f"  model:   {cfg.model.path or 'shipped default'}, mapper {cfg.model.mapper}")
    latency = "auto" if s.latency_ms == "auto" else f"{s.latency_ms:g} ms"
    lines.append(f"  show:    {s.channels} channels, hold {s.hold_ms} ms, silence below "
                 f"{s.silence_db:g} dB, latency {latency}")
    for name in ("invert", "always_on", "always_off"):
        if getattr(s, name):
            lines.append(f"           {name}: channels {', '.join(map(str, getattr(s, name)))}")
    for name in o.enabled:
        if name == "rpigpio":
            level = "active-low" if o.rpigpio.active_low else "active-high"
            lines.append(f"  output:  rpigpio, {level}, BCM pins "
                         + " ".join(f"ch{i + 1}=GPIO{p}" for i, p in enumerate(o.rpigpio.pins)))
        elif name == "mock":
            lines.append(f"  output:  mock, recording to {o.mock.record or 'memory'}")
        else:
            lines.append(f"  output:  {name}")
    if a.source != "line-in":
        for entry in a.playlist:
            if not Path(entry).exists():
                lines.append(f"warning: audio.playlist: {entry} does not exist (yet)")
    if cfg.model.path and not Path(cfg.model.path).exists():
        lines.append(f"warning: model.path: {cfg.model.path} does not exist")
    return "\n".join(lines)
