"""How worn each relay is: a switch counter per GPIO pin that survives restarts.

A cheap mechanical relay is rated for about 10^5 switchings; the counter tells the owner when
a channel has used most of that (a warning in the journal at ``WARN_SHARE``, and each
channel's share in ``lightshow check-config``), so a relay is swapped before it welds or
stops clicking. Counts are kept per pin, because the relay is wired to the pin.

The file is JSON, written atomically (a temporary file, fsync, rename), every ``FLUSH_S`` and
at exit: a crash or power cut loses at most the last minute's switchings, never the file.
Stdlib only: check-config reads it before numpy loads.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from pi.files import atomic_write

log = logging.getLogger(__name__)

FORMAT = 1
FLUSH_S = 60.0
WARN_SHARE = 0.8
STATE_DIR = "/var/lib/lightshow"
COUNTS_NAME = "relay-switchings.json"


def counts_path(setting: str) -> Path | None:
    """Where the counts live for ``outputs.rpigpio.switch_counts``: "auto" is the service's
    state folder ($STATE_DIRECTORY under systemd, else /var/lib/lightshow if it exists)."""
    if setting != "auto":
        return Path(setting) if setting else None
    folder = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or STATE_DIR
    return Path(folder) / COUNTS_NAME if Path(folder).is_dir() else None


def read_counts(path: str | Path) -> dict[str, int]:
    """``{"GPIO17": n, ...}`` from the file; {} if there is none yet. A damaged file raises
    ValueError naming it (the caller decides whether to start again)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: expected the relay switch counts (JSON), found {exc}") \
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: expected {{\"format\": {FORMAT}, ...}}, found "
                         f"{data!r:.80}")
    counts = data.get("switchings")
    if not isinstance(counts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in counts.items()):
        raise ValueError(f"{path}: switchings: expected {{\"GPIO17\": count, ...}}, found "
                         f"{counts!r:.80}")
    return dict(counts)


def write_counts(path: str | Path, counts: dict[str, int]) -> None:
    """Atomically replace the file: a reader (or a crash) sees the old counts or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, "switchings": counts}, indent=1, sort_keys=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


class SwitchCounter:
    """``count(old_states, new_states)`` after each write to the relays; ``flush()`` at exit.
    ``labels`` name the relays (``"GPIO17"``) in channel order."""

    def __init__(self, path: str | Path, labels: Sequence[str], *, rated: int = 0,
                 flush_s: float = FLUSH_S, clock: Callable[[], float] = time.monotonic):
        self.path, self.labels, self.rated = Path(path), list(labels), rated
        self.flush_s, self.clock = flush_s, clock
        try:
            self.counts = read_counts(self.path)
        except ValueError as exc:  # keep the damaged file for a human; count on from 0
            bad = self.path.with_name(self.path.name + ".damaged")
            log.error("%s; kept as %s, counting again from 0", exc, bad)
            try:
                os.replace(self.path, bad)
            except OSError:
                pass
            self.counts = {}
        for label in self.labels:
            self.counts.setdefault(label, 0)
        self._dirty = False
        self._next_flush = self.clock() + flush_s
        self._warned = {label for label in self.labels if self._worn(label)}
        for label in sorted(self._warned):
            self._warn(label)

    def _worn(self, label: str) -> bool:
        return self.rated > 0 and self.counts[label] >= WARN_SHARE * self.rated

    def _warn(self, label: str) -> None:
        n = self.counts[label]
        log.warning("relay on %s has switched %d times, %.0f%% of its rated %d: replace it "
                    "soon (outputs.rpigpio.rated_switchings)", label, n, 100 * n / self.rated,
                    self.rated)

    def count(self, old: Sequence[bool], new: Sequence[bool]) -> None:
        for label, a, b in zip(self.labels, old, new):
            if a != b:
                self.counts[label] += 1
                self._dirty = True
                if label not in self._warned and self._worn(label):
                    self._warned.add(label)
                    self._warn(label)
        if self._dirty and self.clock() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        self._next_flush = self.clock() + self.flush_s
        if not self._dirty:
            return
        try:
            write_counts(self.path, self.counts)
            self._dirty = False
        except OSError as exc:  # a full or read-only disk costs the count, never the show
            log.warning("cannot save the relay switch counts to %s: %s", self.path,
                        exc.strerror or exc)


def wear_lines(path: str | Path, channels: Sequence[tuple[int, str]], rated: int) -> list[str]:
    """check-config's lines: each channel's count and the share of its rated life used;
    ``channels`` are (channel number, relay label) pairs."""
    try:
        counts = read_counts(path)
    except ValueError as exc:
        return [f"warning: outputs.rpigpio.switch_counts: {exc}"]
    if not counts:
        return [f"  wear:    no switch counts yet in {path}"]
    out = [f"  wear:    switchings so far ({path}), rated {rated or 'not set'}:"]
    for ch, label in channels:
        n = counts.get(label, 0)
        share = f", {100 * n / rated:.1f}% of its life" if rated else ""
        flag = "  <- replace soon" if rated and n >= WARN_SHARE * rated else ""
        out.append(f"           ch{ch} ({label}): {n}{share}{flag}")
    return out


def find_counter(output) -> "SwitchCounter | None":
    """The relays' counter inside the daemon's outputs (through the control and subset
    wrappers), or None when the relays are not counted."""
    todo = [output]
    while todo:
        o = todo.pop()
        if isinstance(getattr(o, "counter", None), SwitchCounter):
            return o.counter
        todo += list(getattr(o, "outputs", ())) + [x for x in (getattr(o, "inner", None),)
                                                    if x is not None]
    return None


def wear_rows(counter: "SwitchCounter", channels: Sequence[int]) -> list[dict]:
    """For `lightshow ctl status`: each relay's channel, pin, switchings so far and the share
    of its rated life used (None when no rating is set); ``channels`` pair with the labels."""
    return [{"channel": ch, "relay": label, "switchings": counter.counts[label],
             "rated": counter.rated or None,
             "life_used": round(counter.counts[label] / counter.rated, 4) if counter.rated
             else None,
             "replace_soon": bool(counter.rated) and counter._worn(label)}
            for ch, label in zip(channels, counter.labels)]
