"""PCA-k of the training frames: the linear baseline the autoencoders' reconstruction is
measured against (issue 8: the dense model's MSE over PCA-8's)."""
from __future__ import annotations

import numpy as np


def fit_pca(x: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA-k of ``x [shape=(n, 513)]``: mean ``[shape=(513,)]`` and components
    ``[shape=(k, 513)]``."""
    mean = x.mean(axis=0, dtype=np.float64)
    # The eigenvectors of the 513 x 513 covariance, not an SVD of the whole (n, 513) matrix:
    # the same components, without computing the n x 513 left factor (45 s -> under 1 s).
    centred = x - mean
    evals, evecs = np.linalg.eigh(centred.T @ centred)
    components = evecs[:, np.argsort(evals)[::-1][:k]].T
    # A fixed sign per component (its largest weight positive), so a rerun gives the same.
    components *= np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])[:, None]
    return mean.astype(np.float32), components.astype(np.float32)


def pca_mse(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> float:
    """Mean squared error of ``x`` projected on ``components`` and back."""
    code = (x - mean) @ components.T
    return float(np.mean((code @ components + mean - x) ** 2))
