"""Keras encoders and their trainers: the timbre target, sequences, training on tiny data,
the numpy encoder against Keras, export."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pi.show.bundle import load_bundle  # noqa: E402
from pi.show.encoder import NumpyEncoder  # noqa: E402
from pi.show.features import mel_basis, song_features  # noqa: E402
from training.models.autoencoders import (PreviousFrame, build_dense_encoder,  # noqa: E402
                                          build_trainer, encoder_of, export_encoder,
                                          song_sequences, timbre_targets, train_autoencoder)

ROOT = Path(__file__).resolve().parent.parent
LENGTH = 8


@pytest.fixture(scope="module")
def sequences():
    rng = np.random.default_rng(0)
    # Low-rank frames plus noise: something an 8-unit bottleneck can learn; the "timbre"
    # target is a fixed projection of them, so a frame's own code can predict it.
    basis = rng.normal(size=(4, 513))
    x = (rng.normal(size=(1200, 4)) @ basis + 0.1 * rng.normal(size=(1200, 513))).astype(
        np.float32)
    y = (x @ rng.normal(size=(513, 20)) / 40).astype(np.float32)
    return x.reshape(-1, LENGTH, 513), y.reshape(-1, LENGTH, 20)


@pytest.fixture(scope="module")
def song_db():
    rng = np.random.default_rng(1)
    t = np.arange(44100 * 3) / 44100
    # Two sections with different timbre, a tone then a buzz, over quiet noise.
    y = np.where(t < 1.5, np.sin(2 * np.pi * 440 * t), np.sign(np.sin(2 * np.pi * 220 * t)) * 0.3)
    y = y + 0.01 * rng.normal(size=t.size)
    return song_features(y.astype(np.float32))


def test_timbre_targets_are_standardised_mfccs_as_librosa_computes_them(song_db):
    librosa = pytest.importorskip("librosa")
    mel_power = mel_basis() @ (10.0 ** (song_db.astype(np.float64) / 10.0)).T
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel_power, top_db=None), n_mfcc=20).T
    expected = (mfcc - mfcc.mean(axis=0)) / (mfcc.std(axis=0) + 1e-6)
    got = timbre_targets(song_db)
    assert got.shape == (len(song_db), 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-3)
    np.testing.assert_allclose(got.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(got.std(axis=0), 1, atol=1e-3)


def test_timbre_targets_ignore_a_songs_overall_gain(song_db):
    # Standardised per song: a louder master of the same song has the same targets (away
    # from the dB floor and the mel clamp, where a gain is no longer a plain shift).
    loud = np.maximum(song_db, -60.0)
    np.testing.assert_allclose(timbre_targets(loud + 12.0), timbre_targets(loud), atol=1e-3)


def test_timbre_targets_reject_the_wrong_shape():
    with pytest.raises(ValueError, match=r"expected frames .* found shape \(10, 512\)"):
        timbre_targets(np.zeros((10, 512), np.float32))


def test_song_sequences_are_runs_of_consecutive_frames():
    songs = [(np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
              np.arange(n, dtype=np.float32)[:, None]) for n in (100, 45, 5)]
    x, y = song_sequences(songs, length=10, max_frames=1000)
    assert x.shape == (14, 10, 3) and y.shape == (14, 10, 1)  # 10 + 4 runs; 5 frames: none
    assert (np.diff(x[..., 0], axis=1) == 1).all()  # consecutive within every run
    np.testing.assert_array_equal(x[..., :1], y)  # targets stay with their frames
    assert len(song_sequences(songs, length=10, max_frames=70)[0]) <= 7
    with pytest.raises(ValueError, match="at least 200 frames"):
        song_sequences(songs, length=200, max_frames=1000)


@pytest.mark.parametrize("kind", ["seed", "dense", "conv"])
def test_trains_reloads_and_numpy_encoder_matches_keras(kind, sequences, tmp_path):
    x, y = sequences
    res = train_autoencoder(kind, x[:125], y[:125], x[125:], y[125:], epochs=3,
                            batch_frames=128, decorrelation=0.1, context=1)
    losses = res.history["loss"]
    assert len(losses) >= 1 and np.isfinite(losses).all()
    assert res.history["val_reconstruction_loss"][-1] < float(np.var(x))  # learnt something
    assert res.reconstruct(x[125:]).shape == x[125:].shape
    specs, weights = export_encoder(res.encoder)
    enc = NumpyEncoder(specs, weights, n_inputs=513)
    frames = x[:8].reshape(-1, 513)
    assert enc(frames).shape == (64, 8)
    np.testing.assert_allclose(enc(frames), np.asarray(res.encoder(frames)), atol=1e-5)
    # The saved trainer reloads (custom decorrelation layer) with the same encoder inside.
    res.model.save(tmp_path / "ae.keras")
    again = keras.saving.load_model(tmp_path / "ae.keras")
    np.testing.assert_allclose(np.asarray(encoder_of(again)(x[0])),
                               np.asarray(res.encoder(x[0])), atol=1e-6)


def test_decoder_sees_context_frames_and_timbre_head_only_its_own():
    trainer = build_trainer(build_dense_encoder(dropout=0.0), length=12, context=2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 12, 513)).astype(np.float32)
    poked = x.copy()
    poked[0, 6] += 3.0
    a, b = trainer(x), trainer(poked)
    rec = np.abs(np.asarray(b["reconstruction"] - a["reconstruction"])).max(axis=-1)[0]
    timbre = np.abs(np.asarray(b["timbre"] - a["timbre"])).max(axis=-1)[0]
    assert (rec[4:9] > 0).all() and (rec[:4] == 0).all() and (rec[9:] == 0).all()
    assert timbre[6] > 0 and (np.delete(timbre, 6) == 0).all()


def _poked_reconstruction(trainer, frame: int) -> np.ndarray:
    """Which frames' reconstruction changes when one input frame changes."""
    x = np.random.default_rng(3).normal(size=(1, 6, 513)).astype(np.float32)
    poked = x.copy()
    poked[0, frame] += 3.0
    a, b = trainer(x)["reconstruction"], trainer(poked)["reconstruction"]
    return np.abs(np.asarray(b - a)).max(axis=-1)[0] > 0


def test_decoder_rebuilds_frame_t_from_its_code_and_the_previous_frame_only():
    encoder = build_dense_encoder(dropout=0.0)
    with_previous = build_trainer(encoder, length=6, context=0)
    # Frame 2 reaches its own reconstruction (its code) and frame 3's (as frame 3's t - 1),
    # never an earlier frame's: causal side information.
    assert _poked_reconstruction(with_previous, 2).tolist() == [0, 0, 1, 1, 0, 0]
    assert _poked_reconstruction(with_previous, 5).tolist() == [0, 0, 0, 0, 0, 1]
    without = build_trainer(encoder, length=6, context=0, previous_frame=False)
    assert _poked_reconstruction(without, 2).tolist() == [0, 0, 1, 0, 0, 0]


def test_previous_frame_of_a_runs_first_frame_is_zeros_flagged_absent_not_a_copy():
    x = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) + 1.0
    out = np.asarray(PreviousFrame()(x))
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out[:, 0], 0.0)  # no predecessor: zeros, flag 0
    np.testing.assert_array_equal(out[:, 1:, :3], x[:, :-1])
    np.testing.assert_array_equal(out[:, 1:, 3], 1.0)


def test_bottleneck_width_is_a_parameter(sequences):
    x, y = sequences
    res = train_autoencoder("dense", x[:125], y[:125], x[125:], y[125:], bottleneck=16,
                            epochs=1)
    specs, weights = export_encoder(res.encoder)
    assert NumpyEncoder(specs, weights, n_inputs=513)(x[0, :3]).shape == (3, 16)


def test_make_train_end_to_end_on_tiny_corpus(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "training", "train", "--demo-songs", "4", "--epochs", "1",
         "--max-frames", "1500", "--sequence-length", "16", "--no-ablations",
         "--models-dir", str(tmp_path),
         "--cache-dir", str(tmp_path / "cache"), "--name", "tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("tiny", "tiny-conv"):
        bundle = load_bundle(tmp_path / name)
        assert (tmp_path / name / "autoencoder.keras").is_file()
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        for key in ("corpus", "end_detector", "evaluation", "metrics", "provenance"):
            assert key in manifest, key
        assert manifest["metrics"]["mse_vs_pca"] > 0
        assert manifest["provenance"]["context"] >= 1
        assert manifest["provenance"]["decoder_previous_frame"] is True
        baselines = manifest["reconstruction_baselines"]
        assert baselines["persistence_vs_pca"] > 0 and baselines["delta_pca_vs_pca"] > 0
        assert bundle.n_channels == 8
    assert "end detector on" in out.stdout and "PCA-8 validation MSE" in out.stdout
    assert "x[t-1] + PCA-8 of the difference" in out.stdout
