"""Bundle format: round trip, validation on load, atomic writes. No Keras needed."""
import json

import numpy as np
import pytest

from pi.show.bundle import BundleError, load_bundle, pack_arrays, write_bundle
from pi.show.features import DEFAULT_PARAMS
from pi.show.mapping import MappingParams


def _tiny(rng, n_channels=8):
    layers = [{"type": "dense", "activation": "silu", "key": "h"},
              {"type": "dense", "activation": "tanh", "key": "b"}]
    weights = {"h.kernel": rng.normal(size=(513, 16)).astype(np.float32) * 0.05,
               "h.bias": np.zeros(16, np.float32),
               "b.kernel": rng.normal(size=(16, n_channels)).astype(np.float32),
               "b.bias": np.zeros(n_channels, np.float32)}
    arrays = pack_arrays(
        encoder_weights=weights,
        norm=(np.full(513, -60, np.float32), np.full(513, 10, np.float32)),
        mapping=MappingParams(center=np.zeros(n_channels, np.float32),
                              scale=np.ones(n_channels, np.float32)),
        pca=(np.zeros(513, np.float32), np.zeros((n_channels, 513), np.float32)))
    manifest = {"name": "tiny", "feature_params": DEFAULT_PARAMS.as_dict(),
                "architecture": {"kind": "dense", "layers": layers, "n_channels": n_channels}}
    return manifest, arrays


def test_round_trip(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    b = load_bundle(tmp_path / "m")
    assert b.name == "tiny" and b.n_channels == 8
    frames = np.random.default_rng(1).normal(-50, 10, (5, 513)).astype(np.float32)
    acts = b.activations(frames)
    assert acts.shape == (5, 8) and np.all(np.abs(acts) <= 1)
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["format_version"] == 1


def test_sixteen_channels(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0), n_channels=16)
    write_bundle(tmp_path / "m16", manifest=manifest, arrays=arrays)
    assert load_bundle(tmp_path / "m16").n_channels == 16


def test_failed_export_leaves_previous_bundle_intact(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    before = (tmp_path / "m" / "encoder.npz").read_bytes()

    def interrupted(tmp):
        raise KeyboardInterrupt  # as if make train were stopped while saving the Keras model

    with pytest.raises(KeyboardInterrupt):
        write_bundle(tmp_path / "m", manifest=dict(manifest, name="new"), arrays=arrays,
                     extra=interrupted)
    assert (tmp_path / "m" / "encoder.npz").read_bytes() == before
    assert load_bundle(tmp_path / "m").name == "tiny"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left behind


def test_invalid_bundle_is_never_written(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    bad = dict(arrays, **{"norm.std": np.zeros(513, np.float32)})
    with pytest.raises(BundleError, match="norm.std"):
        write_bundle(tmp_path / "m", manifest=manifest, arrays=bad)
    assert load_bundle(tmp_path / "m").name == "tiny"


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "encoder.npz").write_bytes(b"garbage"), "sha256"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "expected JSON"),
    (lambda d: (d / "encoder.npz").unlink(), "encoder.npz: expected a bundle file"),
])
def test_corrupt_bundle_gives_clear_error(tmp_path, damage, match):
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    damage(tmp_path / "m")
    with pytest.raises(BundleError, match=match):
        load_bundle(tmp_path / "m")


def test_wrong_format_version_and_missing_key(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    path = tmp_path / "m" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps(dict(m, format_version=99)))
    with pytest.raises(BundleError, match="format_version: expected 1, found 99"):
        load_bundle(tmp_path / "m")
    del arrays["encoder/b.bias"]
    with pytest.raises(BundleError, match="b.bias"):
        write_bundle(tmp_path / "m2", manifest=manifest, arrays=arrays)


def test_npz_with_pickled_object_is_rejected(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    npz = tmp_path / "m" / "encoder.npz"
    np.savez(npz, **arrays, evil=np.array([{"a": 1}], dtype=object))
    from pi.show.bundle import sha256_file
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(dict(m, npz_sha256=sha256_file(npz))))
    with pytest.raises(BundleError, match="npz"):
        load_bundle(tmp_path / "m")
