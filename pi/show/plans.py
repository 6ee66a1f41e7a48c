"""Playlist mode's look-ahead: each song's show planned before it plays, and kept on disk.

The daemon plays songs it has in full, so it plans the *next* song (decode -> features ->
encoder -> pi/show/lookahead.py) in a background thread while the current one plays, and keeps the
plan in a cache folder, keyed by the song (its path, size and modification time) and by the
show (the sha256 of the bundle's files, and every setting the plan depends on): a song played
again, or after a restart, needs no analysis; a new bundle or a changed setting is a miss.

A plan is exactly what ``lightshow render`` writes for the song: the same frames, states and
dimmer levels (pi/offline/render.py, ``lookahead=True``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pi.files import atomic_write
from pi.show.bundle import MANIFEST_NAME, NPZ_NAME, sha256_file
from pi.show.lookahead import DEFAULT_LOOKAHEAD, LookaheadParams
from pi.show.pipeline import ModelShow, Show, ShowFrames

log = logging.getLogger(__name__)

PLAN_FORMAT = 5     # bump when a plan's meaning changes: old files are then misses
KEEP_PLANS = 512    # the cache keeps this many songs' plans, the most recently used
SUFFIX = ".plan.npz"


def default_cache_dir() -> Path:
    """systemd's ``CacheDirectory`` ($CACHE_DIRECTORY) for the service, else
    ``$XDG_CACHE_HOME/lightshow/plans`` (``~/.cache/lightshow/plans``)."""
    service = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if service:
        return Path(service) / "plans"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightshow" / "plans"


def show_key(show: Show, params: LookaheadParams = DEFAULT_LOOKAHEAD) -> str:
    """A digest of everything a plan depends on besides the song: the bundle's files, the
    show's kind and settings, the planner's parameters and the plan format."""
    mapper = show.mapper
    parts = {"format": PLAN_FORMAT, "show": type(show).__name__, "name": show.name,
             "features": show.feature_params.as_dict(), "lookahead": asdict(params),
             "hold_s": mapper.hold_s,
             "silence_db": mapper.params.silence_db, "overrides": asdict(mapper.overrides),
             "guard": None if show.guard is None else [show.guard.max_per_s,
                                                      show.guard.hold_s]}
    if isinstance(show, ModelShow):
        folder = show.bundle.path
        parts["bundle"] = [sha256_file(folder / MANIFEST_NAME), sha256_file(folder / NPZ_NAME)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class PlanCache:
    """Plans on disk, one ``<key>.plan.npz`` per song and show (no pickle): the states as
    bits and the dimmer levels, about 10 kB for a 3-minute song."""

    def __init__(self, folder: str | Path, *, show_digest: str, keep: int = KEEP_PLANS):
        self.folder, self.show_digest, self.keep = Path(folder), show_digest, keep

    def key(self, song: Path) -> str:
        st = Path(song).stat()
        ident = f"{Path(song).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{self.show_digest}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def load(self, song: Path) -> ShowFrames | None:
        """The song's plan, or None (not planned with this show, or unreadable)."""
        try:
            path = self.folder / (self.key(song) + SUFFIX)
            with np.load(path, allow_pickle=False) as z:
                n, k = (int(v) for v in z["shape"])
                states = np.unpackbits(z["states"], axis=1, count=k,
                                       bitorder="little").astype(bool)[:n]
                # Playback needs no activations: not kept (they would be most of the file).
                plan = ShowFrames(states, np.zeros(states.shape, np.float32),
                                  z["levels"].astype(np.float64))
            os.utime(path)  # recently used: kept longest
            return plan
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("plan cache: ignoring the plan of %s: %s", song, exc)
            return None

    def store(self, song: Path, plan: ShowFrames) -> None:
        """Write atomically (a temporary file renamed into place), then drop the oldest
        plans beyond ``keep``. A cache that cannot be written is logged, not fatal."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / (self.key(song) + SUFFIX)
            states = np.asarray(plan.states, bool)
            with atomic_write(path) as f:
                np.savez_compressed(f, shape=np.array(states.shape),
                                    states=np.packbits(states, axis=1, bitorder="little"),
                                    levels=np.asarray(plan.levels, np.float32))
            self._prune()
        except OSError as exc:
            log.warning("plan cache: cannot keep the plan of %s in %s: %s", song, self.folder,
                        exc)

    def _prune(self) -> None:
        plans = sorted(self.folder.glob("*" + SUFFIX), key=lambda p: p.stat().st_mtime_ns)
        for old in plans[:max(0, len(plans) - self.keep)]:
            old.unlink(missing_ok=True)


def plan_song(song: Path, show: Show) -> ShowFrames:
    """The song's look-ahead show, exactly as ``lightshow render`` makes it."""
    from pi.offline.render import render_song

    timeline = render_song(song, show, levels=True, lookahead=True)
    # Playback needs no activations (as a plan loaded from the cache): not kept.
    states = timeline.states
    return ShowFrames(states, np.zeros(states.shape, np.float32), timeline.levels)


class Planner:
    """Plans songs in a background thread, through the cache.

    ``request(song)`` queues a song (at most once); ``get(song)`` returns its plan when it
    is ready (``wait_s``: or waits for it that long); ``ready(song)`` says whether it is,
    cheaply, for a loop to ask each block. ``plan`` may be replaced (tests)."""

    def __init__(self, show: Show, *, cache: PlanCache | None, plan=plan_song):
        self.show, self.cache, self.plan = show, cache, plan
        self._lock = threading.Lock()
        self._done: dict[Path, ShowFrames | None] = {}  # None: could not be planned
        self._events: dict[Path, threading.Event] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def request(self, song: Path | None) -> None:
        if song is None:
            return
        with self._lock:
            if song in self._events:
                return
            self._events[song] = threading.Event()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="planner",
                                                daemon=True)
                self._thread.start()
        self._queue.put(song)

    def ready(self, song: Path) -> bool:
        """Whether ``get(song)`` has its answer (a plan, or None for a song that could not be
        planned) without waiting or reading the cache."""
        event = self._events.get(song)
        return event is not None and event.is_set()

    def get(self, song: Path, *, wait_s: float = 0.0) -> ShowFrames | None:
        self.request(song)
        event = self._events[song]
        if wait_s > 0:
            event.wait(wait_s)
        if not event.is_set():
            # A cached plan is ready now: the worker may still be busy with another song.
            plan = self.cache.load(song) if self.cache else None
            if plan is None:
                return None
            with self._lock:
                self._done[song] = plan
            event.set()
        with self._lock:
            return self._done.get(song)

    def forget(self, keep: set[Path]) -> None:
        """Drop finished plans of songs not in ``keep`` (memory: a plan is ~1 MB/hour)."""
        with self._lock:
            for song in [s for s, e in self._events.items() if e.is_set() and s not in keep]:
                self._events.pop(song)
                self._done.pop(song, None)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _work(self) -> None:
        while (song := self._queue.get()) is not None:
            plan = self.cache.load(song) if self.cache else None
            if plan is None:
                try:
                    plan = self.plan(song, self.show)
                except Exception as exc:  # noqa: BLE001 - a bad song must not stop the thread
                    log.warning("cannot plan %s ahead (the causal show will play it): %s",
                                song, exc)
                if plan is not None and self.cache:
                    self.cache.store(song, plan)
            with self._lock:
                self._done[song] = plan
                event = self._events.get(song)
            if event is not None:
                event.set()
