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


def side_information_baselines(x_train: np.ndarray, x_val: np.ndarray, *, k: int,
                               mse_pca: float) -> dict:
    """Fair baselines for a decoder that also sees frame t - 1 (``build_trainer``'s
    ``previous_frame``): linear reconstructions of frame t that get the same side information
    and k numbers of frame t, fitted on ``x_train``, scored on ``x_val`` (runs of
    consecutive frames ``[shape=(n, length, bins)]``) over the frames that have a predecessor
    in their run, and divided by ``mse_pca`` (PCA-k of frame t alone, as ``mse_vs_pca``):

    - ``persistence``: frame t - 1 itself (no numbers of frame t);
    - ``delta_pca``: frame t - 1 plus PCA-k of the difference, fitted on the training
      differences: ``x_{t-1} + PCAk(x_t - x_{t-1})``;
    - ``pca_code_and_previous``: the least-squares linear map from frame t's PCA-k code and
      frame t - 1 (and a constant) to frame t: what a linear decoder does with the same
      inputs as the trained one, with PCA's codes.
    """
    if x_train.ndim != 3 or x_val.ndim != 3 or x_val.shape[1] < 2:
        raise ValueError(f"side_information_baselines: expected runs [shape=(n, length >= 2, "
                         f"bins)], found {x_train.shape} and {x_val.shape}")
    bins = x_val.shape[-1]

    def pairs(x):  # (frame t, frame t - 1) for every frame with a predecessor in its run
        return x[:, 1:].reshape(-1, bins), x[:, :-1].reshape(-1, bins)

    (now_tr, prev_tr), (now_val, prev_val) = pairs(x_train), pairs(x_val)
    persistence = float(np.mean((now_val - prev_val) ** 2))
    delta_pca = pca_mse(now_val - prev_val, *fit_pca(now_tr - prev_tr, k=k))
    mean, components = fit_pca(x_train.reshape(-1, bins), k=k)

    def design(now, prev):
        return np.hstack([(now - mean) @ components.T, prev, np.ones((len(now), 1), now.dtype)])

    a = design(now_tr, prev_tr).astype(np.float64)
    # Normal equations (a ridge of 1e-6 of the diagonal's mean for safety): 522 x 522.
    gram = a.T @ a
    gram[np.diag_indices_from(gram)] += 1e-6 * np.trace(gram) / len(gram)
    weights = np.linalg.solve(gram, a.T @ now_tr)
    linear = float(np.mean((design(now_val, prev_val) @ weights - now_val) ** 2))
    mses = {"persistence": persistence, "delta_pca": delta_pca,
            "pca_code_and_previous": linear}
    return {"frames": "validation frames with a predecessor in their run", "k": k,
            **{f"{name}_mse": v for name, v in mses.items()},
            **{f"{name}_vs_pca": v / mse_pca for name, v in mses.items()}}


def describe_baselines(b: dict) -> str:
    """One line for the log and the report."""
    k = b["k"]
    return (f"Baselines with frame t-1 as side information (MSE / PCA-{k} of frame t): "
            f"persistence x[t-1] {b['persistence_vs_pca']:.2f}; x[t-1] + PCA-{k} of the "
            f"difference {b['delta_pca_vs_pca']:.2f}; least squares from PCA-{k} code and "
            f"x[t-1] {b['pca_code_and_previous_vs_pca']:.2f}.")
