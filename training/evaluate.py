"""Evaluation: render songs through a show and score them with the show metrics and the
structure metrics (stemF where the song's stems are known)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from pi.show.bundle import DEFAULT_BUNDLE, BundleError, load_bundle
from pi.audio.decode import AudioFileError
from pi.offline.metrics import HEADLINE, mel_db, music_end_hop, onset_strength, show_metrics
from pi.offline.render import Timeline, render_blocks, render_song
from pi.show.features import normalise
from pi.show.mapping import MappingParams, ShowMapper
from pi.show.pipeline import Show, make_show
from pi.offline.structure import audio_ssm, structure_metrics
from training.corpus.stems import StemsError, load_stems, sidecar

def song_reference(audio: np.ndarray) -> dict:
    """The audio's side of every metric, computed once per song (one mel spectrogram)."""
    mel = mel_db(audio)
    end = music_end_hop(audio)
    return {"show": (onset_strength(audio, mel=mel), end),
            "structure": (audio_ssm(audio, mel=mel, end_hop=end), end)}


def score(audio: np.ndarray, timeline: Timeline, *, reference: dict | None = None,
          stems: dict | None = None) -> dict:
    """Show metrics and structure metrics of one rendered song."""
    ref = reference or song_reference(audio)
    out = show_metrics(audio, times_s=timeline.times_s, states=timeline.states,
                       reference=ref["show"])
    out.update(structure_metrics(audio, times_s=timeline.times_s, states=timeline.states,
                                 stems=stems, reference=ref["structure"]))
    return out


def evaluate_songs(paths, make: Callable[[], Show], *,
                   stems: dict[str, dict] | None = None, lookahead: bool = False) -> dict:
    """Per-song metrics and their mean; ``make`` builds a fresh show for each song, ``stems``
    maps a song's path to its stems, ``lookahead`` scores the show playlist mode plays
    (pi/show/lookahead.py) instead of the causal one. A song that cannot be decoded is listed
    under ``skipped`` with the reason."""
    per_song, skipped = {}, {}
    for path in paths:
        try:
            timeline, audio = render_song(path, make(), keep_audio=True, lookahead=lookahead)
        except AudioFileError as exc:
            skipped[str(path)] = str(exc)
            continue
        per_song[str(path)] = score(audio, timeline, stems=(stems or {}).get(str(path)))
    return {"mean": mean_metrics(per_song.values()), "songs": per_song, "skipped": skipped}


def evaluate_audio(songs: dict[str, np.ndarray], make: Callable[[], Show], *,
                   references: dict | None = None, stems: dict[str, dict] | None = None,
                   lookahead: bool = False) -> dict:
    """Like :func:`evaluate_songs` for songs already decoded to mono at 44.1 kHz;
    ``references`` caches each song's :func:`song_reference` across calls."""
    per_song = {}
    for name, audio in songs.items():
        timeline = render_blocks([audio], make(), lookahead=lookahead)
        ref = None
        if references is not None:
            if name not in references:
                references[name] = song_reference(audio)
            ref = references[name]
        per_song[name] = score(audio, timeline, reference=ref,
                               stems=(stems or {}).get(name))
    return {"mean": mean_metrics(per_song.values()), "songs": per_song}


def stems_for(songs: list[Path], given: list[str] | None) -> dict[str, dict]:
    """Each song's stems: the ``--stems`` files in song order, else a ``<song>.stems.json``
    beside the song where one exists."""
    if given and len(given) != len(songs):
        raise StemsError(f"--stems: expected one file per song ({len(songs)}), found "
                         f"{len(given)}")
    out = {}
    for i, song in enumerate(songs):
        path = Path(given[i]) if given else sidecar(song)
        if given or path.is_file():
            out[str(song)] = load_stems(path)
    return out


def mean_metrics(metrics) -> dict:
    """Mean of each headline metric over songs, ignoring undefined (None) values; the worst
    min run, since one short run is what wears a relay."""
    metrics = list(metrics)
    out = {}
    for key in (h.key for h in HEADLINE):
        vals = [m[key] for m in metrics if m.get(key) is not None]
        if not vals:
            out[key] = None
        elif key == "min_run_ms":
            out[key] = float(min(vals))
        else:
            out[key] = float(np.mean(vals))
    return out


def candidate_show(encoder, norm, mapping: MappingParams, params):
    """A show factory for a model that is not exported yet: the same mapper as the Pi's."""

    class CandidateShow(Show):
        name = "candidate"

        def activations(self, frames_db):
            return encoder(normalise(frames_db, mean=norm[0], std=norm[1]))

    return lambda: CandidateShow(ShowMapper(mapping, feature_params=params), params)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training evaluate",
                                 description="Print the show and structure metrics of a bundle "
                                             "as JSON: of the look-ahead show that playlist "
                                             "mode and render play, or with --causal of the "
                                             "line-in show.")
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped one)")
    ap.add_argument("--mapper", choices=("model", "bands"), default="model")
    ap.add_argument("--causal", action="store_true",
                    help="score the line-in show, decided from the past alone (default: the "
                         "look-ahead show that playlist mode plays)")
    ap.add_argument("--stems", action="append", metavar="FILE",
                    help="a song's stems for stemF: a MIDI file or a JSON of {stem: [onset "
                         "seconds]}; give one per song, in order (default: <song>.stems.json "
                         "beside each song, where it exists)")
    ap.add_argument("songs", nargs="+")
    args = ap.parse_args(argv)
    songs = [Path(s) for s in args.songs]
    try:
        stems = stems_for(songs, args.stems)
    except StemsError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    model = args.model
    if args.mapper == "model":
        # The daemon falls back to bands on a bad bundle; an evaluation must not silently
        # score something other than what was asked for. Loaded once, for every song.
        try:
            model = load_bundle(args.model or DEFAULT_BUNDLE)
        except BundleError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
    result = evaluate_songs(songs, lambda: make_show(model=model, mapper=args.mapper),
                            stems=stems, lookahead=not args.causal)
    result["show"] = "causal" if args.causal else "look-ahead"
    print(json.dumps(result, indent=2))
    for path, reason in result["skipped"].items():
        print(f"evaluate: skipped {reason}", file=sys.stderr)
    return 0 if result["songs"] else 1

