"""Stems: the demo corpus's instrument onsets, and MIDI files read with mido and rendered
with fluidsynth."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pi.offline.metrics import onset_strength
from training.corpus.demo import generate_corpus
from training.corpus.synth import synth_song, synth_song_with_stems
from training.corpus.stems import (SOUNDFONT, StemsError, clean_stems, load_stems, midi_onsets,
                            render_midi_corpus, sidecar)

SR = 44100


def test_demo_stems_are_the_notes_that_sound(tmp_path):
    y, end_s, onsets = synth_song_with_stems(seconds=16.0, seed=3, ending="hard_stop")
    assert np.array_equal(y, synth_song(seconds=16.0, seed=3, ending="hard_stop")[0])
    assert {"kick", "bass"} <= set(onsets)
    assert all(0.0 <= t < end_s for times in onsets.values() for t in times)
    # Each kick starts a burst of spectral flux: the onset strength just after it is well
    # above the song's median.
    flux = onset_strength(y.astype(np.float64))
    hops = (np.array(onsets["kick"]) * SR / 512).astype(int)
    after = np.array([flux[h:h + 4].max() for h in hops if h + 4 < len(flux)])
    assert np.median(after) > 2 * np.median(flux)


def test_corpus_writes_a_stems_file_per_song(tmp_path):
    specs = generate_corpus(tmp_path, n_songs=2, seconds=16.0, seed=1)
    for spec in specs:
        stems = load_stems(sidecar(spec.path))
        assert stems and all(len(v) >= 20 for v in stems.values())
        assert all(np.all(np.diff(v) >= 0.05) for v in stems.values())


def test_clean_stems_merges_chords_and_drops_sparse_stems():
    stems = clean_stems({"piano": [0.0, 0.01, 0.049, 0.05, 0.2] + [1.0 + i for i in range(20)],
                         "few": [0.0, 1.0]})
    assert list(stems) == ["piano"]
    assert stems["piano"][:3].tolist() == [0.0, 0.05, 0.2]


def test_bad_stems_files_name_the_file(tmp_path):
    bad = tmp_path / "x.stems.json"
    bad.write_text('{"kick": "soon"}')
    with pytest.raises(StemsError, match="x.stems.json: expected"):
        load_stems(bad)
    bad.write_text("{")
    with pytest.raises(StemsError, match="expected a JSON file"):
        load_stems(bad)
    (tmp_path / "bad.mid").write_bytes(b"MThd nonsense")
    with pytest.raises(StemsError, match="bad.mid: expected a standard MIDI file"):
        load_stems(tmp_path / "bad.mid")


def write_midi(path, *, beats=24):
    """A MIDI file at 120 bpm: piano on channel 1 every beat, a kick (36) and a closed hat
    (42) on the drum channel, and a tempo change to 60 bpm halfway."""
    mido = pytest.importorskip("mido")
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    for b in range(beats):
        if b == beats // 2:
            track.append(mido.MetaMessage("set_tempo", tempo=1000000, time=0))
        track.append(mido.Message("note_on", channel=0, note=60, velocity=90, time=0))
        track.append(mido.Message("note_on", channel=0, note=64, velocity=90, time=0))
        track.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
        track.append(mido.Message("note_on", channel=9, note=42, velocity=80, time=0))
        track.append(mido.Message("note_off", channel=0, note=60, velocity=0, time=240))
        track.append(mido.Message("note_on", channel=0, note=64, velocity=0, time=0))
        track.append(mido.Message("note_on", channel=9, note=42, velocity=80, time=0))
        track.append(mido.Message("note_off", channel=9, note=42, time=240))
    mid.save(str(path))


def test_midi_stems_follow_the_tempo_map(tmp_path):
    write_midi(tmp_path / "song.mid")
    raw = midi_onsets(tmp_path / "song.mid")
    assert set(raw) == {"channel_01", "kick", "hats"}
    stems = load_stems(tmp_path / "song.mid")
    beats = np.r_[np.arange(12) * 0.5, 6.0 + np.arange(12) * 1.0]
    np.testing.assert_allclose(stems["kick"], beats, atol=1e-9)
    np.testing.assert_allclose(stems["channel_01"], beats, atol=1e-9)  # the chord is one
    assert len(stems["hats"]) == 48


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(),
                    reason="fluidsynth and timgm6mb-soundfont are not installed")
def test_midi_corpus_renders_audio_whose_onsets_match_the_stems(tmp_path):
    import soundfile as sf

    (tmp_path / "midi").mkdir()
    write_midi(tmp_path / "midi" / "song.mid")
    (tmp_path / "midi" / "broken.mid").write_bytes(b"MThd")
    wavs = render_midi_corpus(tmp_path / "midi", tmp_path / "out")
    assert [w.name for w in wavs] == ["song.wav"]
    y, sr = sf.read(wavs[0])
    assert sr == SR
    stems = json.loads(sidecar(wavs[0]).read_text())
    flux = onset_strength(y.mean(axis=1))
    hops = (np.array(stems["kick"]) * SR / 512).astype(int)
    hit = np.array([flux[h:h + 4].max() for h in hops])
    assert np.median(hit) > 3 * np.median(flux), "the rendered kicks sound at the MIDI times"


def test_evaluate_prints_structure_metrics_and_stem_f(tmp_path, capsys):
    from training.evaluate import main as evaluate

    specs = generate_corpus(tmp_path, n_songs=2, seconds=16.0, seed=2)
    songs = [str(s.path) for s in specs]
    assert evaluate(["--mapper", "bands", *songs]) == 0  # the stems beside each song
    result = json.loads(capsys.readouterr().out)
    for song in songs:
        metrics = result["songs"][song]
        assert set(metrics) >= {"ssmCorr", "ssmLift", "stemF", "stemLift", "fluxCorr"}
        assert 0.0 < metrics["stemF"] <= 1.0
        assert metrics["stemLift"] == pytest.approx(metrics["stemF"] - metrics["stemF_null"])
    assert set(result["mean"]) >= {"ssmCorr", "stemLift"}

    write_midi(tmp_path / "song.mid")  # --stems with a MIDI file, one per song
    assert evaluate(["--mapper", "bands", "--stems", str(tmp_path / "song.mid"),
                     songs[0]]) == 0
    assert set(json.loads(capsys.readouterr().out)["songs"][songs[0]]) >= {"stemF"}
    assert evaluate(["--mapper", "bands", "--stems", str(tmp_path / "song.mid"), *songs]) == 2
    assert "expected one file per song (2), found 1" in capsys.readouterr().err
