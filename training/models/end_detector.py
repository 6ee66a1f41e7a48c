"""Find where each song's music ends, so autoencoders never train on fades, tails or silence.

A logistic regression decides per frame "this frame is in the song's quiet ending" from the 513
dB bins plus the frame's position in the song (frame end time / song duration); the ending is a
suffix of the song, so the per-frame answers are turned into one end time by a change point.

Labels. A frame is "end" when its end time (:func:`pi.show.features.frame_times`) is later than the
song's end time, which comes from an annotations CSV (``file,end_seconds``) when the song is
listed there, and otherwise from this automatic rule on the per-frame RMS levels (dBFS):

1. the *reference level* is the median RMS over the frames louder than -80 dBFS;
2. the *music end* is the end time of the last frame whose RMS is at least reference - 20 dB;
3. every later frame is the ending: a fade's tail, a quiet tail, or silence.

A song whose last frame is loud has no ending (a hard stop with nothing after it).

Trimming (:func:`trim`) also drops leading silence: the frames before the first frame whose RMS
is at least reference - 40 dB.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pi.show.features import DEFAULT_PARAMS, FeatureParams, frame_times
from training.corpus.ingest import SongFeatures

LOUD_FLOOR_DB = -80.0
END_MARGIN_DB = 20.0
LEAD_MARGIN_DB = 40.0

Annotations = Mapping[str, float]


def load_annotations(csv_path: str | Path) -> dict[str, float]:
    """``{resolved song path: end_seconds}`` from a ``file,end_seconds`` CSV.

    ``file`` is relative to the CSV's folder (or absolute); songs elsewhere are still matched
    by basename when that basename is unambiguous (see :func:`annotated_end_s`).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: expected an annotations CSV, found nothing")
    out: dict[str, float] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        if header != ["file", "end_seconds"]:
            raise ValueError(f"{csv_path}: line 1: expected header 'file,end_seconds', "
                             f"found {','.join(header)!r}")
        for row in rows:
            line = rows.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2 or not row[0].strip():
                raise ValueError(f"{csv_path}: line {line}: expected 'file,end_seconds', "
                                 f"found {','.join(row)!r}")
            try:
                end = float(row[1])
            except ValueError:
                end = float("nan")
            if not np.isfinite(end) or end < 0:
                raise ValueError(f"{csv_path}: line {line}: expected end_seconds as a "
                                 f"non-negative number, found {row[1]!r}")
            key = str((csv_path.parent / row[0].strip()).resolve())
            if key in out:
                raise ValueError(f"{csv_path}: line {line}: expected each file once, "
                                 f"found {row[0]!r} again")
            out[key] = end
    return out


def _as_annotations(annotations: Annotations | str | Path | None) -> Annotations:
    if annotations is None:
        return {}
    if isinstance(annotations, (str, Path)):
        return load_annotations(annotations)
    return annotations


def annotated_end_s(song: SongFeatures, annotations: Annotations) -> float | None:
    """The song's annotated end: by resolved path, else by a unique basename match."""
    if not annotations:
        return None
    key = str(Path(song.path).resolve())
    if key in annotations:
        return float(annotations[key])
    same_name = [v for k, v in annotations.items() if Path(k).name == Path(song.path).name]
    return float(same_name[0]) if len(same_name) == 1 else None


def reference_db(song: SongFeatures) -> float:
    """Median RMS dBFS over the frames louder than -80 dBFS (``-inf`` if there are none)."""
    loud = song.rms_db[song.rms_db > LOUD_FLOOR_DB]
    return float(np.median(loud)) if len(loud) else float("-inf")


def auto_end_s(song: SongFeatures, *, params: FeatureParams = DEFAULT_PARAMS) -> float:
    """The module docstring's automatic rule: end time of the last frame within 20 dB."""
    music = np.flatnonzero(song.rms_db >= reference_db(song) - END_MARGIN_DB)
    if not len(music):
        return 0.0
    return float(frame_times(int(music[-1]) + 1, params=params)[-1])


def true_end_s(song: SongFeatures, annotations: Annotations | None = None, *,
               params: FeatureParams = DEFAULT_PARAMS) -> float:
    end = annotated_end_s(song, annotations or {})
    return auto_end_s(song, params=params) if end is None else end


def end_labels(song: SongFeatures, *, end_s: float,
               params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """``True`` for frames in the ending ``[shape=(n_frames,)]``: frame end time > ``end_s``."""
    return frame_times(song.n_frames, params=params) > end_s


def song_inputs(song: SongFeatures, idx: np.ndarray | None = None, *,
                params: FeatureParams = DEFAULT_PARAMS) -> np.ndarray:
    """The 513 dB bins plus position in the song ``[shape=(n_frames, 514)]`` float32.

    ``idx`` selects frames before stacking, so a subsample never copies the whole song.
    """
    position = frame_times(song.n_frames, params=params) / max(song.duration_s, 1e-9)
    frames = song.frames
    if idx is not None:
        frames, position = frames[idx], position[idx]
    return np.hstack([frames, position[:, None].astype(np.float32)])


def suffix_start(proba: np.ndarray, *, clip: float = 4.0) -> int:
    """Index where the ending starts (``len(proba)`` for none), from per-frame probabilities.

    The ending is a suffix, so this is the change point maximising the suffix's summed
    log-odds of "end" minus the prefix's; clipping the log-odds keeps a few confident
    outliers (a quiet bar mid-song, a loud blip in a tail) from moving it far.
    """
    p = np.clip(np.asarray(proba, np.float64), 1e-9, 1 - 1e-9)
    logit = np.clip(np.log(p) - np.log1p(-p), -clip, clip)
    # score[k] = sum(logit[k:]); score[n] = 0 stands for "no ending"; argmax takes the earliest.
    score = np.concatenate([np.cumsum(logit[::-1])[::-1], [0.0]])
    return int(np.argmax(score))


def training_frames(songs: Sequence[SongFeatures], *,
                    annotations: Annotations | str | Path | None = None,
                    max_frames: int = 50_000, end_share: float = 0.5, random_state: int = 0,
                    params: FeatureParams = DEFAULT_PARAMS) -> tuple[np.ndarray, np.ndarray]:
    """``X [shape=(n, 514)]`` (:func:`song_inputs`) and ``y [shape=(n,)]`` ("in the ending")
    for :meth:`EndDetector.fit`: at most ``max_frames`` frames drawn from ``songs``.

    ``annotations`` (a ``file,end_seconds`` CSV or a loaded dict) label the songs listed
    there; the others get the module docstring's automatic rule. Endings are a few % of
    frames: they get up to ``end_share`` of the budget and music the rest, so a small, fast fit
    still sees every kind of ending (the classifier's class_weight rebalances).
    """
    ann = _as_annotations(annotations)
    labels = [end_labels(s, end_s=true_end_s(s, ann, params=params), params=params)
              for s in songs]
    flat = np.concatenate(labels) if labels else np.zeros(0, bool)
    if not len(flat):
        raise ValueError(f"fit: expected songs with frames, found {len(songs)} songs "
                         f"and no frames")
    rng = np.random.default_rng(random_state)
    ends, music = np.flatnonzero(flat), np.flatnonzero(~flat)
    n_end = min(len(ends), int(end_share * max_frames))
    n_music = min(len(music), max_frames - n_end)
    keep = np.zeros(len(flat), bool)
    keep[rng.choice(ends, n_end, replace=False)] = True
    keep[rng.choice(music, n_music, replace=False)] = True
    xs, ys, offset = [], [], 0
    for song, y in zip(songs, labels):
        idx = np.flatnonzero(keep[offset: offset + len(y)])
        offset += len(y)
        xs.append(song_inputs(song, idx, params=params))
        ys.append(y[idx])
    return np.concatenate(xs), np.concatenate(ys)


class EndDetector:
    """Per-frame "in the quiet ending" classifier, with scikit-learn's conventions:
    ``fit(X, y)`` returns ``self``, ``predict_proba(X)``, learned attributes end in ``_``.
    Song-level answers: :meth:`ending_proba`, :meth:`detect_end_s`, :meth:`evaluate`."""

    def __init__(self, *, C: float = 0.05, max_iter: int = 300,
                 class_weight: str | None = "balanced", clip: float = 4.0,
                 random_state: int = 0, params: FeatureParams = DEFAULT_PARAMS):
        self.C, self.max_iter, self.class_weight = C, max_iter, class_weight
        self.clip, self.random_state, self.params = clip, random_state, params

    def fit(self, X: np.ndarray, y: np.ndarray) -> "EndDetector":
        """``X [shape=(n, 514)]`` from :func:`training_frames`, ``y`` True in the ending:
        a ``StandardScaler`` then a ``LogisticRegression``, as one pipeline (``model_``)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = np.asarray(y, bool)
        if y.all() or not y.any():
            raise ValueError(f"fit: expected both ending and music frames, found only "
                             f"{'ending' if y.all() else 'music'} frames ({len(y)} frames)")
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, class_weight=self.class_weight,
                               max_iter=self.max_iter, random_state=self.random_state))
        self.model_.fit(X, y)
        self.n_features_in_ = X.shape[1]
        self.n_frames_fit_ = len(y)
        return self

    @property
    def coef_(self) -> np.ndarray:
        """The logistic regression's weights over the standardised inputs ``[shape=(514,)]``."""
        return self.model_[-1].coef_[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[shape=(n, 2)]``: P(music), P(ending) for each row of ``X``."""
        if not hasattr(self, "model_"):
            raise RuntimeError("EndDetector: expected a fitted detector, found an unfitted one")
        return self.model_.predict_proba(X)

    def ending_proba(self, song: SongFeatures) -> np.ndarray:
        """Probability that each frame of ``song`` is in the ending ``[shape=(n_frames,)]``."""
        if song.n_frames == 0:
            return np.zeros(0)
        return self.predict_proba(song_inputs(song, params=self.params))[:, 1]

    def detect_end_s(self, song: SongFeatures, *, proba: np.ndarray | None = None) -> float:
        """The song's music end in seconds; its duration when no ending is found.
        ``proba``: the song's :meth:`ending_proba`, when already computed."""
        k = suffix_start(self.ending_proba(song) if proba is None else proba, clip=self.clip)
        if k >= song.n_frames:
            return float(song.duration_s)
        return float(frame_times(k, params=self.params)[-1]) if k > 0 else 0.0

    def evaluate(self, songs: Sequence[SongFeatures], *,
                 annotations: Annotations | str | Path | None = None) -> dict:
        """Per-frame and end-time scores; ``naive_accuracy`` always answers "not the end".

        ``accuracy``/``balanced_accuracy`` score the raw per-frame answers (p > 0.5);
        ``suffix_accuracy`` scores the frames after :meth:`detect_end_s` as the ending.
        """
        from sklearn.metrics import balanced_accuracy_score

        if not songs:
            raise ValueError("evaluate: expected at least one song, found none")
        ann = _as_annotations(annotations)
        ys, preds, suffix, errors, names = [], [], [], [], []
        for song in songs:
            end = true_end_s(song, ann, params=self.params)
            y = end_labels(song, end_s=end, params=self.params)
            p = self.ending_proba(song)
            detected = self.detect_end_s(song, proba=p)
            ys.append(y)
            preds.append(p > 0.5)
            suffix.append(end_labels(song, end_s=detected, params=self.params))
            errors.append(detected - end)
            names.append(Path(song.path).name)
        y, pred, suf = np.concatenate(ys), np.concatenate(preds), np.concatenate(suffix)
        abs_err = np.abs(errors)
        return {
            "n_songs": len(songs),
            "n_frames": int(len(y)),
            "end_fraction": float(y.mean()),
            "accuracy": float((pred == y).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "naive_accuracy": float((~y).mean()),
            "suffix_accuracy": float((suf == y).mean()),
            "songs": names,
            "end_error_s": [float(e) for e in errors],
            "end_abs_error_s_median": float(np.median(abs_err)),
            "end_abs_error_s_max": float(abs_err.max()),
        }


def trim(song: SongFeatures, *, end_s: float, lead_margin_db: float = LEAD_MARGIN_DB,
         params: FeatureParams = DEFAULT_PARAMS) -> tuple[np.ndarray, dict]:
    """Frames to train on ``[shape=(n_kept, 513)]``: leading silence and the ending removed.

    Leading silence is every frame before the first one within ``lead_margin_db`` of
    :func:`reference_db`; the ending is every frame whose end time is after ``end_s``.
    """
    hop_s = params.hop / params.sample_rate
    loud = np.flatnonzero(song.rms_db >= reference_db(song) - lead_margin_db)
    start = int(loud[0]) if len(loud) else song.n_frames
    stop = int(np.count_nonzero(~end_labels(song, end_s=end_s, params=params)))
    stop = max(stop, start)
    return song.frames[start:stop], {
        "file": Path(song.path).name,
        "start_trimmed_s": start * hop_s,
        "end_trimmed_s": (song.n_frames - stop) * hop_s,
        "kept_s": (stop - start) * hop_s,
    }


def trim_library(songs: Sequence[SongFeatures], *, end_times: Sequence[float],
                 params: FeatureParams = DEFAULT_PARAMS) -> tuple[list[np.ndarray], dict]:
    """:func:`trim` every song at its end time; returns the frames and an aggregate report."""
    if len(end_times) != len(songs):
        raise ValueError(f"trim_library: expected {len(songs)} end times, "
                         f"found {len(end_times)}")
    kept, per_song = [], []
    for song, end in zip(songs, end_times):
        frames, info = trim(song, end_s=end, params=params)
        kept.append(frames)
        per_song.append(info)
    return kept, {
        "n_songs": len(songs),
        "kept_s": float(sum(i["kept_s"] for i in per_song)),
        "start_trimmed_s": float(sum(i["start_trimmed_s"] for i in per_song)),
        "end_trimmed_s": float(sum(i["end_trimmed_s"] for i in per_song)),
        "per_song": per_song,
    }
