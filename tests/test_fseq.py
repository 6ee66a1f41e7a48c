"""FPP sequences (.fseq v2) and xLights timing tracks (.xtiming) from `lightshow render`.

The writer is checked against files built here byte by byte from the spec's layout
(FalconChristmas/fpp docs/FSEQ_Sequence_File_Format.txt), not only against our own reader,
so that a writer and a reader wrong in the same way cannot pass together."""
from __future__ import annotations

import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pi.cli import main as cli
from pi.files import atomic_write
from pi.offline.fseq import FseqError, block_plan, fseq_bytes, parse_fseq, read_fseq
from pi.offline.render import (Timeline, n_steps, render_song, step_frames,
                       write_xtiming)
from pi.show.pipeline import make_show
from tests.helpers import modules_after
from training.corpus.synth import synth_song

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
NAME = 'Rock & "Roll" <live>'
UID = 0x0102030405060708


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fseq_songs")
    y, _ = synth_song(seconds=6.0, seed=21, ending="fade")
    sf.write(d / f"{NAME}.wav", y, RATE)
    y, _ = synth_song(seconds=4.0, seed=22, ending="hard_stop")
    sf.write(d / "two.flac", y, RATE)
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage")
    return d


def _reference_header(*, data_offset, header_len, channels, frames, step, comp, slots, uid):
    """The 32 fixed bytes, field by field at the spec's offsets."""
    h = bytearray(32)
    h[0:4] = b"PSEQ"                                  # 0-3 identifier
    h[4:6] = data_offset.to_bytes(2, "little")        # 4-5 offset to the channel data
    h[6] = 0                                          # 6 minor version
    h[7] = 2                                          # 7 major version
    h[8:10] = header_len.to_bytes(2, "little")        # 8-9 index of the first variable header
    h[10:14] = channels.to_bytes(4, "little")         # 10-13 channels per frame
    h[14:18] = frames.to_bytes(4, "little")           # 14-17 frames
    h[18] = step                                      # 18 step time in ms
    h[19] = 0                                         # 19 flags
    h[20] = comp | ((slots >> 8) & 0x0F) << 4         # 20 compression, block count bits 8-11
    h[21] = slots & 0xFF                              # 21 block count bits 0-7
    h[22] = 0                                         # 22 sparse ranges
    h[23] = 0                                         # 23 flags
    h[24:32] = uid.to_bytes(8, "little")              # 24-31 unique id
    return bytes(h)


def _frames(n_frames, n_channels=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n_frames, n_channels), dtype=np.uint8)


# --- the byte layout -------------------------------------------------------------------------

def test_uncompressed_file_matches_a_reference_built_from_the_spec():
    frames = _frames(3)
    # mf: 4 + len("song.ogg\0") = 13 bytes; sp: 4 + len("lightshow 9\0") = 16 bytes.
    mf = struct.pack("<H", 13) + b"mf" + b"song.ogg\0"
    sp = struct.pack("<H", 16) + b"sp" + b"lightshow 9\0"
    assert 32 + len(mf) + len(sp) == 61                 # padded to 64: a multiple of 4
    reference = (_reference_header(data_offset=64, header_len=32, channels=8, frames=3,
                                   step=25, comp=0, slots=0, uid=UID)
                 + mf + sp + b"\0\0\0" + frames.tobytes())
    written = fseq_bytes(frames, step_ms=25, media_file="song.ogg", producer="lightshow 9",
                         unique_id=UID)
    assert written == reference
    # Our reader, and the same bytes: frames, step, headers back.
    seq = parse_fseq(reference)
    np.testing.assert_array_equal(seq.frames, frames)
    assert (seq.step_ms, seq.version, seq.compression) == (25, (2, 0), "none")
    assert (seq.media_file, seq.producer, seq.unique_id) == ("song.ogg", "lightshow 9", UID)


def test_zstd_file_matches_a_reference_built_from_the_spec():
    zstd = pytest.importorskip("zstandard")
    frames = _frames(25, seed=1)
    # FPP's plan for 200 bytes of channel data: 4 index slots, a first block of 10 frames
    # and the remaining 15 in the second; slots 3 and 4 stay zero.
    written = fseq_bytes(frames, step_ms=50, media_file="a.mp3", producer="p",
                         compression="zstd", unique_id=UID)
    header_len = 32 + 4 * 8
    mf = struct.pack("<H", 10) + b"mf" + b"a.mp3\0"
    sp = struct.pack("<H", 6) + b"sp" + b"p\0"
    data_offset = header_len + len(mf) + len(sp)         # 80, already a multiple of 4
    assert data_offset == 80
    (len0, len1) = struct.unpack_from("<4xI4xI", written, 32)
    reference_head = (_reference_header(data_offset=80, header_len=header_len, channels=8,
                                        frames=25, step=50, comp=1, slots=4, uid=UID)
                      + struct.pack("<II", 0, len0) + struct.pack("<II", 10, len1)
                      + bytes(16) + mf + sp)
    assert written[:80] == reference_head
    assert len(written) == 80 + len0 + len1
    # Each block is one zstd frame holding its frames' channels, decoded here without our
    # reader.
    block0, block1 = written[80:80 + len0], written[80 + len0:]
    assert block0[:4] == block1[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    d = zstd.ZstdDecompressor()
    assert d.decompressobj().decompress(block0) == frames[:10].tobytes()
    assert d.decompressobj().decompress(block1) == frames[10:].tobytes()
    np.testing.assert_array_equal(parse_fseq(written).frames, frames)


def _pattern(n_frames, n_channels):
    k, c = np.meshgrid(np.arange(n_frames), np.arange(n_channels), indexing="ij")
    return ((7 * k + 31 * c) % 256).astype(np.uint8)


@pytest.mark.parametrize("name, shape, step, compression", [
    ("fpp-none.fseq", (25, 8), 25, "none"),
    ("fpp-zstd.fseq", (300, 512), 50, "zstd"),
])
def test_the_same_bytes_as_fpps_own_writer(name, shape, step, compression):
    """tests/data/README.md: these files come from FPP's FSEQFile.cpp."""
    if compression == "zstd":
        zstd = pytest.importorskip("zstandard")
    fpp = (Path(__file__).parent / "data" / name).read_bytes()
    uid = struct.unpack_from("<Q", fpp, 24)[0]  # the time FPP wrote it
    ours = fseq_bytes(_pattern(*shape), step_ms=step, media_file="song.ogg",
                      producer="lightshow 0.1.0", compression=compression, unique_id=uid)
    seq = parse_fseq(fpp)
    np.testing.assert_array_equal(seq.frames, _pattern(*shape))
    if compression == "none":
        assert ours == fpp
        return
    assert [first for first, _ in seq.blocks] == [0, 10, 160]
    head = seq.channel_data_offset
    assert ours[:32] == fpp[:32] and ours[head - 32:head] == fpp[head - 32:head]
    # Between them, the index's compressed lengths: zstd releases may compress differently
    # (with zstd 1.5.4 and 1.5.7 the files were the same bytes), so the blocks are compared
    # by where they start and what they hold.
    ours_seq = parse_fseq(ours)
    assert [f for f, _ in ours_seq.blocks] == [0, 10, 160]
    assert len(fpp) - sum(n for _, n in seq.blocks) == head
    at_fpp = at_ours = head
    for (_, n), (_, m) in zip(seq.blocks, ours_seq.blocks):
        assert zstd.ZstdDecompressor().decompressobj().decompress(fpp[at_fpp:at_fpp + n]) == \
            zstd.ZstdDecompressor().decompressobj().decompress(ours[at_ours:at_ours + m])
        at_fpp, at_ours = at_fpp + n, at_ours + m


@pytest.mark.parametrize("n_frames, n_channels, slots, sizes", [
    (9600, 8, 4, [10, 9590]),                       # a 4-minute song at 25 ms, 8 channels
    (9600, 512, 78, [10] + [128] * 74 + [118]),     # 4.9 MB: blocks of 64 KiB
    (5, 8, 4, [5]),                                 # shorter than the first block
    (1000, 100_000, 253, [4] * 250),                # more data than 255 blocks of 64 KiB
])
def test_blocks_are_planned_as_fpp_plans_them(n_frames, n_channels, slots, sizes):
    # Worked by hand from V2CompressedHandler::computeMaxBlocks and the block ends in
    # V2ZSTDCompressionHandler::addFrame.
    assert block_plan(n_frames, n_channels) == (slots, sizes)


def test_reader_follows_the_spec_on_files_we_do_not_write():
    # A padded header with an unknown variable header before mf: the reader walks them all.
    frames = _frames(2, 4)
    xx = struct.pack("<H", 7) + b"xx" + b"abc"
    mf = struct.pack("<H", 9) + b"mf" + b"s.wav"        # no NUL: still read
    head = _reference_header(data_offset=52, header_len=32, channels=4, frames=2, step=25,
                             comp=0, slots=0, uid=1) + xx + mf
    seq = parse_fseq(head.ljust(52, b"\0") + frames.tobytes())
    assert seq.variable_headers == {"xx": b"abc", "mf": b"s.wav"}
    assert seq.media_file == "s.wav" and seq.producer is None
    np.testing.assert_array_equal(seq.frames, frames)


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b"FSEQ" + b[4:], r"expected an FSEQ file starting with 'PSEQ', found b'FSEQ'"),
    (lambda b: b[:7] + b"\x01" + b[8:], r"expected FSEQ major version 2, found 1\.0"),
    (lambda b: b[:20] + b"\x02" + b[21:], r"expected compression none or zstd, found zlib"),
    (lambda b: b[:-1], r"expected 3 frames of 8 channels \(24 bytes of channel data\), "
                       r"found 23 bytes"),
])
def test_bad_files_are_clear_errors(mangle, message):
    good = fseq_bytes(_frames(3), step_ms=25, media_file="x.wav")
    with pytest.raises(FseqError, match=message):
        parse_fseq(mangle(good))


def test_zstd_without_the_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now fails
    with pytest.raises(FseqError, match=r"expected the `zstandard` package.*\[fseq\] extra"):
        fseq_bytes(_frames(3), step_ms=25, compression="zstd")
    fseq_bytes(_frames(3), step_ms=25)  # uncompressed needs nothing


# --- frames from the show --------------------------------------------------------------------

def test_frame_k_holds_the_last_state_at_or_before_k_times_the_step():
    # Rows take effect at 23.2, 34.8, 46.4, 58.0 ms and 100 ms exactly; the song is 0.26 s.
    times = np.array([0.0232, 0.0348, 0.0464, 0.058, 0.1])
    states = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], bool)
    levels = np.where(states, [[0.5, 0.2]], 0.0)
    tl = Timeline(times, states, np.zeros((5, 2), np.float32), duration_s=0.26, levels=levels)
    assert n_steps(0.26, step_ms=25) == 11 and n_steps(0.25, step_ms=25) == 10
    rows = np.array([-1, 0, 2, 3, 4, 4, 4, 4, 4, 4, 4])  # at 0, 25, 50, 75, 100 (= row 4)..
    expected = np.where(rows[:, None] < 0, 0, states[rows] * 255)
    np.testing.assert_array_equal(step_frames(tl, step_ms=25), expected)
    on = step_frames(tl, step_ms=25, levels=True)
    assert on[1].tolist() == [128, 0] and on[2].tolist() == [128, 51]  # round(0.5 * 255) = 128
    assert step_frames(tl, step_ms=50).shape == (6, 2)


def test_levels_are_what_the_sacn_dimmer_output_sends():
    from pi.outputs.sacn import SACNOutput

    levels = np.array([[0.0, 0.2, 0.5, 0.55, 0.731, 0.998, 1.0, 0.9]])
    tl = Timeline(np.array([0.0]), levels > 0, np.zeros((1, 8), np.float32), duration_s=0.02,
                  levels=levels)
    out, sent = SACNOutput(8, universe=1, dimmer=True), []
    out._send = sent.append
    out._write(tuple(levels[0] > 0), tuple(levels[0]), 0.0)
    assert step_frames(tl, step_ms=25, levels=True)[0].tolist() == list(sent[0])


# --- the command -----------------------------------------------------------------------------

def test_render_writes_fseq_with_csv_and_the_frames_follow_the_csv(songs, tmp_path, capsys):
    song = songs / f"{NAME}.wav"
    csv_out, fseq_out = tmp_path / "show.csv", tmp_path / "show.fseq"
    assert cli.main(["render", str(song), "--csv", str(csv_out), "--fseq", str(fseq_out),
                     "--mapper", "bands"]) == 0
    assert "fseq:" in capsys.readouterr().out
    seq = read_fseq(fseq_out)
    assert seq.step_ms == 25 and seq.compression == "none"
    assert seq.media_file == f"{NAME}.wav" and seq.producer.startswith("lightshow")
    assert seq.frames.shape == (240, 8)  # 6 s of 25 ms frames: the whole song
    table = np.loadtxt(csv_out, delimiter=",", skiprows=1)
    # Frame k: the last CSV row at or before k * 25 ms.
    rows = np.searchsorted(table[:, 0], np.arange(240) * 0.025 + 1e-7, side="right") - 1
    expected = np.where(rows[:, None] >= 0, table[rows, 1:9] * 255, 0)
    np.testing.assert_array_equal(seq.frames, expected)
    assert {0, 255} == set(np.unique(seq.frames))


def test_render_fseq_alone_zstd_levels_and_50_ms(songs, tmp_path):
    pytest.importorskip("zstandard")
    plain, packed = tmp_path / "plain.fseq", tmp_path / "packed.fseq"
    song = str(songs / "two.flac")
    assert cli.main(["render", song, "--fseq", str(plain), "--step-ms", "50", "--levels"]) == 0
    assert cli.main(["render", song, "--fseq", str(packed), "--step-ms", "50", "--levels",
                     "--compression", "zstd"]) == 0
    a, b = read_fseq(plain), read_fseq(packed)
    assert (a.step_ms, b.compression, a.frames.shape) == (50, "zstd", (80, 8))
    np.testing.assert_array_equal(a.frames, b.frames)  # the same show, compressed
    lit = a.frames[a.frames > 0]
    assert len(np.unique(lit)) > 3 and lit.min() >= round(0.2 * 255)  # graded, MIN_LEVEL up
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_render_needs_an_output_and_a_file_for_single_outputs(songs, tmp_path, caplog):
    assert cli.main(["render", str(songs / "two.flac")]) == 2
    assert "expected at least one of --csv, --fseq, --xtiming, --fseq-dir" in caplog.text
    assert cli.main(["render", str(songs), "--fseq", str(tmp_path / "x.fseq")]) == 2
    assert "found a folder (--fseq-dir OUT/ renders a folder)" in caplog.text


def test_a_failed_render_leaves_the_old_file_and_no_temporary_file(songs, tmp_path):
    out = tmp_path / "keep.fseq"
    out.write_bytes(b"old")
    assert cli.main(["render", str(songs / "broken.wav"), "--fseq", str(out)]) == 1
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]
    with pytest.raises(RuntimeError):
        with atomic_write(out) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]


def test_playlist_folder_renders_every_song_skips_the_bad_one(songs, tmp_path, capsys):
    out = tmp_path / "fpp"
    assert cli.main(["render", str(songs), "--fseq-dir", str(out), "--mapper", "bands"]) == 1
    cap = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.fseq", "two.fseq"]
    assert read_fseq(out / "two.fseq").media_file == "two.flac"
    assert "[" in cap.err and "3/3" in cap.err and "done in" in cap.err  # the progress bar
    assert "wrote 2 of 3 sequences" in cap.out
    assert f"skipped {songs / 'broken.wav'}: " in cap.out


def test_playlist_with_only_good_songs_exits_zero(songs, tmp_path):
    m3u = tmp_path / "list.m3u"
    m3u.write_text(f"{songs / 'two.flac'}\n")
    assert cli.main(["render", str(m3u), "--fseq-dir", str(tmp_path / "o")]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["two.fseq"]


def test_fseq_render_imports_neither_zstandard_nor_training(songs, tmp_path):
    modules = modules_after(
        "from pi.cli.main import main\n"
        f"assert main(['render', {str(songs / 'two.flac')!r}, '--fseq', "
        f"{str(tmp_path / 'x.fseq')!r}, '--xtiming', {str(tmp_path / 'x.xtiming')!r}])"
        " == 0\n")
    assert not [m for m in modules if m.split(".")[0] in
                {"zstandard", "tensorflow", "keras", "sklearn", "scipy", "training"}]


# --- xLights timing tracks -------------------------------------------------------------------

def test_xtiming_parses_with_xlights_structure_and_escapes_the_name(songs, tmp_path):
    song, out, fseq = songs / f"{NAME}.wav", tmp_path / "t.xtiming", tmp_path / "t.fseq"
    assert cli.main(["render", str(song), "--xtiming", str(out), "--fseq", str(fseq)]) == 0
    text = out.read_text(encoding="utf-8")
    assert 'name="Rock &amp; &quot;Roll&quot; &lt;live&gt; ch1"' in text
    root = ET.parse(out).getroot()
    assert root.tag == "timings"
    timings = root.findall("timing")
    assert [t.get("name") for t in timings] == ([f"{NAME} ch{c}" for c in range(1, 9)]
                                                + [f"{NAME} onsets"])
    frames = read_fseq(fseq).frames
    for c, timing in enumerate(timings):
        assert timing.get("subType") == "" and timing.get("SourceVersion").startswith("light")
        (layer,) = timing
        assert layer.tag == "EffectLayer" and all(e.tag == "Effect" for e in layer)
        marks = [(e.get("label"), int(e.get("starttime")), int(e.get("endtime")))
                 for e in layer]
        assert marks and all(s < e and s % 25 == 0 and e % 25 == 0 for _, s, e in marks)
        assert all(e <= 6000 for _, s, e in marks)
        if c < 8:  # marks at the switch-ons and offs of the sequence's channel
            on = np.zeros(len(frames), bool)
            for label, s, e in marks:
                assert label == "on"
                on[s // 25:e // 25] = True
            np.testing.assert_array_equal(on, frames[:, c] > 0)
        else:  # onsets: each mark runs to the next, the last to the end of the song
            assert all(a[2] == b[1] for a, b in zip(marks, marks[1:]))
            assert marks[-1][2] == 6000 and len(marks) >= 10


def test_onset_marks_are_the_show_logic_onsets_and_leave_the_show_alone(songs):
    song = songs / f"{NAME}.wav"
    plain = render_song(song, make_show(mapper="bands", max_toggles_per_s=None))
    show = make_show(mapper="bands", max_toggles_per_s=None)
    tl = render_song(song, show, onsets=True)
    np.testing.assert_array_equal(tl.states, plain.states)  # recording changes nothing
    assert show.mapper.onset_log is None                      # and stops recording
    switch = tl.times_s[1:][np.any(tl.states[1:] != tl.states[:-1], axis=1)]

    def hit_rate(shift_frames):
        t = tl.onsets_s + shift_frames * show.mapper.dt
        return np.mean(np.min(np.abs(t[:, None] - switch[None, :]), axis=1) < 1e-6)

    # An onset lets the channels that want to change do so, at the onset's frame once
    # delayed as the states are: many onsets meet a switch there, few a frame off.
    assert hit_rate(0) > 0.5 and hit_rate(0) > 2 * max(hit_rate(-1), hit_rate(1))


def test_xtiming_names_that_xml_cannot_hold_are_replaced(tmp_path):
    tl = Timeline(np.array([0.03]), np.array([[True]]), np.zeros((1, 1), np.float32),
                  duration_s=0.1, onsets_s=np.array([0.03]))
    out = tmp_path / "x.xtiming"
    write_xtiming(tl, out, song_name="bell\x07 \udcff")  # a control character, a bad byte
    (timing, onsets) = ET.parse(out).getroot()
    assert timing.get("name") == "bell\ufffd \ufffd ch1"
    assert [(e.get("starttime"), e.get("endtime")) for e in timing[0]] == [("50", "100")]
    assert [(e.get("starttime"), e.get("endtime")) for e in onsets[0]] == [("50", "100")]
