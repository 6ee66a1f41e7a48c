"""The config file as the panel edits it: the common keys, through the same strict checker as
`lightshow check-config` (pi/config/load.py), written atomically with its comments kept.

An edit changes only the ``key = value`` lines it is about (or adds them to their section).
The new text is parsed again and must give exactly the intended values before it replaces the
file (temporary file in the same folder, fsync, rename): a half-written or unexpected config
never reaches the daemon.
"""
from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pi.config.load import MAPPERS, SOURCES, Config, ConfigError
from pi.config.panel import DAYS
from pi.files import atomic_write

# key -> kind: how a form's value becomes a TOML value before the checker sees it.
EDITABLE: dict[str, Any] = {
    "audio.source": list(SOURCES),
    "audio.device": "device",
    "audio.shuffle": "bool",
    "audio.repeat": "bool",
    "model.mapper": list(MAPPERS),
    "show.hold_ms": "int",
    "show.silence_db": "num",
    "show.latency_ms": "auto_num",
    "show.look_ahead": "bool",
    "schedule.enabled": "bool",
    "schedule.days": "days",
    "schedule.on": "str",
    "schedule.off": "str",
    "schedule.latitude": "num",
    "schedule.longitude": "num",
    "schedule.timezone": "str",
}
SCHEDULE_KEYS = [k for k in EDITABLE if k.startswith("schedule.")]


def flat_values(cfg: Config) -> dict[str, Any]:
    """Every key of the config as ``{"section.key": value}`` (lists for tuples)."""
    out: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = list(v) if isinstance(v, tuple) else v
    walk(cfg.to_dict(), "")
    return out


def _coerce(kind: Any, v: Any) -> Any:
    """A form value as the kind wants it; anything else goes to the checker unchanged, so the
    refusal is the checker's own message."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    try:
        if kind == "int" and re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        if kind in ("num", "auto_num") and s != "auto":
            return int(s) if re.fullmatch(r"[+-]?\d+", s) else float(s)
        if kind == "bool" and s in ("true", "false"):
            return s == "true"
        if kind == "device" and s.isdigit():
            return int(s)
        if kind == "days":
            return [d.strip() for d in s.split(",") if d.strip()]
    except ValueError:
        pass
    return v


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {v!r} as TOML")


def _scan(line: str) -> tuple[int, str]:
    """The line's bracket depth change and its trailing comment, strings aside."""
    depth, quote = 0, None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return depth, line[i:].rstrip("\r\n")
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
    return depth, ""


def set_line(text: str, section: str, key: str, value: str) -> str:
    """`text` with ``key = value`` in ``[section]``: the old line (and its continuation lines
    for a multi-line list) replaced, or a new line at the section's end, or a new section."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]\s*(#.*)?$")
    start = next((i for i, ln in enumerate(lines) if header.match(ln)), None)
    if start is None:
        return "".join(lines) + f"\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines))
                if re.match(r"^\s*\[", lines[i])), len(lines))
    pat = re.compile(r"^(\s*)" + re.escape(key) + r"\s*=")
    for i in range(start + 1, end):
        m = pat.match(lines[i])
        if m:
            (depth, comment), j = _scan(lines[i]), i
            while depth > 0 and j + 1 < end:
                j += 1
                depth += _scan(lines[j])[0]
            keep = f"  {comment}" if comment and j == i else ""  # "hold_ms = 100  # why"
            lines[i:j + 1] = [f"{m.group(1)}{key} = {value}{keep}\n"]
            return "".join(lines)
    last = max((i for i in range(start, end) if lines[i].strip()), default=start)
    lines.insert(last + 1, f"{key} = {value}\n")
    return "".join(lines)


def edit_config(path: str | Path, changes: dict[str, Any]) -> Config:
    """Apply ``{"section.key": value}`` to the file; ConfigError (the checker's message) and
    nothing written when a key is not editable or a value is refused."""
    path = Path(path)
    for key in changes:
        if key not in EDITABLE:
            raise ConfigError(f"{key}: not editable in the panel; expected one of "
                              f"{', '.join(EDITABLE)} (edit the file for the rest)")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: expected valid TOML, found a syntax error: {exc}") from None
    want = copy.deepcopy(data)
    values = {k: _coerce(EDITABLE[k], v) for k, v in changes.items()}
    for key, v in values.items():
        *sections, name = key.split(".")
        d = want
        for s in sections:
            d = d.setdefault(s, {})
        d[name] = v
    cfg = Config.from_dict(want)  # the checker: refuses with its message
    for key, v in values.items():
        section, name = key.rsplit(".", 1)
        text = set_line(text, section, name, _toml_value(v))
    try:
        same = tomllib.loads(text) == want
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise ConfigError(f"{path}: the panel could not edit the file in place (unusual "
                          f"layout); nothing changed. Edit it by hand.")
    _replace(path, text)
    return cfg


def _replace(path: Path, text: str) -> None:
    try:  # an edit keeps the file's permissions
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    with atomic_write(path, "w", encoding="utf-8", file_mode=mode) as f:
        f.write(text)


def schedule_info(cfg: Config, now: float) -> dict:
    """The schedule's keys, and whether the show is on now and its next start and stop."""
    s = cfg.schedule
    out = {"values": {k: flat_values(cfg)[k] for k in SCHEDULE_KEYS}, "days": list(DAYS)}
    if not s.enabled:
        return {**out, "on_now": None, "next_start": None, "next_stop": None}
    from pi.daemon.schedule import Schedule

    sched = Schedule.from_config(s)
    start, stop = sched.next_changes(now)
    return {**out, "on_now": sched.is_on(now), "zone": str(sched.zone),
            "next_start": start.isoformat(timespec="minutes") if start else None,
            "next_stop": stop.isoformat(timespec="minutes") if stop else None}
