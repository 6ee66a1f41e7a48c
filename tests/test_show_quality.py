"""The show logic on synthetic music, judged with the shared show metrics."""
import numpy as np
import pytest

from pi.show.features import song_features, frame_times
from pi.show.mapping import MappingParams, ShowMapper
from pi.show.relay_rules import ChannelOverrides
from pi.offline.metrics import show_metrics
from pi.show.pipeline import BandsShow
from training.corpus.synth import synth_song


@pytest.fixture(scope="module", params=["fade", "quiet_tail", "hard_stop"])
def song(request):
    y, end = synth_song(seconds=30.0, seed=11, ending=request.param)
    return y, end, song_features(y)


def _run(frames, **kw):
    show = BandsShow(**kw)
    return show.process(frames, frame_times(len(frames))).states


def test_bands_show_meets_the_goals_on_synthetic_music(song):
    y, _, frames = song
    states = _run(frames)
    m = show_metrics(y, times_s=frame_times(len(frames)), states=states)
    assert m["dead"] == 0
    assert m["min_run_ms"] >= 100
    assert m["toggles_per_s"] <= 3.0
    assert m["tail_off"] is None or m["tail_off"] >= 0.95
    assert m["fluxCorr"] > 0.2  # changes land on the drums
    assert m["entropy_bits"] >= 4.0


def test_everything_off_after_the_music_ends(song):
    y, end, frames = song
    states = _run(frames)
    after = frame_times(len(frames)) > end + 0.5
    if after.any():
        assert not states[after].any()


def test_start_all_off_and_overrides(song):
    _, _, frames = song
    states = _run(frames, overrides=ChannelOverrides(invert=(0,), always_on=(1,),
                                                    always_off=(2,)))
    plain = _run(frames)
    assert not plain[0].any()
    assert np.array_equal(states[:, 0], ~plain[:, 0])
    assert states[:, 1].all() and not states[:, 2].any()


def test_delay_moves_changes_later_by_whole_frames(song):
    _, _, frames = song
    acts = BandsShow().activations(frames)
    base = MappingParams(center=np.full(8, -50.0, np.float32), scale=np.full(8, 6.0, np.float32))
    times = frame_times(len(frames))
    runs = {}
    for d in (0, 2):
        p = MappingParams(**{**base.__dict__, "delay_frames": float(d)})
        runs[d] = ShowMapper(p).run(acts, frames, times_s=times)[0]
    assert np.array_equal(runs[2][2:], runs[0][:-2])
