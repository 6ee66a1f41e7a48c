"""The look-ahead show (pi/show/lookahead.py), its plan cache (pi/show/plans.py), and where
it plays: render's default, and the daemon's playlist and file sources."""
from __future__ import annotations

import csv
import json
import logging
import shutil
import threading

import numpy as np
import pytest
import soundfile as sf

from pi.cli import main as cli
from pi.show.bundle import shipped_bundle
from pi.daemon.loop import Daemon
from pi.audio.sources import END
from pi.show.features import StreamingFeatures, frame_times, song_features
from pi.show.lookahead import (LookaheadParams, last_music_frame, merge_short_runs,
                                plan_states, snap_edges)
from pi.outputs.base import MockOutput
from pi.show.relay_rules import WINDOW_S
from pi.show.plans import PlanCache, Planner, plan_song, show_key
from pi.offline.render import render_blocks, render_song
from pi.show.pipeline import make_show
from pi.config.load import Config
from training.corpus.synth import synth_song

RATE = 44100
DT = 512 / RATE


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    d = tmp_path_factory.mktemp("songs")
    y, _ = synth_song(seconds=8.0, seed=21, ending="hard_stop")
    sf.write(d / "one.wav", y, RATE)
    y, _ = synth_song(seconds=6.0, seed=22, ending="fade")
    sf.write(d / "two.wav", y, RATE)
    return d


def _random_inputs(n=2000, k=8, seed=0):
    rng = np.random.default_rng(seed)
    acts = np.cumsum(rng.normal(size=(n, k)), axis=0)  # slow wanders: sections
    bands = rng.normal(-40, 3, size=(n, 128))
    bands[::20] += 15  # an onset every 20 frames
    level = np.full(n, -20.0)
    return acts, level, bands


def _runs(states):
    """Lengths of the runs between two changes, over all channels."""
    out = []
    for c in range(states.shape[1]):
        ch = np.flatnonzero(states[1:, c] != states[:-1, c]) + 1
        out += np.diff(ch).tolist()
    return np.array(out)


def test_edges_move_to_the_nearest_onset_in_reach_and_keep_their_order():
    want = np.zeros((100, 3), bool)
    want[30:60, 0] = True    # edges 30 and 60: onsets at 27 and 62
    want[10:50, 1] = True    # no onset within 3 frames of 10 or 50: they stay
    want[70:72, 2] = True    # edges 70 and 72 are both nearest to 71: a burst near one onset
    out = snap_edges(want=want, onsets=np.array([27, 62, 71]), max_move=3)
    assert np.flatnonzero(np.diff(out[:, 0].astype(int))).tolist() == [26, 61]
    assert np.flatnonzero(np.diff(out[:, 1].astype(int))).tolist() == [9, 49]
    # The burst is not snapped away: on from its onset, for at least min_gap frames.
    assert np.flatnonzero(out[:, 2]).tolist() == [71]
    spaced = snap_edges(want=want, onsets=np.array([27, 62, 71]), max_move=3, min_gap=5)
    assert np.flatnonzero(spaced[:, 2]).tolist() == [71, 72, 73, 74, 75]


def test_plan_switches_on_onsets_holds_runs_and_is_deterministic():
    acts, level, bands = _random_inputs()
    # The section states alone: the accents on top are tests/test_accents.py's.
    params = LookaheadParams(onset_shift_frames=0, accent_rate=0.0)
    plan = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                       silence_db=-60.0, params=params)
    again = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                        silence_db=-60.0, params=params)
    np.testing.assert_array_equal(plan.states, again.states)
    np.testing.assert_array_equal(plan.levels, again.levels)
    assert set(plan.onsets.tolist()) <= set(range(0, 2000, 20))  # the peaks, unshifted
    changes = np.flatnonzero((plan.states[1:] != plan.states[:-1]).any(axis=1)) + 1
    on_onset = np.isin(changes, plan.onsets)
    assert on_onset.mean() > 0.9, f"{on_onset.mean():.2f} of the changes fall on onsets"
    assert _runs(plan.states).min() >= np.ceil(params.hold_s / DT)
    assert 0.2 < plan.states.mean() < 0.8  # half the time above the median, roughly
    assert ((plan.levels > 0) == plan.states).all()


def test_plan_is_all_off_in_silence_and_after_the_music():
    acts, level, bands = _random_inputs()
    level[800:1200] = -90.0   # a silent break
    level[1700:] = -90.0      # and the end
    plan = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                       silence_db=-60.0)
    # Off at once, unless the relay budget (3 switches in any second) holds a channel back.
    late = int(np.ceil(WINDOW_S / DT))
    assert not plan.states[800 + late:1200].any() and not plan.states[1700 + late:].any()
    assert plan.states[:800].any() and plan.states[1200:1700].any()


def test_a_quiet_passage_keeps_its_lights_but_the_fade_out_is_dark():
    """The causal gate closes 14 dB below the running loud level; the planner knows the
    whole song, so only what follows the music's end (the last frame within 13 dB of the
    median level) goes dark."""
    acts, level, bands = _random_inputs()
    level[:] = -20.0
    level[600:1000] = -45.0                    # a soft verse, 25 dB down, then loud again
    level[1600:] = np.linspace(-36, -58, len(level) - 1600)  # the fade-out
    plan = plan_states(activations=acts, level_db=level, bands_db=bands, dt=DT,
                       silence_db=-60.0)
    assert last_music_frame(level_db=level, within_db=13.0) == 1599
    assert plan.states[650:1000].any(axis=0).sum() >= 2  # the verse has lights
    assert not plan.states[1600 + int(np.ceil(WINDOW_S / DT)):].any()


def test_merge_short_runs_leaves_no_short_run():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 30, size=(60, 4))  # runs of 1 to 29 frames
    states = np.stack([np.repeat(np.arange(60) % 2 == 1, lengths[:, c])[:500]
                       for c in range(4)], axis=1)
    out = merge_short_runs(states=states, min_frames=10)
    assert len(_runs(states)) > len(_runs(out)) > 40
    assert _runs(out).min() >= 10


def test_render_plays_the_look_ahead_show_by_default_and_the_causal_one_on_request(
        songs, tmp_path, capsys):
    song = songs / "one.wav"
    paths = {kind: tmp_path / f"{kind}.csv" for kind in ("default", "causal")}
    assert cli.main(["render", str(song), "--csv", str(paths["default"])]) == 0
    assert "look-ahead" in capsys.readouterr().out
    assert cli.main(["render", str(song), "--csv", str(paths["causal"]), "--causal"]) == 0
    assert "causal" in capsys.readouterr().out
    tables = {k: np.array(list(csv.reader(p.open()))[1:], float) for k, p in paths.items()}
    show = make_show()
    y = song_features(_read(song))
    planned = show.plan(y, frame_times(len(y)))
    np.testing.assert_array_equal(tables["default"][:, 1:9], planned.states)
    causal = render_song(song, make_show())
    np.testing.assert_array_equal(tables["causal"][:, 1:9], causal.states)
    assert not np.array_equal(tables["default"][:, 1:9], tables["causal"][:, 1:9])


def _read(path):
    from pi.audio.decode import read_song

    return read_song(path)


def test_render_help_says_it_is_what_playlist_mode_plays(capsys):
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exactly the show that playlist mode plays" in text and "--causal" in text


def test_plan_cache_hits_misses_and_a_new_bundle_invalidates_it(songs, tmp_path):
    song = tmp_path / "song.wav"
    shutil.copy(songs / "two.wav", song)
    bundle = tmp_path / "model"
    shutil.copytree(shipped_bundle(), bundle)
    show = make_show(model=bundle)
    cache = PlanCache(tmp_path / "plans", show_digest=show_key(show))
    assert cache.load(song) is None  # miss
    plan = plan_song(song, show)
    cache.store(song, plan)
    got = cache.load(song)  # hit
    np.testing.assert_array_equal(got.states, plan.states)
    np.testing.assert_allclose(got.levels, plan.levels, atol=1e-6)
    # A new bundle: same shape and name, different training.
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["trained_at"] = "another day"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    retrained = make_show(model=bundle)
    assert retrained.name == show.name
    assert PlanCache(tmp_path / "plans", show_digest=show_key(retrained)).load(song) is None
    # A changed song (new contents, new mtime) is a miss too.
    sf.write(song, np.zeros(RATE, np.float32), RATE)
    assert cache.load(song) is None


def test_a_cached_plan_is_ready_at_once_while_the_planner_is_busy(songs, tmp_path):
    show = make_show(mapper="bands")
    cache = PlanCache(tmp_path / "plans", show_digest=show_key(show))
    cached = songs / "two.wav"
    cache.store(cached, plan_song(cached, show))
    release = threading.Event()

    def slow_plan(song, show):  # the worker stays busy with another song
        release.wait()
        return plan_song(song, show)

    planner = Planner(show, cache=cache, plan=slow_plan)
    try:
        planner.request(songs / "one.wav")
        got = planner.get(cached)  # no wait: straight from the cache
        assert got is not None and got.states.shape[1] == 8
    finally:
        release.set()
        planner.close()


def _run_daemon(tmp_path, *songs_):
    rec = tmp_path / "rec.jsonl"
    config = Config.from_dict({"audio": {"source": "file", "playlist": [str(s) for s in songs_]},
                               "outputs": {"enabled": ["mock"], "mock": {"record": str(rec)}}})
    return Daemon(config), rec


def test_the_daemon_plays_each_songs_plan_at_its_played_position(songs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    one, two = songs / "one.wav", songs / "two.wav"
    daemon, rec = _run_daemon(tmp_path, one, two)
    # A check that must match render from each song's first frame (run --plan-wait) holds a
    # song's first block for its plan, up to a bound never reached here. The appliance does
    # not wait (below).
    daemon.plan_wait_s = 600.0
    assert daemon.run() == 0
    sets = [r for r in MockOutput.read(rec) if r["event"] == "set"]
    assert caplog.text.count("playing its look-ahead show") == 2
    plan_one, plan_two = (render_song(s, make_show(), lookahead=True) for s in (one, two))
    n_one = len(_read(one))
    live = np.array([r["states"] for r in sets], bool)
    first = len(plan_one.states)
    np.testing.assert_array_equal(live[:first], plan_one.states)
    # The second song starts between two of the stream's frames: each frame shows the plan's
    # row in effect at its end, counted from the song's start.
    ends = np.arange(first, len(live)) * 512 + 1024 - n_one
    rows = (ends - 1024) // 512
    expect = np.zeros((len(rows), 8), bool)
    ok = rows >= 0
    expect[ok] = plan_two.states[rows[ok]]
    np.testing.assert_array_equal(live[first:], expect)


def _planner_held(daemon):
    """The daemon's planner, with plans that are made only once ``release`` is set."""
    release = threading.Event()

    def held(path, show):
        release.wait()
        return plan_song(path, show)

    daemon.planner = Planner(daemon.show, cache=None, plan=held)
    return daemon.planner, release


def test_a_song_whose_plan_is_late_plays_the_causal_show(songs, tmp_path, caplog):
    song = songs / "one.wav"
    daemon, rec = _run_daemon(tmp_path, song)
    _, release = _planner_held(daemon)
    caplog.set_level(logging.INFO)
    try:
        assert daemon.run() == 0  # the lamps do not wait for the plan
    finally:
        release.set()
    assert "plan is not ready yet; the causal show plays until it is" in caplog.text
    assert "plan is ready" not in caplog.text
    live = np.array([r["states"] for r in MockOutput.read(rec) if r["event"] == "set"], bool)
    np.testing.assert_array_equal(live, render_song(song, make_show()).states)


def test_a_plan_ready_mid_song_takes_over_from_the_next_frame(songs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    song = songs / "one.wav"
    daemon, rec = _run_daemon(tmp_path, song)
    planner, release = _planner_held(daemon)
    read, blocks = daemon.source.read, []

    def read_then_release(timeout):
        block = read(timeout)
        if block is not None and block is not END:
            blocks.append(len(block))
            if len(blocks) == 4:  # the plan is made while the fourth block is read
                release.set()
                assert planner.get(song, wait_s=600.0) is not None  # made (never this long)
        return block

    daemon.source.read = read_then_release
    assert daemon.run() == 0
    assert "plan is not ready yet" in caplog.text
    assert "its look-ahead plan is ready; playing it from" in caplog.text
    live = np.array([r["states"] for r in MockOutput.read(rec) if r["event"] == "set"], bool)
    causal = render_song(song, make_show()).states
    plan = render_song(song, make_show(), lookahead=True).states
    switch = (sum(blocks[:3]) - 1024) // 512 + 1  # the first frame of the fourth block
    assert len(live) == len(plan) and 0 < switch < len(plan) // 2
    np.testing.assert_array_equal(live[:switch], causal[:switch])
    # The switch limit carries on over the change of show: once its one-second window holds
    # only the plan's switches, the lamps are the plan's.
    after = switch + 2 * int(1 / DT)
    np.testing.assert_array_equal(live[after:], plan[after:])
    assert not np.array_equal(live[after:], causal[after:])


def test_the_plan_keeps_the_users_overrides(songs):
    from pi.show.relay_rules import ChannelOverrides

    y = song_features(_read(songs / "one.wav"))
    times = frame_times(len(y))
    # Without the switch limit, which would defer a switch here or there differently.
    plain = make_show(mapper="bands", max_toggles_per_s=None).plan(y, times)
    over = ChannelOverrides(invert=(0,), always_on=(1,), always_off=(2,))
    shown = make_show(mapper="bands", overrides=over, max_toggles_per_s=None).plan(y, times)
    assert shown.states[:, 1].all() and not shown.states[:, 2].any()
    np.testing.assert_array_equal(shown.states[:, 0], ~plain.states[:, 0])
    np.testing.assert_array_equal(shown.states[:, 3:], plain.states[:, 3:])


def test_look_ahead_off_in_the_config_plays_songs_as_line_in_is_played(songs, tmp_path):
    song, rec = songs / "one.wav", tmp_path / "rec.jsonl"
    config = Config.from_dict({"audio": {"source": "file", "playlist": [str(song)]},
                               "show": {"look_ahead": False},
                               "outputs": {"enabled": ["mock"], "mock": {"record": str(rec)}}})
    daemon = Daemon(config)
    assert daemon.planner is None
    assert daemon.run() == 0
    live = np.array([r["states"] for r in MockOutput.read(rec) if r["event"] == "set"], bool)
    np.testing.assert_array_equal(live, render_song(song, make_show()).states)


def test_render_plans_a_long_song_in_blocks_exactly_as_the_whole_song_at_once(tmp_path):
    # render keeps only what the plan needs (its inputs allocated once, the mel bands freed
    # after their onset strength, the switch limit in blocks): the same plan, bit for bit, as
    # the whole song's inputs planned in one go, whether the length it was told is right or
    # too short.
    y, _ = synth_song(seconds=40.0, seed=23, ending="fade")
    path = tmp_path / "long.wav"
    sf.write(path, y, RATE)
    audio = _read(path)
    blocks = [audio[i:i + 30000] for i in range(0, len(audio), 30000)]
    show, stream = make_show(), StreamingFeatures()
    # The encoder's product sums in another order for another number of rows: the inputs
    # come from the same blocks of frames as render's.
    inputs = [show.plan_inputs(stream.push(b)) for b in blocks]
    acts, level, bands = (np.concatenate(column) for column in zip(*inputs))
    whole = show.plan_signals(acts, level, bands, frame_times(len(acts)))
    timeline = render_blocks(blocks, make_show(), levels=True, lookahead=True,
                             expected_frames=100)
    np.testing.assert_array_equal(timeline.states, whole.states)
    np.testing.assert_array_equal(timeline.levels, whole.levels)
    np.testing.assert_array_equal(timeline.activations, whole.activations)
    assert len(whole.states) > 3000 and whole.states.any() and not whole.states.all()
    rendered = render_song(path, make_show(), levels=True, lookahead=True)
    np.testing.assert_array_equal(rendered.states, whole.states)
