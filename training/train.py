"""``make train``: a music library -> trained autoencoders -> an exported, evaluated bundle."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pi.show.bundle import pack_arrays, write_bundles
from pi.audio.decode import read_song
from pi.show.features import DEFAULT_PARAMS, fit_normalisation, normalise
from pi.show.encoder import NumpyEncoder
from pi.show.mapping import MappingParams
from pi.offline.metrics import HEADLINE, Headline
from pi.offline.render import render_blocks
from pi.show.pipeline import BandsShow
from training.corpus import demo as corpus, ingest
from training.models import end_detector
from training.models.pca import (describe_baselines, fit_pca, pca_mse,
                                 side_information_baselines)
from training.evaluate import candidate_show, evaluate_audio
from training.corpus.stems import load_stems, sidecar

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = ROOT / ".cache" / "demo-corpus"
EPOCHS, BATCH_FRAMES, LEARNING_RATE, SCHEDULE = 16, 2048, 2e-3, "plateau"


@dataclass
class Corpus:
    """Step 1's result: the songs with their features, and what the manifest says of them."""

    source: str
    annotations: str | None
    songs: list
    summary: dict
    feature_s: float
    audio_s: float


@dataclass
class Trimmed:
    """Step 2's result: the end detector, and each split's frames without endings."""

    detector: end_detector.EndDetector
    end_report: dict
    trim_report: dict
    train: list
    val: list
    train_frames: list
    val_frames: list


@dataclass
class Data:
    """Step 3's input: runs of consecutive normalised frames ``[shape=(n, length, 513)]`` with
    their timbre targets, the PCA baseline, and the validation songs."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    norm: tuple
    pca: tuple
    mse_pca: float
    baselines: dict  # what PCA-k does with the decoder's side information (frame t - 1)
    val_audio: dict
    val_stems: dict


def load_corpus(args, params) -> Corpus:
    """Step 1: the music library (or the generated demo corpus) -> cached features."""
    if args.music_dir:
        roots, source = [Path(args.music_dir)], f"music library {args.music_dir}"
    else:
        corpus.generate_corpus(DEMO_CORPUS, n_songs=args.demo_songs, seconds=40.0, seed=0)
        roots, source = [DEMO_CORPUS], "generated demo corpus (training/corpus/demo.py, seed 0)"
    annotations = args.annotations or next(
        (str(r / "annotations.csv") for r in roots if (r / "annotations.csv").is_file()), None)
    paths = ingest.scan_library(*roots, exclude=args.exclude)
    t0 = time.perf_counter()
    songs, skipped = ingest.load_library(paths, cache_dir=Path(args.cache_dir), params=params)
    feature_s = time.perf_counter() - t0
    summary = ingest.corpus_summary(songs, skipped)
    audio_s = sum(s.duration_s for s in songs)
    print(f"corpus: {summary['n_songs']} songs, {summary['total_minutes']:.1f} min, "
          f"{summary['n_skipped']} skipped; features {audio_s / max(feature_s, 1e-9):.0f} s "
          f"of audio per wall second")
    for item in summary["skipped"]:
        print(f"  skipped {item['file']}: {item['reason']}")
    if len(songs) < 2:
        raise SystemExit(f"train: expected at least 2 usable songs, found {len(songs)}")
    return Corpus(source, annotations, songs, summary, feature_s, audio_s)


def trim_endings(songs, *, annotations, seed: int) -> Trimmed:
    """Step 2: split by song, fit the end detector on the training songs, and cut every
    song's ending and leading silence."""
    train, val = ingest.split_by_song(songs, val_fraction=0.2, seed=seed)
    detector = end_detector.EndDetector(random_state=seed).fit(
        *end_detector.training_frames(train, annotations=annotations, random_state=seed))
    end_report = detector.evaluate(val, annotations=annotations)
    print(f"end detector on {len(val)} validation songs: accuracy "
          f"{end_report['accuracy']:.3f} (naive {end_report['naive_accuracy']:.3f}), balanced "
          f"{end_report['balanced_accuracy']:.3f}, median |end error| "
          f"{end_report['end_abs_error_s_median']:.2f} s")
    train_frames, trim_report = end_detector.trim_library(
        train, end_times=[detector.detect_end_s(s) for s in train])
    val_frames, _ = end_detector.trim_library(
        val, end_times=[detector.detect_end_s(s) for s in val])
    total = trim_report["kept_s"] + trim_report["end_trimmed_s"] + trim_report["start_trimmed_s"]
    print(f"trimmed {trim_report['end_trimmed_s']:.0f} s of endings and "
          f"{trim_report['start_trimmed_s']:.0f} s of leading silence from {total:.0f} s")
    return Trimmed(detector, end_report, trim_report, train, val, train_frames, val_frames)


def prepare_data(t: Trimmed, *, max_frames: int, bottleneck: int, length: int,
                 seed: int = 0) -> Data:
    """Runs of normalised training and validation frames with their timbre targets (each
    song's own, over the whole trimmed song), the PCA baseline on the same frames, the
    validation audio and, where known, its stems (the demo corpus, MIDI renders) for stemF."""
    from training.models.autoencoders import song_sequences, timbre_targets

    # Neighbouring frames overlap by half, so an even stride loses little and bounds time.
    stride = max(1, int(np.ceil(sum(map(len, t.train_frames)) / max_frames)))
    norm = fit_normalisation(np.concatenate([f[::stride] for f in t.train_frames]))

    def sequences(frames, limit, seed):
        # Runs picked from the dB frames, then normalised: the same numbers as normalising
        # whole songs, for only the frames used.
        songs = [(f, timbre_targets(f)) for f in frames if len(f) >= length]
        x, y = song_sequences(songs, length=length, max_frames=limit, seed=seed)
        return normalise(x, mean=norm[0], std=norm[1]), y

    x_train, y_train = sequences(t.train_frames, max_frames, seed)
    x_val, y_val = sequences(t.val_frames, max_frames // 4, seed + 1)
    pca = fit_pca(x_train.reshape(-1, x_train.shape[-1]), k=bottleneck)
    mse_pca = pca_mse(x_val.reshape(-1, x_val.shape[-1]), *pca)
    val_audio = {Path(s.path).name: read_song(s.path) for s in t.val}
    val_stems = {Path(s.path).name: load_stems(sidecar(s.path)) for s in t.val
                 if sidecar(s.path).is_file()}
    baselines = side_information_baselines(x_train, x_val, k=bottleneck, mse_pca=mse_pca)
    print(f"PCA-{bottleneck} validation MSE {mse_pca:.4f}; training on {x_train[..., 0].size} "
          f"frames, validating on {x_val[..., 0].size}\n{describe_baselines(baselines)}")
    return Data(x_train, y_train, x_val, y_val, norm, pca, mse_pca, baselines, val_audio,
                val_stems)


def train_candidates(args, data: Data, params, *, clock=None) -> tuple[dict, dict]:
    """Steps 3 and 4: train the dense and conv models (and the ablations), and evaluate
    each through the show playlist mode plays (planned ahead) on the validation songs, beside
    the bands show through the same logic.
    Returns the metrics and, per candidate, ``(result, specs and weights, mapping, show)``."""
    from training.models.autoencoders import export_encoder, train_autoencoder

    results, candidates, references = {}, {}, {}

    def train_and_score(label, kind, x_tr, y_tr, epochs, **cfg):
        res = train_autoencoder(kind, x_tr, y_tr, data.x_val, data.y_val,
                                bottleneck=args.bottleneck, epochs=epochs, seed=args.seed,
                                **cfg)
        mse = float(np.mean((res.reconstruct(data.x_val) - data.x_val) ** 2))
        specs_weights = export_encoder(res.encoder)
        enc = NumpyEncoder(*specs_weights, n_inputs=params.n_bins)
        frames = x_tr.reshape(-1, x_tr.shape[-1])
        mapping = MappingParams.calibrate(enc(frames[:: max(1, len(frames) // 50000)]))
        make = candidate_show(enc, data.norm, mapping, params)
        metrics = evaluate_audio(data.val_audio, make, references=references,
                                 stems=data.val_stems, lookahead=True)
        results[label] = {"val_mse": mse, "mse_vs_pca": mse / data.mse_pca,
                          "epochs": len(res.history.get("loss", [])),
                          "train_seconds": round(res.seconds, 1), **metrics["mean"]}
        candidates[label] = (res, specs_weights, mapping, make)
        _print_row(label, results[label])
        if clock:
            clock.lap(f"{label}: fit, then scored")  # the fit alone: train_seconds

    base = dict(decorrelation=args.decorrelation, context=args.context,
                reconstruction_weight=args.reconstruction_weight,
                batch_frames=args.batch_frames, learning_rate=args.learning_rate,
                cosine=args.schedule == "cosine")
    for kind in ("dense", "conv"):
        train_and_score(kind, kind, data.x_train, data.y_train, args.epochs, **base)
    if args.ablations:
        # Ablations on a quarter of the frames and a third of the epochs, each against the
        # same smaller baseline, so that all five cost about a third of a full training.
        small, epochs = (data.x_train[::4], data.y_train[::4]), max(1, args.epochs // 3)
        for label, kind, cfg in (
                ("ablation: baseline", "dense", base),
                ("ablation: reconstruction only", "dense",
                 dict(base, timbre_weight=0.0, reconstruction_weight=1.0)),
                ("ablation: no temporal context", "dense", dict(base, context=0)),
                ("ablation: no previous frame", "dense", dict(base, previous_frame=False)),
                ("ablation: no aux loss", "dense", dict(base, decorrelation=0.0))):
            train_and_score(label, kind, *small, epochs, **cfg)
    results["bands (LightShowPi-style)"] = evaluate_audio(
        data.val_audio, lambda: BandsShow(n_channels=args.bottleneck), references=references,
        stems=data.val_stems, lookahead=True)["mean"]
    _print_row("bands", results["bands (LightShowPi-style)"])
    if clock:
        clock.lap("bands scored")
    return results, candidates


def export(args, *, c: Corpus, t: Trimmed, data: Data, results: dict, candidates: dict,
           params, seconds: float, clock=None) -> list[Path]:
    """Step 5: the dense and conv bundles, with manifest, Keras model and report, written
    together (a stop never leaves a new dense model beside an old conv one)."""
    summary, end_report, trim_report = c.summary, t.end_report, t.trim_report
    notes = [f"Corpus: {c.source}; {summary['n_songs']} songs, {summary['total_minutes']:.1f} "
             f"min, {summary['n_skipped']} skipped; {len(t.train)} training and {len(t.val)} "
             f"validation songs.",
             f"End detector: accuracy {end_report['accuracy']:.3f} (naive "
             f"{end_report['naive_accuracy']:.3f}), balanced {end_report['balanced_accuracy']:.3f}"
             f", median |end error| {end_report['end_abs_error_s_median']:.2f} s.",
             f"Trimmed {trim_report['end_trimmed_s']:.0f} s of endings and "
             f"{trim_report['start_trimmed_s']:.0f} s of leading silence.",
             f"PCA-{args.bottleneck} validation MSE {data.mse_pca:.4f}; features at "
             f"{c.audio_s / max(c.feature_s, 1e-9):.0f} s of audio per wall second.",
             describe_baselines(data.baselines)]
    manifest_base = {
        "feature_params": params.as_dict(),
        "corpus": {"source": c.source, **{k: summary[k] for k in
                                          ("n_songs", "n_skipped", "total_minutes", "skipped")},
                   "train_songs": [Path(s.path).name for s in t.train],
                   "validation_songs": [Path(s.path).name for s in t.val]},
        "end_detector": {k: v for k, v in end_report.items() if k != "songs"},
        "trim": {k: v for k, v in trim_report.items() if k != "per_song"},
        "pca_val_mse": data.mse_pca,
        "reconstruction_baselines": data.baselines,
        "evaluation": results,
        "provenance": {"trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "host": platform.node(), "python": platform.python_version(),
                       "seed": args.seed, "epochs_max": args.epochs,
                       "max_frames": args.max_frames, "sequence_length": args.sequence_length,
                       "batch_frames": args.batch_frames,
                       "learning_rate": args.learning_rate, "schedule": args.schedule,
                       "context": args.context, "decoder_previous_frame": True,
                       "decorrelation": args.decorrelation,
                       "reconstruction_weight": args.reconstruction_weight,
                       "train_seconds_total": round(seconds, 1),
                       "cpu_seconds_total": round(time.process_time(), 1),
                       "stage_seconds": dict(clock.seconds) if clock else {}},
    }
    exports = []
    for label, suffix in (("dense", ""), ("conv", "-conv")):
        res, specs_weights, mapping, make = candidates[label]
        arrays = pack_arrays(encoder_weights=specs_weights[1], norm=data.norm, mapping=mapping,
                             pca=data.pca)
        manifest = dict(manifest_base, name=args.name + suffix, metrics=results[label],
                        architecture={"kind": label, "layers": specs_weights[0],
                                      "n_channels": args.bottleneck})

        def extra(tmp, m=res.model, label=label):
            m.save(tmp / "autoencoder.keras")
            if label == "dense":
                report(tmp / "report", args=args, results=results, candidates=candidates,
                       detector=t.detector, val=t.val, val_audio=data.val_audio, notes=notes,
                       annotations=c.annotations, mse_pca=data.mse_pca)

        exports.append((Path(args.models_dir) / (args.name + suffix), manifest, arrays, extra))
    return write_bundles(exports)


class StageClock:
    """Wall and CPU seconds of each step of a run, printed as it ends and kept for the
    manifest's provenance (where `make train`'s time goes)."""

    def __init__(self):
        self.seconds: dict[str, dict] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.seconds[stage] = {"wall": round(wall - self._wall, 1),
                               "cpu": round(cpu - self._cpu, 1)}
        print(f"[{stage}: {wall - self._wall:.0f} s wall, {cpu - self._cpu:.0f} s CPU]")
        self._wall, self._cpu = wall, cpu


def run(args) -> dict:
    """``make train``, step by step: corpus, end detector, candidates, evaluation, export."""
    t_start = time.perf_counter()
    clock = StageClock()
    params = DEFAULT_PARAMS
    c = load_corpus(args, params)
    clock.lap("features")
    t = trim_endings(c.songs, annotations=c.annotations, seed=args.seed)
    clock.lap("end detector")
    data = prepare_data(t, max_frames=args.max_frames, bottleneck=args.bottleneck,
                        length=args.sequence_length, seed=args.seed)
    clock.lap("training data")
    results, candidates = train_candidates(args, data, params, clock=clock)
    total = time.perf_counter() - t_start
    exported = export(args, c=c, t=t, data=data, results=results, candidates=candidates,
                      params=params, seconds=total, clock=clock)
    total = time.perf_counter() - t_start
    print(f"exported {', '.join(map(str, exported))} in {total:.0f} s total")
    return {"results": results, "exported": [str(p) for p in exported], "seconds": total,
            "feature_seconds": c.feature_s, "audio_seconds": c.audio_s,
            "stage_seconds": clock.seconds}


def report(out_dir: Path, *, args, results, candidates, detector, val, val_audio, notes,
           annotations, mse_pca) -> None:
    """Figures and tables for the human reading the training run (training/report.py)."""
    from training.report import write_report

    song = max(val, key=lambda s: s.duration_s)
    name = Path(song.path).name
    timeline = render_blocks([val_audio[name]], candidates["dense"][3](), lookahead=True)
    ann = end_detector.load_annotations(annotations) if annotations else None
    histories = {label: candidates[label][0].history for label in ("dense", "conv")}
    write_report(out_dir, title=f"Training report: {args.name}",
                 results=results, histories=histories, pca_mse=mse_pca,
                 activation_song={"song": name, "times_s": timeline.times_s,
                                  "activations": timeline.activations,
                                  "states": timeline.states},
                 end_song={"song": name, "times_s": song.times(),
                           "proba": detector.ending_proba(song),
                           "detected_s": detector.detect_end_s(song),
                           "true_s": end_detector.true_end_s(song, ann)},
                 coef=detector.coef_, notes=notes,
                 sample_rate=DEFAULT_PARAMS.sample_rate, n_fft=DEFAULT_PARAMS.n_fft)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _print_row(label: str, r: dict) -> None:
    cells = "  ".join(f"{h.label} {_fmt(r.get(h.key), h.fmt[2:-1])}"
                      for h in (Headline("mse_vs_pca", "mse/pca", "{:.2f}", ""),) + HEADLINE)
    print(f"  {label:13s} {cells}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training train",
                                 description="Train and export a light-show model bundle.")
    ap.add_argument("--music-dir", help="folder of songs (default: a generated demo corpus)")
    ap.add_argument("--annotations", help="CSV file,end_seconds (default: annotations.csv "
                                          "in the music folder, if any)")
    ap.add_argument("--exclude", nargs="*", default=list(ingest.JINGLE_PATTERNS),
                    help="file name patterns to leave out (default: %(default)s)")
    ap.add_argument("--name", default="default")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--cache-dir", default=str(ROOT / ".cache" / "features"))
    ap.add_argument("--bottleneck", type=int, default=8, help="channels (8 per relay board)")
    # 16 epochs of at most 50k frames in 2048-frame batches, no ablations: 403 s of CPU for
    # `make train` on 2 hours of music from a cold feature cache, 9.5 min wall on the shared
    # 2-core machine (Dec 2026; 512-frame batches and the ablations took 714 s and 21 min).
    # The decoder's previous-frame input (a 513 x 513 linear path) adds about 130 s of CPU:
    # 414 -> 542 s with a warm feature cache.
    # Fewer epochs or frames cost the encoder's structure: 8 epochs (cosine schedule) took
    # the duty-SSM ceiling on training songs from 0.79 to 0.73.
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--max-frames", type=int, default=50_000)
    ap.add_argument("--batch-frames", type=int, default=BATCH_FRAMES,
                    help="frames per gradient step (default: %(default)s)")
    ap.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                    help="Adam's (starting) learning rate (default: %(default)s)")
    ap.add_argument("--schedule", choices=("cosine", "plateau"), default=SCHEDULE,
                    help="cosine: the rate falls to 5%% of its start over exactly --epochs; "
                         "plateau: cut by 0.3 after 2 epochs without progress "
                         "(default: %(default)s)")
    ap.add_argument("--decorrelation", type=float, default=0.1)
    ap.add_argument("--context", type=int, default=4,
                    help="the training-only decoder rebuilds frame t from the codes of frames "
                         "t-N..t+N (default: %(default)s)")
    ap.add_argument("--reconstruction-weight", type=float, default=1.0,
                    help="weight of the reconstruction loss beside the timbre loss's 1 "
                         "(default: %(default)s)")
    ap.add_argument("--sequence-length", type=int, default=32,
                    help="consecutive frames per training example (default: %(default)s)")
    ap.add_argument("--demo-songs", type=int, default=12)
    ap.add_argument("--ablations", action="store_true",
                    help="also train and score the five ablations (baseline, reconstruction "
                         "only, no temporal context, no previous frame, no aux loss) for the "
                         "report: about 5 minutes more on 2 hours of music")
    ap.add_argument("--no-ablations", dest="ablations", action="store_false",
                    help="the default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        out = run(args)
    except (FileNotFoundError, ValueError) as exc:  # bad folder, bad annotations CSV
        print(f"train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in out.items() if k != "results"}))
    return 0
