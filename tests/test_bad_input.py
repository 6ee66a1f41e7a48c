"""Bad input from a hostile new user gives a clear error or a fallback, never a traceback:
unreadable or mis-moded bundles, 16-channel bundles offline, NaN songs, non-UTF-8 configs,
nonsense feature parameters in a manifest (issue 13, items 3, 4, 5, 7, 8)."""
from __future__ import annotations

import csv
import json
import logging
import os
import stat

import numpy as np
import pytest
import soundfile as sf

from pi.cli import main as cli
from pi.show.bundle import BundleError, load_bundle, write_bundle
from pi.show.pipeline import make_show
from tests.test_bundle import _tiny
from training.corpus.synth import synth_song

RATE = 44100


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    y, _ = synth_song(seconds=4.0, seed=3, ending="hard_stop")
    sf.write(d / "good.wav", y, RATE)
    bad = y.astype(np.float32).copy()
    bad[RATE] = np.nan
    bad[RATE + 5] = np.inf
    sf.write(d / "nan.wav", bad, RATE, subtype="FLOAT")
    return d


@pytest.fixture
def bundle16(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0), n_channels=16)
    return write_bundle(tmp_path / "m16", manifest=manifest, arrays=arrays)


def test_a_bundle_written_under_a_strict_umask_is_readable_by_the_service(tmp_path):
    manifest, arrays = _tiny(np.random.default_rng(0))
    old = os.umask(0o077)
    try:
        def extra(tmp):
            (tmp / "report").mkdir()
            (tmp / "report" / "index.html").write_text("<p>report</p>")

        dest = write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays, extra=extra)
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755  # mkdtemp alone gives 0700
    assert stat.S_IMODE((dest / "report").stat().st_mode) == 0o755
    for f in ("encoder.npz", "manifest.json", "report/index.html"):
        assert stat.S_IMODE((dest / f).stat().st_mode) == 0o644, f


def test_an_unreadable_bundle_is_a_bundle_error_and_the_show_falls_back(tmp_path, monkeypatch,
                                                                        caplog):
    manifest, arrays = _tiny(np.random.default_rng(0))
    dest = write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)

    def denied(path):  # what open() raises for the service user on a 0600 file (we are root)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("pi.show.bundle.sha256_file", denied)
    with pytest.raises(BundleError, match=r"encoder\.npz: expected a readable bundle, found "
                                          r"Permission denied"):
        load_bundle(dest)
    with caplog.at_level(logging.ERROR):
        show = make_show(model=dest)
    assert show.name == "bands" and "falling back to the bands mapper" in caplog.text


def test_sixteen_channel_bundles_render_preview_and_evaluate_as_sixteen(bundle16, songs,
                                                                        tmp_path):
    show = make_show(model=bundle16)
    assert show.name == "model:tiny" and show.n_channels == 16
    out = tmp_path / "show.csv"
    assert cli.main(["render", str(songs / "good.wav"), "--csv", str(out),
                     "--model", str(bundle16)]) == 0
    header = next(csv.reader(out.open()))
    assert header[16] == "ch16" and header[-1] == "act16"

    from pi.offline.preview import write_preview
    info = write_preview(songs / "good.wav", tmp_path / "p.html", model=bundle16)
    assert info["n_channels"] == 16 and info["model"] == "model:tiny"

    from training.evaluate import main as evaluate
    assert evaluate(["--model", str(bundle16), str(songs / "good.wav")]) == 0


def test_nan_samples_are_a_clear_error_in_render_and_preview(songs, tmp_path, caplog, capsys):
    with caplog.at_level(logging.ERROR):
        assert cli.main(["render", str(songs / "nan.wav"), "--csv",
                         str(tmp_path / "x.csv"), "--mapper", "bands"]) == 1
    assert "nan.wav: expected finite samples, found" in caplog.text
    assert cli.main(["preview", str(songs / "nan.wav"), "--mapper", "bands",
                     "--out", str(tmp_path / "x.html")]) == 2
    assert "nan.wav: expected finite samples" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_evaluate_skips_a_nan_song_and_keeps_the_good_ones(songs, capsys):
    from training.evaluate import main as evaluate

    assert evaluate(["--mapper", "bands", str(songs / "nan.wav"), str(songs / "good.wav")]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert list(result["songs"]) == [str(songs / "good.wav")]
    assert "expected finite samples" in result["skipped"][str(songs / "nan.wav")]
    assert "skipped" in err


def test_evaluate_loads_the_bundle_once_for_all_songs(songs, bundle16, capsys, monkeypatch):
    import pi.show.bundle
    from training import evaluate

    loads = []
    real = pi.show.bundle.load_bundle

    def counting(path):
        loads.append(path)
        return real(path)

    for module in ("training.evaluate", "pi.show.pipeline"):
        monkeypatch.setattr(f"{module}.load_bundle", counting)
    good = str(songs / "good.wav")
    assert evaluate.main(["--model", str(bundle16), good, good, good]) == 0
    assert len(json.loads(capsys.readouterr().out)["songs"]) == 1  # one path, scored once
    assert loads == [str(bundle16)]


def test_a_config_that_is_not_utf8_exits_78_naming_the_file(tmp_path, caplog):
    path = tmp_path / "config.toml"
    path.write_bytes('[audio]\nplaylist = ["/music/Weihnachtslieder f\u00fcr alle"]\n'
                     .encode("latin-1"))
    for command in ("check-config", "relays"):
        with caplog.at_level(logging.ERROR):
            assert cli.main([command, "--config", str(path)]) == cli.EXIT_CONFIG
        assert f"{path}: expected UTF-8 text (TOML), found byte 0xfc" in caplog.text


@pytest.mark.parametrize("key, value, message", [
    ("sample_rate", 0, "feature_params.sample_rate: expected an integer from 8000"),
    ("hop", 0, "feature_params.hop: expected an integer from 1"),
    ("hop", 4096, "feature_params.hop: expected at most n_fft = 1024"),
    ("n_fft", "1024", "feature_params.n_fft: expected an integer"),
    ("db_floor", float("nan"), "feature_params.db_floor: expected a number"),
    ("window", "boxcar", "feature_params.window: expected 'hann-periodic'"),
])
def test_manifest_feature_params_are_checked(tmp_path, key, value, message, caplog):
    manifest, arrays = _tiny(np.random.default_rng(0))
    dest = write_bundle(tmp_path / "m", manifest=manifest, arrays=arrays)
    m = json.loads((dest / "manifest.json").read_text())
    m["feature_params"][key] = value
    (dest / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message.replace(".", r"\.")):
        load_bundle(dest)
    assert make_show(model=dest).name == "bands"
