"""The PCA baseline of `make train` (training/models/pca.py fit_pca): the same components as an SVD
of the frames, with a fixed sign."""
import numpy as np

from training.models.pca import fit_pca, pca_mse


def test_pca_components_are_the_svds_with_a_fixed_sign():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 6)) * [9, 7, 5, 3, 2, 1]) @ rng.normal(size=(6, 40))
    x = (x + 0.1 * rng.normal(size=x.shape) + 3.0).astype(np.float32)
    mean, components = fit_pca(x, k=4)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(np.abs(components @ vt[:4].T), np.eye(4), atol=1e-4)
    assert (components[np.arange(4), np.abs(components).argmax(axis=1)] > 0).all()
    svd_mse = float(np.mean(((x - x.mean(0)) @ vt[:4].T @ vt[:4] + x.mean(0) - x) ** 2))
    assert abs(pca_mse(x, mean, components) - svd_mse) < 1e-4 * svd_mse
