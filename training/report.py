"""The training report: PNG figures and an index.html next to the bundle (headless matplotlib)."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from pi.offline.metrics import HEADLINE, Headline

# The report's rows: reconstruction, then the headline metrics every report prints.
ROWS = (Headline("mse_vs_pca", "MSE / PCA-8", "{:.2f}", "≤ 0.85"),) + HEADLINE


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "figure.dpi": 110})
    return plt


def plot_activations(path: Path, *, song: str, times_s, activations, states) -> None:
    plt = _plt()
    n = activations.shape[1]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    for c in range(n):
        ax1.plot(times_s, activations[:, c], lw=0.7, label=f"ch{c + 1}")
    ax1.set_ylabel("bottleneck activation")
    ax1.set_title(f"Encoder activations and relay states: {song}")
    ax1.legend(ncol=n, fontsize=8, loc="upper right")
    ax2.imshow(states.T.astype(float), aspect="auto", interpolation="nearest", cmap="Greens",
               extent=(times_s[0], times_s[-1], n + 0.5, 0.5))
    ax2.set_yticks(range(1, n + 1))
    ax2.set_ylabel("channel (green = on)")
    ax2.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_end_detector(path: Path, *, song: str, times_s, proba, detected_s, true_s) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(times_s, proba, lw=0.8, label="P(ending)")
    ax.axvline(detected_s, color="tab:red", ls="--", label=f"detected end {detected_s:.1f} s")
    ax.axvline(true_s, color="black", ls=":", label=f"true end {true_s:.1f} s")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_title(f"End detector on a validation song: {song}")
    ax.legend(loc="center left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_coefficients(path: Path, *, coef: np.ndarray, sample_rate: int, n_fft: int) -> None:
    plt = _plt()
    bins = coef[:-1]
    freqs = np.arange(len(bins)) * sample_rate / n_fft
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [6, 1]})
    ax1.plot(freqs / 1000, bins, lw=0.8)
    ax1.axhline(0, color="grey", lw=0.5)
    ax1.set_xlabel("frequency bin (kHz)")
    ax1.set_ylabel("coefficient (standardised input)")
    ax1.set_title("End detector: logistic-regression coefficients")
    ax2.bar(["position\nin song"], [coef[-1]], color="tab:orange")
    ax2.axhline(0, color="grey", lw=0.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_losses(path: Path, *, histories: dict[str, dict], pca_mse: float) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.axhline(pca_mse, color="black", ls=":", label=f"PCA-8 validation ({pca_mse:.3f})")
    for i, (label, hist) in enumerate(histories.items()):
        for key, head, ls in (("reconstruction_loss", "reconstruction", "-"),
                              ("timbre_loss", "timbre", ":")):
            for prefix, split, alpha in (("", "training", 0.5), ("val_", "validation", 1.0)):
                values = hist.get(prefix + key, [])
                ax.plot(np.arange(1, len(values) + 1), values, color=f"C{i}", ls=ls,
                        alpha=alpha, label=f"{label} {head} ({split})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised dB frames; standardised timbre coefficients)")
    ax.set_yscale("log")
    ax.set_title("Autoencoder loss curves")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table(results: dict[str, dict]) -> str:
    labels = list(results)
    head = "".join(f"<th>{html.escape(lab)}</th>" for lab in labels)
    rows = []
    for key, name, fmt, goal in ROWS:
        cells = "".join(
            f"<td>{'-' if results[lab].get(key) is None else fmt.format(results[lab][key])}</td>"
            for lab in labels)
        rows.append(f"<tr><th>{name}</th><td>{goal}</td>{cells}</tr>")
    return (f"<table><tr><th>metric</th><th>goal</th>{head}</tr>{''.join(rows)}</table>")


def write_report(out_dir: Path, *, title: str, results: dict[str, dict], histories, pca_mse,
                 activation_song: dict, end_song: dict, coef: np.ndarray, notes: list[str],
                 sample_rate: int, n_fft: int) -> Path:
    """Write the PNGs and ``index.html`` into ``out_dir``; returns the index path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_activations(out_dir / "activations.png", **activation_song)
    plot_end_detector(out_dir / "end_detector.png", **end_song)
    plot_coefficients(out_dir / "coefficients.png", coef=coef, sample_rate=sample_rate,
                      n_fft=n_fft)
    plot_losses(out_dir / "losses.png", histories=histories, pca_mse=pca_mse)
    figures = [("activations.png", "Activations and relay states over a validation song"),
               ("end_detector.png", "End detector probability"),
               ("coefficients.png", "End detector coefficients"),
               ("losses.png", "Loss curves")]
    body = "".join(f"<h2>{html.escape(cap)}</h2><img src='{src}' alt='{html.escape(cap)}'>"
                   for src, cap in figures)
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>{html.escape(title)}</h1><ul>{items}</ul>
<h2>Evaluation on held-out songs</h2>{_table(results)}
<p>Columns: the exported models, then (with <code>--ablations</code>) the ablations
(the same design on fewer frames, reconstruction only; no temporal context in the decoder;
no previous frame in the decoder; no auxiliary decorrelation loss) and LightShowPi-style
bands through the same mapping. mse/pca compares the training-only reconstruction head (frame t
from its own code, its neighbours' codes and the spectrum of frame t-1) with PCA-8 of frame t
alone; the notes above give linear baselines with the same frame t-1.</p>
{body}</body></html>"""
    index = out_dir / "index.html"
    index.write_text(page)
    return index
