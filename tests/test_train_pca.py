"""The PCA baselines of `make train` (training/models/pca.py): fit_pca gives the same components
as an SVD of the frames, with a fixed sign; the side-information baselines compute what they
say."""
import numpy as np

from training.models.pca import fit_pca, pca_mse, side_information_baselines


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


def _runs(rng, n, basis, length=5, bins=12):
    # Random walks whose steps live in 2 dimensions: the difference of neighbouring frames
    # has rank 2, the frames themselves do not.
    steps = rng.normal(size=(n, length, 2)) @ basis
    start = 3.0 * rng.normal(size=(n, 1, bins))
    return (start + np.cumsum(steps, axis=1)).astype(np.float32)


def test_side_information_baselines_compute_what_they_say():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(2, 12))
    x_train, x_val = _runs(rng, 400, basis), _runs(rng, 50, basis)
    b = side_information_baselines(x_train, x_val, k=2, mse_pca=2.0)
    now, prev = x_val[:, 1:].reshape(-1, 12), x_val[:, :-1].reshape(-1, 12)
    assert abs(b["persistence_mse"] - np.mean((now - prev) ** 2)) < 1e-6
    assert b["persistence_vs_pca"] == b["persistence_mse"] / 2.0
    # x[t-1] + PCA-2 of the difference is exact here: the steps have rank 2.
    assert b["delta_pca_mse"] < 1e-6 * b["persistence_mse"]
    # The least-squares map from PCA-2 code and frame t-1 is at least as good as frame t-1
    # alone (one of the maps it could choose), and equals a direct lstsq fit.
    mean, comp = fit_pca(x_train.reshape(-1, 12), k=2)

    def design(x):
        n, p = x[:, 1:].reshape(-1, 12), x[:, :-1].reshape(-1, 12)
        return np.hstack([(n - mean) @ comp.T, p, np.ones((len(n), 1))]), n

    a, y = design(x_train)
    w = np.linalg.lstsq(a, y, rcond=None)[0]
    av, yv = design(x_val)
    assert abs(b["pca_code_and_previous_mse"] - np.mean((av @ w - yv) ** 2)) < 1e-3 * \
        b["persistence_mse"]
    assert b["pca_code_and_previous_mse"] <= b["persistence_mse"]


def test_side_information_baselines_need_runs_of_two_frames():
    x = np.zeros((3, 1, 4), np.float32)
    try:
        side_information_baselines(x, x, k=1, mse_pca=1.0)
    except ValueError as exc:
        assert "expected runs" in str(exc) and "(3, 1, 4)" in str(exc)
    else:
        raise AssertionError("runs of one frame were accepted")
