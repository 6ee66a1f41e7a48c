"""End detector on synthetic songs with known endings, its labels, and trimming."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pi.show.features import frame_times
from training.corpus.demo import generate_corpus
from training.models.end_detector import (EndDetector, annotated_end_s, auto_end_s, end_labels,
                                   load_annotations, song_inputs, suffix_start, training_frames,
                                   trim, trim_library)
from training.corpus.ingest import SongFeatures, load_library

# Measured over 6 train/test corpus pairs like these (30 s songs, 8k-20k training frames):
# detector |error| at most 0.2 s for hard stops and quiet tails and 2.6 s for fades (nearly
# always early: the -40 dB point of a fade is hard to tell from -30 dB); the automatic rule
# ends fades 0.8-3.0 s early, since it stops at -20 dB. The bounds keep a margin over those.
BOUND_S = {"hard_stop": 1.0, "quiet_tail": 1.0, "fade": 4.0}
AUTO_FADE_EARLY_S = 4.5


def _corpus(root: Path, *, n_songs: int, seed: int):
    specs = generate_corpus(root, n_songs=n_songs, seconds=30.0, seed=seed)
    songs, skipped = load_library([s.path for s in specs], cache_dir=root / "cache",
                                  progress=False)
    assert skipped == []
    return songs, {s.path.name: s for s in specs}, root / "annotations.csv"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A training corpus and a separate test corpus: a split by song, all three endings."""
    root = tmp_path_factory.mktemp("corpora")
    return (_corpus(root / "train", n_songs=12, seed=0),
            _corpus(root / "test", n_songs=6, seed=1))


@pytest.fixture(scope="module")
def detector(corpora):
    (train, _, csv), _ = corpora
    return EndDetector().fit(*training_frames(train, annotations=csv, max_frames=8_000))


def test_automatic_rule_finds_the_known_ends(corpora):
    for songs, specs, _ in corpora:
        for song in songs:
            spec = specs[song.path.name]
            error = auto_end_s(song) - spec.music_end_s
            if spec.ending == "fade":
                assert -AUTO_FADE_EARLY_S <= error <= 0.0, (song.path.name, error)
            else:
                assert abs(error) <= 0.05, (song.path.name, error)


def test_end_error_is_bounded_for_every_kind_of_ending(corpora, detector):
    _, (test, specs, csv) = corpora
    report = detector.evaluate(test, annotations=csv)
    errors = {name: e for name, e in zip(report["songs"], report["end_error_s"])}
    print("end error (s):", {k: round(v, 2) for k, v in errors.items()})
    assert {specs[n].ending for n in errors} == set(BOUND_S)
    for name, error in errors.items():
        assert abs(error) <= BOUND_S[specs[name].ending], (name, error)
    assert report["end_abs_error_s_max"] == pytest.approx(max(map(abs, errors.values())))
    assert report["accuracy"] >= report["naive_accuracy"]
    assert report["balanced_accuracy"] >= 0.9
    assert 0.0 < report["naive_accuracy"] < 1.0


def test_detector_learns_the_automatic_labels_too(corpora):
    (train, _, _), (test, _, _) = corpora
    det = EndDetector().fit(*training_frames(train, max_frames=8_000))
    report = det.evaluate(test)
    print("auto labels:", {k: round(v, 3) for k, v in report.items() if isinstance(v, float)})
    assert report["accuracy"] >= report["naive_accuracy"]
    assert report["balanced_accuracy"] >= 0.9
    assert report["end_abs_error_s_median"] <= 1.0


def test_fit_follows_sklearn_conventions(corpora, detector):
    (train, _, csv), _ = corpora
    X, y = training_frames(train, annotations=csv, max_frames=8_000, random_state=3)
    assert X.shape == (8_000, 514) and y.shape == (8_000,) and y.dtype == bool
    again = training_frames(train, annotations=csv, max_frames=8_000, random_state=3)
    np.testing.assert_array_equal(again[0], X)  # random_state makes the draw repeatable
    fitted = EndDetector(random_state=3)
    assert fitted.fit(X, y) is fitted  # fit returns self
    assert fitted.n_features_in_ == 514 and fitted.n_frames_fit_ == 8_000
    assert [name for name, _ in fitted.model_.steps] == ["standardscaler", "logisticregression"]
    assert fitted.coef_.shape == (514,)
    song = train[0]
    proba = detector.predict_proba(song_inputs(song))
    assert proba.shape == (song.n_frames, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(detector.ending_proba(song), proba[:, 1])
    assert 0.0 <= detector.detect_end_s(song) <= song.duration_s
    with pytest.raises(RuntimeError, match="expected a fitted detector"):
        EndDetector().ending_proba(song)
    all_music = {str(s.path.resolve()): 1e9 for s in train}
    with pytest.raises(ValueError, match="found only music frames"):
        EndDetector().fit(*training_frames(train, annotations=all_music))


def test_annotations_load_match_and_fail_clearly(tmp_path):
    csv = tmp_path / "ann.csv"
    csv.write_text("file,end_seconds\nsub/a.wav,12.5\n\nb.wav, 3\n")
    ann = load_annotations(csv)
    assert ann == {str((tmp_path / "sub/a.wav").resolve()): 12.5,
                   str((tmp_path / "b.wav").resolve()): 3.0}
    song = SongFeatures(tmp_path / "sub" / "a.wav", np.zeros((0, 513), np.float32),
                        np.zeros(0, np.float32), 0.0, 44100, 1)
    assert annotated_end_s(song, ann) == 12.5
    elsewhere = SongFeatures(Path("/elsewhere/b.wav"), song.frames, song.rms_db, 0.0, 44100, 1)
    assert annotated_end_s(elsewhere, ann) == 3.0  # by basename
    assert annotated_end_s(elsewhere, {"x/b.wav": 1.0, "y/b.wav": 2.0}) is None  # ambiguous

    for text, match in [("name,end\na.wav,1\n", r"line 1: expected header"),
                        ("file,end_seconds\na.wav,soon\n", r"line 2: expected end_seconds"),
                        ("file,end_seconds\na.wav,1\nb.wav,-2\n", r"line 3: expected end_s"),
                        ("file,end_seconds\na.wav,1\na.wav,2\n", r"line 3: expected each file"),
                        ("file,end_seconds\na.wav\n", r"line 2: expected 'file,end_seconds'")]:
        csv.write_text(text)
        with pytest.raises(ValueError, match=match) as err:
            load_annotations(csv)
        assert str(csv) in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_annotations(tmp_path / "missing.csv")


def test_suffix_start_is_robust_to_blips():
    p = np.r_[np.full(100, 0.05), np.full(30, 0.95)]
    assert suffix_start(p) == 100
    blips = p.copy()
    blips[[20, 40, 60]] = 0.99  # quiet bars mid-song
    blips[[110, 120]] = 0.01  # a loud note in the tail
    assert suffix_start(blips) == 100
    assert suffix_start(np.full(50, 0.1)) == 50  # no ending
    assert suffix_start(np.full(50, 0.9)) == 0


def _song(rms_db: np.ndarray) -> SongFeatures:
    n = len(rms_db)
    frames = np.tile(np.arange(n, dtype=np.float32)[:, None], (1, 513))
    return SongFeatures(Path("/m/s.wav"), frames, rms_db.astype(np.float32),
                        float(frame_times(n)[-1]), 44100, 2)


def test_trim_drops_leading_silence_and_the_ending():
    rms = np.r_[np.full(10, -100.0), np.full(5, -70.0), np.full(200, -15.0), np.full(50, -50.0)]
    song = _song(rms)
    end = auto_end_s(song)
    assert end == pytest.approx(frame_times(215)[-1])
    assert end_labels(song, end_s=end).sum() == 50
    frames, info = trim(song, end_s=end)
    np.testing.assert_array_equal(frames[:, 0], np.arange(15, 215))  # -70 is 55 dB below
    hop_s = 512 / 44100
    assert info["start_trimmed_s"] == pytest.approx(15 * hop_s)
    assert info["end_trimmed_s"] == pytest.approx(50 * hop_s)
    assert info["kept_s"] == pytest.approx(200 * hop_s)
    kept, report = trim_library([song, song], end_times=[end, song.duration_s])
    assert [len(k) for k in kept] == [200, 250]
    assert report["end_trimmed_s"] == pytest.approx(50 * hop_s)
    assert report["start_trimmed_s"] == pytest.approx(30 * hop_s)
    with pytest.raises(ValueError, match="expected 2 end times, found 1"):
        trim_library([song, song], end_times=[end])
