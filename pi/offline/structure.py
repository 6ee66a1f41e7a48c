"""Structure metrics, exactly as ``/work/shared/structure-metrics.md`` defines them.

The timing metrics (:mod:`pi.offline.metrics`) pass a show that switches random channels at the
right moments. These judge what timing cannot: ``ssmCorr``, whether the lights repeat when the music
repeats, and ``stemF``, whether a channel follows one instrument; and both again against a
shuffled null that keeps the timing and destroys channel identity (the lifts).

Numpy only, like :mod:`pi.offline.metrics`: the MFCCs reproduce ``librosa.feature.mfcc`` at its
defaults, the onset F-measure ``mir_eval.onset.f_measure`` and the assignment
``scipy.optimize.linear_sum_assignment`` (tests check all three against the libraries).

Conventions, where the definitions leave room:

- The show at a hop is :func:`pi.offline.metrics.hop_states`' (the last row at or before it).
- The windows "before the music end" are those holding at least one music hop.
- A window whose vector is all zeros (lights exactly half on in every channel, say) has a
  cosine similarity of 0 with every other window, as scikit-learn's ``cosine_similarity``.
- The null's first row is compared with all-off, as the show metrics compare it.
"""
from __future__ import annotations

import numpy as np

from pi.offline.metrics import (HOP, SAMPLE_RATE, check_show, hop_states, mel_db, music_end_hop,
                        pearson)

N_MFCC = 20
WINDOW_S = 0.5
MIN_LAG_WINDOWS = 4   # pairs at least 2 s apart
ONSET_WINDOW_S = 0.070
NULL_SEEDS = (0, 1, 2)


def mfcc(y: np.ndarray, *, sr: int = SAMPLE_RATE, mel: np.ndarray | None = None) -> np.ndarray:
    """``librosa.feature.mfcc(y=y, sr=sr)`` at its defaults, one row per hop.

    A type-II orthonormal DCT of :func:`pi.offline.metrics.mel_db`, first 20 coefficients.

    Returns ``[shape=(1 + n // 512, 20)]`` float64.
    """
    db = mel_db(y, sr=sr) if mel is None else mel
    n = db.shape[1]
    k = np.arange(N_MFCC)[:, None]
    basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return db @ basis.T


def _window_means(x: np.ndarray, *, sr: int) -> np.ndarray:
    """Means of the rows of ``x`` (one per hop) over consecutive 0.5 s windows: window ``i``
    holds the hops with ``floor(t / 0.5) == i``."""
    window = np.floor(np.arange(len(x)) * HOP / sr / WINDOW_S).astype(np.int64)
    sums = np.zeros((window[-1] + 1, x.shape[1]))
    np.add.at(sums, window, x)
    return sums / np.bincount(window)[:, None]


def _cosine_ssm(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return unit @ unit.T


def audio_ssm(y: np.ndarray, *, sr: int = SAMPLE_RATE, mel: np.ndarray | None = None,
              end_hop: int | None = None) -> np.ndarray | None:
    """The music's side of ssmCorr: cosine self-similarity of the standardised 0.5 s MFCC
    means, over the windows before the music end ``[shape=(n_windows, n_windows)]``; None
    for a song with no music hop."""
    end = music_end_hop(y, sr=sr) if end_hop is None else end_hop
    if end < 0:
        return None
    means = _window_means(mfcc(y, sr=sr, mel=mel), sr=sr)
    std = means.std(axis=0)
    z = np.divide(means - means.mean(axis=0), std, out=np.zeros_like(means), where=std > 0)
    return _cosine_ssm(z[:_n_windows(end, sr=sr)])


def _n_windows(end_hop: int, *, sr: int) -> int:
    return int(np.floor(end_hop * HOP / sr / WINDOW_S)) + 1


def ssm_corr(music_ssm: np.ndarray | None, hop_on: np.ndarray, *,
             sr: int = SAMPLE_RATE) -> float | None:
    """Pearson correlation of the music's and the lights' self-similarity over the window
    pairs at least 2 s apart. ``hop_on`` is the show at each hop ``[shape=(n_hops, n_ch)]``."""
    if music_ssm is None:
        return None
    duty = _window_means(hop_on.astype(np.float64), sr=sr)[:len(music_ssm)] - 0.5
    lights = _cosine_ssm(duty)
    i, j = np.triu_indices(len(music_ssm), k=MIN_LAG_WINDOWS)
    return pearson(music_ssm[i, j], lights[i, j])


def switch_on_times(times_s: np.ndarray, on: np.ndarray) -> list[np.ndarray]:
    """Per channel, the times of the rows where it goes from off to on (the first row is
    compared with all-off)."""
    rising = on.copy()
    rising[1:] &= ~on[:-1]
    return [times_s[rising[:, c]] for c in range(on.shape[1])]


def onset_f_measure(reference: np.ndarray, estimated: np.ndarray, *,
                    window: float = ONSET_WINDOW_S) -> float:
    """``mir_eval.onset.f_measure(reference, estimated, window)[0]``.

    mir_eval finds a maximum matching of pairs with ``|ref - est| <= window``. On a line,
    matching each estimate in order to the earliest free reference in its window is maximal,
    because the windows' ends rise with the estimates; the bounds are computed as mir_eval's
    ``searchsorted`` computes them, so the borderline pairs agree too.
    """
    ref = np.sort(np.asarray(reference, np.float64))
    est = np.sort(np.asarray(estimated, np.float64))
    if ref.size == 0 or est.size == 0:
        return 0.0
    lo = np.searchsorted(ref, est - window, side="left")
    hi = np.searchsorted(ref, est + window, side="right")
    matched, next_free = 0, 0
    for start, stop in zip(lo.tolist(), hi.tolist()):
        k = max(start, next_free)
        if k < stop:
            matched += 1
            next_free = k + 1
    if matched == 0:
        return 0.0
    precision, recall = matched / est.size, matched / ref.size
    return 2.0 * precision * recall / (precision + recall)


def max_assignment(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one assignment with the largest summed ``score``
    ``[shape=(n_rows, n_cols)]``: ``linear_sum_assignment(score, maximize=True)``.

    The Hungarian algorithm with potentials (Jonker-Volgenant's shortest augmenting paths),
    on the cost ``-score`` transposed if needed so that rows are no more than columns.
    """
    cost = -np.asarray(score, np.float64)
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # owner[j]: the row (1-based) assigned to column j
    for row in range(1, n + 1):
        owner[0] = row
        j0 = 0
        dist = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        way = np.zeros(m + 1, np.int64)
        while owner[j0] != 0:
            used[j0] = True
            i0 = owner[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = ~used[1:] & (reduced < dist[1:])
            dist[1:][better] = reduced[better]
            way[1:][better] = j0
            free = np.flatnonzero(~used[1:]) + 1
            j1 = int(free[np.argmin(dist[free])])
            delta = dist[j1]
            u[owner[used]] += delta
            v[used] -= delta
            dist[~used] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:])
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    return (cols, rows) if transposed else (rows, cols)


def stem_f(switch_ons: list[np.ndarray], stems: dict[str, np.ndarray]) -> float | None:
    """Mean onset F over the best one-to-one assignment of channels to stems; None without
    stems."""
    if not stems or not switch_ons:
        return None
    score = np.array([[onset_f_measure(s, ch) for s in stems.values()] for ch in switch_ons])
    rows, cols = max_assignment(score)
    return float(score[rows, cols].mean())


def shuffled_null(on: np.ndarray, *, seed: int) -> np.ndarray:
    """The show's timing with its channel identity destroyed: whenever a row changes ``n``
    channels, ``n`` channels chosen uniformly at random without replacement flip instead.
    ``on`` and the result are ``[shape=(n_rows, n_channels)]`` bool."""
    rng = np.random.default_rng(seed)
    n_changed = np.count_nonzero(np.diff(on, axis=0, prepend=False), axis=1)
    state = np.zeros(on.shape[1], bool)
    out = np.empty_like(on)
    for i, n in enumerate(n_changed.tolist()):
        if n:
            state[rng.choice(on.shape[1], size=n, replace=False)] ^= True
        out[i] = state
    return out


def song_reference(y: np.ndarray, *, sr: int = SAMPLE_RATE) -> tuple[np.ndarray | None, int]:
    """The audio's side of the structure metrics, ``(audio_ssm, music_end_hop)``: compute it
    once when several shows of one song are scored."""
    end = music_end_hop(y, sr=sr)
    return audio_ssm(y, sr=sr, end_hop=end), end


def structure_metrics(y: np.ndarray, *, times_s: np.ndarray, states: np.ndarray,
                      stems: dict[str, np.ndarray] | None = None, sr: int = SAMPLE_RATE,
                      reference: tuple[np.ndarray | None, int] | None = None) -> dict:
    """ssmCorr, stemF, their shuffled nulls (mean over seeds 0, 1, 2) and the lifts.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]  the song, mono float at ``sr``
    times_s, states : the show's rows, as :func:`pi.offline.metrics.show_metrics` takes them
    stems : ``{stem: onset seconds}``, already merged and filtered (see
        ``training.corpus.stems``); without them the stem metrics are None
    reference : the song's :func:`song_reference`, if already computed

    Returns
    -------
    dict with ``ssmCorr``, ``ssmCorr_null``, ``ssmLift``, ``stemF``, ``stemF_null``,
    ``stemLift``; None marks an undefined value.
    """
    times_s, on = check_show(times_s, states)
    music_ssm, _ = reference if reference is not None else song_reference(y, sr=sr)
    n_hops = 1 + len(y) // HOP
    stems = {k: np.asarray(v, np.float64) for k, v in (stems or {}).items()}

    def score(show: np.ndarray) -> tuple[float | None, float | None]:
        return (ssm_corr(music_ssm, hop_states(times_s, show, n_hops=n_hops, sr=sr), sr=sr),
                stem_f(switch_on_times(times_s, show), stems))

    ssm, stem = score(on)
    nulls = [score(shuffled_null(on, seed=s)) for s in NULL_SEEDS]
    out = {"ssmCorr": ssm, "stemF": stem}
    for i, (name, lift) in enumerate((("ssmCorr", "ssmLift"), ("stemF", "stemLift"))):
        values = [n[i] for n in nulls if n[i] is not None]
        null = float(np.mean(values)) if len(values) == len(nulls) else None
        out[f"{name}_null"] = null
        out[lift] = None if out[name] is None or null is None else out[name] - null
    return out
