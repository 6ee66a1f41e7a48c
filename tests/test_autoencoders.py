"""Keras autoencoders: training on tiny data, the numpy encoder against Keras, export."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pi.show.bundle import load_bundle  # noqa: E402
from pi.show.encoder import NumpyEncoder  # noqa: E402
from training.models.autoencoders import (MixUpBatches, encoder_of, export_encoder,  # noqa: E402
                                   train_autoencoder)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    # Low-rank frames plus noise: something an 8-unit bottleneck can learn.
    basis = rng.normal(size=(4, 513))
    return (rng.normal(size=(1200, 4)) @ basis + 0.1 * rng.normal(size=(1200, 513))).astype(
        np.float32)


@pytest.mark.parametrize("kind", ["seed", "dense", "conv"])
def test_trains_and_numpy_encoder_matches_keras(kind, frames):
    res = train_autoencoder(kind, frames[:1000], frames[1000:], epochs=3, batch_size=128,
                            decorrelation=0.1)
    losses = res.history["loss"]
    assert len(losses) >= 1 and np.isfinite(losses).all()
    assert res.history["val_loss"][-1] < float(np.var(frames))  # learnt something
    specs, weights = export_encoder(res.encoder)
    enc = NumpyEncoder(specs, weights, n_inputs=513)
    expected = np.asarray(res.encoder(frames[:64]))
    assert enc(frames[:64]).shape == (64, 8)
    np.testing.assert_allclose(enc(frames[:64]), expected, atol=1e-5)


def test_bottleneck_width_is_a_parameter(frames):
    res = train_autoencoder("dense", frames[:1000], frames[1000:], bottleneck=16, epochs=1)
    specs, weights = export_encoder(res.encoder)
    assert NumpyEncoder(specs, weights, n_inputs=513)(frames[:3]).shape == (3, 16)


def test_mixup_batches_mix_inputs_and_targets_alike(frames):
    data = MixUpBatches(frames, batch_size=50, alpha=0.2, seed=1)
    x, y = data[0]
    assert x.shape == (50, 513) and np.array_equal(x, y)
    assert not np.array_equal(x, frames[data.order[:50]])  # actually mixed


def test_saved_keras_model_reloads_with_custom_layer(tmp_path, frames):
    res = train_autoencoder("dense", frames[:1000], frames[1000:], epochs=1, decorrelation=0.1)
    res.model.save(tmp_path / "ae.keras")
    again = keras.saving.load_model(tmp_path / "ae.keras")
    np.testing.assert_allclose(np.asarray(encoder_of(again)(frames[:8])),
                               np.asarray(res.encoder(frames[:8])), atol=1e-6)


def test_make_train_end_to_end_on_tiny_corpus(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "training", "train", "--demo-songs", "4", "--epochs", "2",
         "--max-frames", "3000", "--no-ablations", "--models-dir", str(tmp_path),
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
        assert bundle.n_channels == 8
    assert "end detector on" in out.stdout and "PCA-8 validation MSE" in out.stdout
