"""Evaluation: render songs through a show and score them with the show metrics."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from pi.bundle import DEFAULT_BUNDLE, BundleError, load_bundle
from pi.decode import AudioFileError
from pi.metrics import reference_signals, show_metrics
from pi.render import render_blocks, render_song
from pi.show import Show, make_show

HEADLINE = ("fluxCorr", "dead", "corr_max", "toggles_per_s", "min_run_ms", "entropy_bits",
            "tail_off")


def evaluate_songs(paths, make: Callable[[], Show]) -> dict:
    """Per-song show metrics and their mean; ``make`` builds a fresh show for each song.
    A song that cannot be decoded is listed under ``skipped`` with the reason."""
    per_song, skipped = {}, {}
    for path in paths:
        try:
            timeline, audio = render_song(path, make(), keep_audio=True)
        except AudioFileError as exc:
            skipped[str(path)] = str(exc)
            continue
        per_song[str(path)] = show_metrics(audio, times_s=timeline.times_s,
                                           states=timeline.states)
    return {"mean": mean_metrics(per_song.values()), "songs": per_song, "skipped": skipped}


def evaluate_audio(songs: dict[str, np.ndarray], make: Callable[[], Show], *,
                   references: dict | None = None) -> dict:
    """Like :func:`evaluate_songs` for songs already decoded to mono at 44.1 kHz;
    ``references`` caches each song's :func:`pi.metrics.reference_signals` across calls."""
    per_song = {}
    for name, audio in songs.items():
        timeline = render_blocks([audio], make())
        ref = None
        if references is not None:
            ref = references.setdefault(name, reference_signals(audio))
        per_song[name] = show_metrics(audio, times_s=timeline.times_s, states=timeline.states,
                                      reference=ref)
    return {"mean": mean_metrics(per_song.values()), "songs": per_song}


def mean_metrics(metrics) -> dict:
    """Mean of each headline metric over songs, ignoring undefined (None) values; the worst
    min run, since one short run is what wears a relay."""
    metrics = list(metrics)
    out = {}
    for key in HEADLINE:
        vals = [m[key] for m in metrics if m.get(key) is not None]
        if not vals:
            out[key] = None
        elif key == "min_run_ms":
            out[key] = float(min(vals))
        else:
            out[key] = float(np.mean(vals))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training evaluate",
                                 description="Print the show metrics of a bundle as JSON.")
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped one)")
    ap.add_argument("--mapper", choices=("model", "bands"), default="model")
    ap.add_argument("songs", nargs="+")
    args = ap.parse_args(argv)
    if args.mapper == "model":
        # The daemon falls back to bands on a bad bundle; an evaluation must not silently
        # score something other than what was asked for.
        try:
            load_bundle(args.model or DEFAULT_BUNDLE)
        except BundleError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
    result = evaluate_songs([Path(s) for s in args.songs],
                            lambda: make_show(model=args.model, mapper=args.mapper))
    print(json.dumps(result, indent=2))
    for path, reason in result["skipped"].items():
        print(f"evaluate: skipped {reason}", file=sys.stderr)
    return 0 if result["songs"] else 1
