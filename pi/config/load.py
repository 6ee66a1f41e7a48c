"""The appliance's TOML config: documented defaults, strict checking, errors that name the key.

systemd/config.toml is the documented copy of the defaults (a test keeps the two equal).
Stdlib only: `lightshow check-config` must work before numpy or audio libraries load.
"""
from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The value checkers are public in pi.config.values; the rest of pi/ imports them from there.
from pi.config import MAPPERS, OUTPUT_NAMES, SOURCES  # noqa: F401 - public here too
from pi.net import e131
from pi.config.values import (DMX_SLOTS, MAX_CHANNELS, RELAY_DEFAULTS, RELAY_KINDS, ConfigError,
                              check_addresses, check_auto_int, check_bcm_pins, check_bool,
                              check_channels, check_choice, check_device, check_int, check_ipv4,
                              check_latency, check_list, check_no_duplicates, check_num, check_pwm,
                              check_senders, check_source_name, check_str, check_strings, fail)
from pi.config.panel import CHECKS as PANEL_CHECKS
from pi.config.panel import ControlConfig, ScheduleConfig, WebConfig
from pi.config.panel import check_cross as _check_panel

MIN_HOLD_MS = 50  # below this, mechanical relays chatter and wear out; SSRs don't care


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
    look_ahead: bool = True


@dataclass(frozen=True)
class RPiGPIOConfig:
    pins: tuple[int, ...] = (17, 18, 27, 22, 23, 24, 25, 4)
    active_low: bool = True
    channels: tuple[int, ...] = ()
    pwm_hz: int = 0
    relay: str = "mechanical"
    max_toggles_per_s: int | str = "auto"
    rated_switchings: int | str = "auto"
    switch_counts: str = "auto"


@dataclass(frozen=True)
class SACNOutputConfig:
    universe: int = 1
    start_address: int = 1
    channels: tuple[int, ...] = ()
    destination: str = "multicast"
    port: int = e131.PORT
    priority: int = 100
    source_name: str = "lightshow"
    fps: int = 40
    dimmer: bool = False


@dataclass(frozen=True)
class MockConfig:
    record: str = ""


@dataclass(frozen=True)
class OutputsConfig:
    enabled: tuple[str, ...] = ("rpigpio",)
    rpigpio: RPiGPIOConfig = field(default_factory=RPiGPIOConfig)
    sacn: SACNOutputConfig = field(default_factory=SACNOutputConfig)
    mock: MockConfig = field(default_factory=MockConfig)


@dataclass(frozen=True)
class SACNSourceConfig:
    universe: int = 1
    addresses: tuple[int, ...] = ()
    timeout_s: float = 2.5
    port: int = e131.PORT
    interface: str = ""
    multicast: bool = True
    allowed_senders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    show: ShowConfig = field(default_factory=ShowConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    sacn_source: SACNSourceConfig = field(default_factory=SACNSourceConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    web: WebConfig = field(default_factory=WebConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build and check a Config from parsed TOML; missing keys take their defaults."""
        cfg = _build(cls, d, "")
        _check_cross(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- generic section walking ---------------------------------------------------------------

def _build(cls: type, d: Any, prefix: str) -> Any:
    name = prefix.rstrip(".") or "the config"
    if not isinstance(d, dict):
        raise fail(name, "a table", d)
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


def _enabled(key: str, v: Any) -> tuple[str, ...]:
    out = tuple(check_choice(f"{key}[{i}]", x, OUTPUT_NAMES) for i, x in enumerate(check_list(key, v)))
    if not out:
        raise fail(key, "at least one of " + ", ".join(OUTPUT_NAMES), v)
    check_no_duplicates(key, out)
    return out


_CHECKS = {
    "audio.source": lambda k, v: check_choice(k, v, SOURCES),
    "audio.device": check_device,
    "audio.playlist": check_strings,
    "audio.shuffle": check_bool,
    "audio.repeat": check_bool,
    "audio.block_ms": lambda k, v: check_int(k, v, 5, 200, " (milliseconds)"),
    "model.path": lambda k, v: check_str(k, v, 'a bundle folder path, or "" for the shipped model'),
    "model.mapper": lambda k, v: check_choice(k, v, MAPPERS),
    "show.channels": lambda k, v: check_int(k, v, 1, MAX_CHANNELS),
    "show.hold_ms": lambda k, v: check_int(k, v, MIN_HOLD_MS, 10_000,
                                      " (milliseconds; under 50 wears out relays)"),
    "show.silence_db": lambda k, v: check_num(k, v, -120, 0, " (dBFS)"),
    "show.invert": check_channels,
    "show.always_on": check_channels,
    "show.always_off": check_channels,
    "show.latency_ms": check_latency,
    "show.look_ahead": check_bool,
    "outputs.enabled": _enabled,
    "outputs.rpigpio.pins": lambda k, v: check_bcm_pins(v, k),
    "outputs.rpigpio.active_low": check_bool,
    "outputs.rpigpio.channels": check_channels,
    "outputs.rpigpio.pwm_hz": check_pwm,
    "outputs.rpigpio.relay": lambda k, v: check_choice(k, v, RELAY_KINDS),
    "outputs.rpigpio.max_toggles_per_s": check_auto_int(1, 50, " switchings per second"),
    "outputs.rpigpio.rated_switchings": check_auto_int(0, 10**12, " (0: not counted against)"),
    "outputs.rpigpio.switch_counts": lambda k, v: check_str(k, v, 'a JSON file path, "auto", or '
                                                       '"" for no counting'),
    "outputs.sacn.universe": lambda k, v: check_int(k, v, *e131.UNIVERSES),
    "outputs.sacn.start_address": lambda k, v: check_int(k, v, 1, DMX_SLOTS, " (a DMX address)"),
    "outputs.sacn.channels": check_channels,
    "outputs.sacn.destination": lambda k, v: check_ipv4(k, v, keyword="multicast"),
    "outputs.sacn.port": lambda k, v: check_int(k, v, 1, 65535),
    "outputs.sacn.priority": lambda k, v: check_int(k, v, *e131.PRIORITIES),
    "outputs.sacn.source_name": check_source_name,
    "outputs.sacn.fps": lambda k, v: check_int(k, v, 1, 44, " (DMX512 refreshes at most 44 times "
                                          "a second)"),
    "outputs.sacn.dimmer": check_bool,
    "outputs.mock.record": lambda k, v: check_str(k, v, 'a JSONL file path, or "" for memory only'),
    "sacn_source.universe": lambda k, v: check_int(k, v, *e131.UNIVERSES),
    "sacn_source.addresses": check_addresses,
    "sacn_source.timeout_s": lambda k, v: check_num(k, v, 1, 10, " seconds (E1.31 says 2.5)"),
    "sacn_source.port": lambda k, v: check_int(k, v, 1, 65535),
    "sacn_source.interface": lambda k, v: check_ipv4(k, v, keyword=""),
    "sacn_source.multicast": check_bool,
    "sacn_source.allowed_senders": check_senders,
    **PANEL_CHECKS,
}


def _check_cross(cfg: Config) -> None:
    """Constraints between keys, after each key is valid on its own."""
    _check_panel(cfg)
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
    for name in ("rpigpio", "sacn"):
        for ch in getattr(cfg.outputs, name).channels:
            if ch > n:
                raise ConfigError(f"outputs.{name}.channels: channel {ch} does not exist; "
                                  f"expected channel numbers from 1 to show.channels = {n}")
    g = cfg.outputs.rpigpio
    if "rpigpio" in cfg.outputs.enabled and len(g.pins) != len(g.channels or range(n)):
        what = (f"outputs.rpigpio.channels lists {len(g.channels)}" if g.channels else
                f"show.channels = {n}")
        raise ConfigError(f"outputs.rpigpio.pins: expected one pin per channel ({what}), "
                          f"found {len(g.pins)} pins")
    if g.pwm_hz and g.relay == "mechanical":
        raise ConfigError(f"outputs.rpigpio.pwm_hz = {g.pwm_hz}: software PWM would chatter "
                          f'mechanical relays to death; expected relay = "ssr" (solid-state '
                          f"or MOSFET boards) with PWM, or pwm_hz = 0")
    o = cfg.outputs.sacn
    last = o.start_address + len(o.channels or range(n)) - 1
    if "sacn" in cfg.outputs.enabled and last > DMX_SLOTS:
        raise ConfigError(f"outputs.sacn.start_address: channels from address "
                          f"{o.start_address} would end at {last}; expected them to end by "
                          f"DMX address {DMX_SLOTS}")
    r = cfg.sacn_source
    if r.addresses and len(r.addresses) != n:
        raise ConfigError(f"sacn_source.addresses: expected one DMX address per channel "
                          f"(show.channels = {n}), found {len(r.addresses)}")
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
    except UnicodeDecodeError as exc:  # TOML is UTF-8; e.g. a Latin-1 editor's "ü"
        raise ConfigError(f"{path}: expected UTF-8 text (TOML), found byte "
                          f"0x{exc.object[exc.start]:02x} at offset {exc.start}; save the "
                          f"file as UTF-8") from None
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
    elif a.source == "sacn":
        r = cfg.sacn_source
        where = r.interface or "every interface"
        lines.append(f"  source:  sACN universe {r.universe} on {where}, port {r.port}"
                     f"{', multicast joined' if r.multicast else ''}; addresses "
                     + " ".join(f"ch{i + 1}={d}" for i, d in enumerate(sacn_addresses(cfg)))
                     + f"; lamps off after {r.timeout_s:g} s without data; senders: "
                     + (", ".join(r.allowed_senders) if r.allowed_senders else
                        "any (no sacn_source.allowed_senders)"))
    else:
        lines.append(f"  audio:   {a.source} of {len(a.playlist)} entr"
                     f"{'y' if len(a.playlist) == 1 else 'ies'}, shuffle {on_off[a.shuffle]}, "
                     f"repeat {on_off[a.repeat]}, device {device}, {a.block_ms} ms blocks")
    lines.append(f"  model:   {cfg.model.path or 'shipped default'}, mapper {cfg.model.mapper}")
    latency = "auto" if s.latency_ms == "auto" else f"{s.latency_ms:g} ms"
    lines.append(f"  show:    {s.channels} channels, hold {s.hold_ms} ms, silence below "
                 f"{s.silence_db:g} dB, latency {latency}, songs "
                 f"{'planned ahead' if s.look_ahead else 'as they play (causal)'}")
    for name in ("invert", "always_on", "always_off"):
        if getattr(s, name):
            lines.append(f"           {name}: channels {', '.join(map(str, getattr(s, name)))}")
    for name in o.enabled:
        if name == "rpigpio":
            g = o.rpigpio
            level = "active-low" if g.active_low else "active-high"
            pwm = f", software PWM at {g.pwm_hz} Hz" if g.pwm_hz else ""
            lines.append(f"  output:  rpigpio, {level}{pwm}, BCM pins "
                         + " ".join(f"ch{c}=GPIO{p}" for c, p in
                                    zip(g.channels or range(1, s.channels + 1), g.pins)))
            lines += _wear_summary(cfg)
        elif name == "sacn":
            d = o.sacn
            chans = d.channels or tuple(range(1, s.channels + 1))
            to = "multicast" if d.destination == "multicast" else f"unicast to {d.destination}"
            lines.append(f"  output:  sacn universe {d.universe} {to}, port {d.port}, "
                         f"priority {d.priority}, {d.fps} fps, "
                         f"{'dimmer levels' if d.dimmer else 'on/off as 0/255'}, as "
                         f"{d.source_name!r}; addresses "
                         + " ".join(f"ch{c}={d.start_address + i}" for i, c in
                                    enumerate(chans)))
        elif name == "mock":
            lines.append(f"  output:  mock, recording to {o.mock.record or 'memory'}")
        else:
            lines.append(f"  output:  {name}")
    if a.source in ("playlist", "file"):
        for entry in a.playlist:
            if not Path(entry).exists():
                lines.append(f"warning: audio.playlist: {entry} does not exist (yet)")
    if cfg.model.path and not Path(cfg.model.path).exists():
        lines.append(f"warning: model.path: {cfg.model.path} does not exist")
    if path is None:
        lines.append("note: these are the built-in defaults, as the service uses them; "
                     "`lightshow run` without --config draws the lamps in the terminal "
                     "instead and plays the playlist once")
    return "\n".join(lines)


def sacn_addresses(cfg: Config) -> tuple[int, ...]:
    """The DMX address each channel follows with the sacn source (1, 2, ... by default)."""
    return cfg.sacn_source.addresses or tuple(range(1, cfg.show.channels + 1))


def relay_limits(cfg: Config) -> tuple[int, int]:
    """``(max_toggles_per_s, rated_switchings)``: the keys, or the relay kind's defaults."""
    g = cfg.outputs.rpigpio
    d = RELAY_DEFAULTS[g.relay]
    return (d["max_toggles_per_s"] if g.max_toggles_per_s == "auto" else g.max_toggles_per_s,
            d["rated_switchings"] if g.rated_switchings == "auto" else g.rated_switchings)


def _wear_summary(cfg: Config) -> list[str]:
    from pi.outputs.wear import counts_path, wear_lines  # stdlib only, like this module

    g, n = cfg.outputs.rpigpio, cfg.show.channels
    max_toggles, rated = relay_limits(cfg)
    lines = [f"  relays:  {g.relay}, at most {max_toggles} switchings per second per channel"
             + (f", rated {rated} switchings" if rated else "")]
    path = counts_path(g.switch_counts)
    if path is None:
        lines.append("  wear:    not counted (outputs.rpigpio.switch_counts)")
        return lines
    chans = list(zip(g.channels or range(1, n + 1), (f"GPIO{p}" for p in g.pins)))
    return lines + wear_lines(path, chans, rated)
