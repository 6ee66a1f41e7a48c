"""The smaller rough edges a hostile new user found (issue 13, item 10): an interrupted
training run or export, self-including and Latin-1 playlists, songs too short to light,
`-v preview`, check-config's wording, `training bench` on a bad bundle, a missing song, and
`run` that waits for a sound card while the music folder is missing."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pi.cli import main as cli
from pi.show.bundle import load_bundle, write_bundle
from pi.audio.playlist import expand, read_m3u
from tests.test_bundle import _tiny

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100


def _wav(path: Path, seconds: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, (0.3 * rng.normal(size=round(seconds * RATE))).astype(np.float32), RATE)
    return path


# --- interrupted training and export ----------------------------------------------------------

# A stand-in for `python -m training train`: the real entry point (training/__main__.py),
# a command that writes a bundle and waits inside the export until the test has signalled it.
SLOW_EXPORT = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    import numpy as np
    import training.__main__ as entry
    from pi.show.bundle import write_bundle
    from tests.test_bundle import _tiny

    def main(argv):
        manifest, arrays = _tiny(np.random.default_rng(0))
        def extra(tmp):
            print("exporting", flush=True)
            sys.stdin.read()  # blocks in a system call until the signal comes
        write_bundle(Path(argv[0]) / "default", manifest=manifest, arrays=arrays, extra=extra)
        return 0

    module = types.ModuleType("slow_export")
    module.main = main
    sys.modules["slow_export"] = module
    entry.COMMANDS["slow"] = "slow_export"
    sys.exit(entry.main(["slow", sys.argv[1]]))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: signal.Signals(s).name)
def test_a_stopped_training_run_leaves_no_temporary_bundle_folder(tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(tmp_path)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "exporting\n", proc.stderr.read()
        assert list(tmp_path.glob(".default.tmp-*"))  # the export is under way
        proc.send_signal(signum)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert rc == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no .default.tmp-*, and no half bundle


def test_a_killed_runs_leftovers_are_removed_by_the_next_export(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".default.tmp-{dead}-x1y2").mkdir()  # SIGKILL or a power cut mid-export
    (tmp_path / f".default.tmp-{os.getpid()}-busy").mkdir()  # a live writer's: kept
    manifest, arrays = _tiny(np.random.default_rng(0))
    write_bundle(tmp_path / "default", manifest=manifest, arrays=arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".default.tmp-{os.getpid()}-busy", "default"]


def test_dense_and_conv_are_exported_together_or_not_at_all(tmp_path):
    """Ctrl-C while the -conv bundle is being written: both old bundles stay."""
    from pi.show.bundle import write_bundles

    rng = np.random.default_rng(0)
    for name in ("default", "default-conv"):
        manifest, arrays = _tiny(rng)
        write_bundle(tmp_path / name, manifest=dict(manifest, name=f"old {name}"),
                     arrays=arrays)

    def interrupted(tmp):
        raise KeyboardInterrupt

    items = []
    for name, extra in (("default", None), ("default-conv", interrupted)):
        manifest, arrays = _tiny(rng)
        items.append((tmp_path / name, dict(manifest, name=f"new {name}"), arrays, extra))
    with pytest.raises(KeyboardInterrupt):
        write_bundles(items)
    assert [load_bundle(tmp_path / n).name for n in ("default", "default-conv")] == [
        "old default", "old default-conv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default", "default-conv"]

    items[1] = items[1][:3] + (None,)
    write_bundles(items)
    assert [load_bundle(tmp_path / n).name for n in ("default", "default-conv")] == [
        "new default", "new default-conv"]


def test_a_failure_in_the_middle_of_the_swap_puts_the_old_bundles_back(tmp_path, monkeypatch):
    from pi.show.bundle import write_bundles

    rng = np.random.default_rng(0)
    items = []
    for name in ("default", "default-conv"):
        manifest, arrays = _tiny(rng)
        write_bundle(tmp_path / name, manifest=dict(manifest, name="old"), arrays=arrays)
        items.append((tmp_path / name, dict(manifest, name="new"), arrays, None))
    real, calls = os.replace, []

    def failing(src, dst):  # the fourth rename: the new conv bundle into place
        calls.append(dst)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr("pi.show.bundle.os.replace", failing)
    with pytest.raises(OSError, match="No space left"):
        write_bundles(items)
    monkeypatch.undo()
    assert [load_bundle(d).name for d, *_ in items] == ["old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default", "default-conv"]


# --- playlists ---------------------------------------------------------------------------------

def test_a_playlist_that_includes_itself_plays_its_songs_once(tmp_path, caplog):
    _wav(tmp_path / "a.wav", 0.1)
    (tmp_path / "self.m3u").write_text("a.wav\nself.m3u\nother.m3u\n")
    (tmp_path / "other.m3u").write_text("self.m3u\n")  # and a loop through another list
    assert expand([tmp_path / "self.m3u"]) == [tmp_path / "a.wav"]
    assert "a playlist that includes itself (through self.m3u -> self.m3u)" in caplog.text
    assert "self.m3u -> other.m3u -> self.m3u" in caplog.text
    # The same list twice at the top level is what the user asked for: twice.
    assert len(expand([tmp_path / "self.m3u", tmp_path / "self.m3u"])) == 2


def test_latin1_m3u_entries_are_found(tmp_path, caplog):
    _wav(tmp_path / "Stille Nacht \u00fcber M\u00fcnchen.wav", 0.1)
    _wav(tmp_path / "Ol\u00e9.wav", 0.1)
    m3u = tmp_path / "weihnachten.m3u"
    m3u.write_bytes("#EXTM3U\n#EXTINF:3,K\u00fcnstler - Lied\nStille Nacht \u00fcber "
                    "M\u00fcnchen.wav\r\n".encode("cp1252") + "Ol\u00e9.wav\n".encode("utf-8"))
    assert [p.name for p in read_m3u(m3u)] == ["Stille Nacht \u00fcber M\u00fcnchen.wav",
                                               "Ol\u00e9.wav"]
    assert len(expand([m3u])) == 2 and "found nothing" not in caplog.text


def test_a_latin1_file_name_on_disk_is_found_too(tmp_path):
    raw = "Gl\u00f6ckchen.wav".encode("latin-1")
    os.rename(_wav(tmp_path / "x.wav", 0.1), os.path.join(os.fsencode(tmp_path), raw))
    m3u = tmp_path / "old.m3u"
    m3u.write_bytes(raw + b"\n")
    (song,) = expand([m3u])
    assert song.is_file()


# --- songs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [0.0, 0.01])
def test_a_song_too_short_for_one_frame_is_skipped_with_a_log_line(tmp_path, caplog, seconds):
    song = _wav(tmp_path / "blip.wav", seconds)
    good = _wav(tmp_path / "good.wav", 1.0)
    with caplog.at_level(logging.INFO):
        assert cli.main(["run", "--source", "file", "--output", "mock", "--mapper", "bands",
                         str(song), str(good)]) == 0
    assert (f"skipping a song that cannot be played: {song}: expected at least one frame of "
            f"audio (1024 samples), found {round(seconds * RATE)}") in caplog.text


def test_a_missing_song_says_so_not_system_error(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert cli.main(["render", str(tmp_path / "gone.wav"), "--csv",
                         str(tmp_path / "x.csv"), "--mapper", "bands"]) == 1
    assert f"{tmp_path / 'gone.wav'}: expected a readable wav/flac/ogg/mp3 file, found no " \
           f"such file" in caplog.text
    assert "System error" not in caplog.text


# --- the command line --------------------------------------------------------------------------

def test_verbose_before_preview_is_accepted(tmp_path):
    song = _wav(tmp_path / "s.wav", 1.0)
    assert cli.main(["-v", "preview", str(song), "--mapper", "bands", "--out",
                     str(tmp_path / "p.html")]) == 0  # argparse rejected it (exit 2)
    assert (tmp_path / "p.html").is_file()


def test_check_config_help_and_summary_agree(capsys):
    with pytest.raises(SystemExit):
        cli.main(["check-config", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "lamps in the terminal" not in help_text  # that is `run`'s default, not this
    assert "default: the built-in defaults, as in systemd/config.toml" in help_text
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "output:  rpigpio" in out  # the built-in defaults drive relays...
    assert "`lightshow run` without --config draws the lamps in the terminal" in out  # ...run


def test_training_bench_on_a_bad_bundle_is_one_clear_line(tmp_path, capsys):
    from training.bench import main as bench

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    (tmp_path / "broken" / "encoder.npz").write_bytes(b"PK")
    assert bench(["--model", str(tmp_path / "broken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench: --model: {tmp_path / 'broken' / 'manifest.json'}: "
                          f"expected JSON") and "Traceback" not in err
    assert bench(["--model", str(tmp_path / "nothing")]) == 2
    assert "expected a model bundle folder, found nothing there" in capsys.readouterr().err


def test_run_without_a_music_folder_says_so_before_waiting_for_a_sound_card(
        tmp_path, monkeypatch, caplog):
    from fake_sounddevice import FakeSoundDevice
    from pi.config.load import Config
    from pi.daemon.loop import Daemon
    from pi.audio.sources import Backoff

    stop = threading.Event()
    sd = FakeSoundDevice(fail_opens=10**9)
    real_open = sd._open

    def no_card(stream, kw):  # no sound card: the daemon would retry forever
        stop.set()
        real_open(stream, kw)

    sd._open = no_card
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    music = tmp_path / "music"
    cfg = Config.from_dict({"audio": {"playlist": [str(music)]}, "model": {"mapper": "bands"},
                            "outputs": {"enabled": ["mock"]}})
    with caplog.at_level(logging.INFO):
        assert Daemon(cfg, stop=stop, retry=Backoff(0.01, 0.01)).run() == 0
    text = caplog.text
    said = text.index(f"audio.playlist: {music} does not exist (yet)")
    assert said < text.index("audio device unavailable")
    assert "lightshow run SONG" in text
