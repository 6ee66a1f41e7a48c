"""render's CSV: every number as Python's own formatting writes it (``%.6f`` times, ``%.5f``
activations), whichever way the rows are made (pi/offline/render.py formats float32
activations as whole arrays)."""
from __future__ import annotations

import numpy as np
import pytest

from pi.offline.render import Timeline, write_csv


def _python_csv(timeline: Timeline) -> str:
    n = timeline.states.shape[1]
    head = ",".join(["time_s"] + [f"ch{i + 1}" for i in range(n)]
                    + [f"act{i + 1}" for i in range(n)]) + "\r\n"
    return head + "".join(
        f"{t:.6f}," + ",".join("1" if s else "0" for s in row) + ","
        + ",".join(f"{a:.5f}" for a in acts) + "\r\n"
        for t, row, acts in zip(timeline.times_s.tolist(), timeline.states.tolist(),
                                timeline.activations.tolist()))


def _awkward(rng, n, k, dtype=np.float32):
    acts = (rng.normal(size=(n, k)) * 10.0 ** rng.integers(-6, 5, size=(n, k))).astype(dtype)
    flat = acts.reshape(-1)
    flat[::7] = rng.integers(-5000, 5000, size=flat[::7].shape) / 64  # exact halves: to even
    flat[::11] = -0.0            # Python writes "-0.00000"
    flat[::13] = -1e-7           # rounds to "-0.00000" too
    flat[::17] = 123456.789
    return acts


@pytest.mark.parametrize("dtype, poison", [(np.float32, None), (np.float32, np.nan),
                                           (np.float32, np.inf), (np.float32, 3e9),
                                           (np.float64, None)])
def test_csv_rows_are_pythons_formatting(tmp_path, dtype, poison):
    rng = np.random.default_rng(3)
    n, k = 2500, 8  # more than one block of 1024 rows
    acts = _awkward(rng, n, k, dtype)
    if poison is not None:
        acts[1500, 3] = poison  # that block is written the slow way, the others not
    timeline = Timeline((np.arange(n) * 512 + 1024) / 44100, rng.random((n, k)) < 0.5, acts,
                        duration_s=n * 512 / 44100)
    write_csv(timeline, tmp_path / "show.csv")
    assert (tmp_path / "show.csv").read_bytes().decode() == _python_csv(timeline)


def test_an_empty_song_is_the_header_alone(tmp_path):
    timeline = Timeline(np.zeros(0), np.zeros((0, 4), bool), np.zeros((0, 4), np.float32))
    write_csv(timeline, tmp_path / "show.csv")
    assert (tmp_path / "show.csv").read_bytes().decode() == _python_csv(timeline)
