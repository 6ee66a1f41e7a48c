"""FPP sequence files (``.fseq``, version 2.0): the writer, and a reader written from the spec.

The layout follows FalconChristmas/fpp ``docs/FSEQ_Sequence_File_Format.txt``, and where the
spec leaves a choice the writer makes the one FPP's own writer makes
(``src/fseq/FSEQFile.cpp``, ``V2FSEQFile::writeHeader`` and the compression handlers). All
numbers are little-endian.

====== ===== ==========================================================================
offset bytes field
====== ===== ==========================================================================
0      4     ``PSEQ``
4      2     channel-data offset: everything before the frames, rounded up to a multiple
             of 4 (FPP's ``roundTo4``); the padding is zeros
6      1     minor version, 0 (FPP's ``V2FSEQ_MINOR_VERSION``)
7      1     major version, 2
8      2     header length: 32 + 8 per compression block slot + 6 per sparse range (the
             index of the first variable header)
10     4     channels per frame
14     4     number of frames
18     1     step time in ms
19     1     flags, 0
20     1     compression type in bits 0-3 (0 none, 1 zstd, 2 zlib); bits 4-7 the upper
             4 bits of the block count (FSEQ 2.1)
21     1     number of compression block slots (lower 8 bits), 0 when uncompressed
22     1     number of sparse ranges, 0 here (every channel is in the file)
23     1     flags, 0
24     8     unique id: FPP uses the time of writing in microseconds
32     8*n   block index: first frame (4), compressed length (4); unused slots are zeros
..           variable headers: length (2, including these 4 bytes), code (2), data;
             ``mf`` the media file name and ``sp`` the producer, each NUL-terminated
====== ===== ==========================================================================

Then the frames: channel 1..N of frame 0, of frame 1, ...; with zstd, each block of frames
is one zstd frame, streamed (no content size in its header) as FPP streams it. FPP's block plan (``V2CompressedHandler::computeMaxBlocks``) reserves a
few more index slots than it fills, makes the first block 10 frames long (so that playback
starts fast, compressed at level -10) and the rest about 64 KiB of channel data each (level 2).

Only this module's zstd path needs the ``zstandard`` package (the ``fseq`` extra); it is
imported when a file is compressed or decompressed, never at import time.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"PSEQ"
MAJOR_VERSION = 2
MINOR_VERSION = 0
HEADER_SIZE = 32
BLOCK_ENTRY_SIZE = 8
SPARSE_RANGE_SIZE = 6
VARIABLE_HEADER_SIZE = 4
COMPRESSION_TYPES = {"none": 0, "zstd": 1}
_COMPRESSION_NAMES = {0: "none", 1: "zstd", 2: "zlib"}
MAX_BLOCKS = 255              # FPP writes at most 255 slots unless "extended blocks" are on
OUT_BLOCK_BYTES = 64 * 1024   # V2FSEQ_OUT_COMPRESSION_BLOCK_SIZE
FIRST_BLOCK_FRAMES = 10
FIRST_BLOCK_LEVEL = -10       # FPP, with zstd newer than 1.3.5
ZSTD_LEVEL = 2                # FPP's level when none is asked for

# The fixed 32 bytes; struct's "<" is little-endian with no padding.
_HEADER = struct.Struct("<4sHBBHIIBBBBBB8s")
assert _HEADER.size == HEADER_SIZE


class FseqError(ValueError):
    """A sequence that cannot be written or read; the message says what was expected."""


def _round_to_4(n: int) -> int:
    return n + (-n % 4)


def _import_zstandard():
    try:
        import zstandard
    except ModuleNotFoundError:
        raise FseqError("fseq zstd compression: expected the `zstandard` package, found it "
                        "not installed; in the lightshow venv: pip install 'zstandard>=0.22' "
                        "(the [fseq] extra), or use --compression none") from None
    return zstandard


def block_plan(n_frames: int, n_channels: int, *, max_blocks: int = MAX_BLOCKS
               ) -> tuple[int, list[int]]:
    """How FPP splits compressed frames: ``(index slots, frames in each block)``.

    ``V2CompressedHandler::computeMaxBlocks`` picks the frames per block and the number of
    slots to reserve; ``V2ZSTDCompressionHandler::addFrame`` closes the first block after 10
    frames and each later one after ``frames_per_block``, while slots remain; the last block
    takes the rest."""
    n_blocks = n_channels * n_frames // OUT_BLOCK_BYTES
    n_blocks = max_blocks if n_blocks > max_blocks else max(n_blocks, 1)
    per_block = max(n_frames // n_blocks, 2)
    n_blocks = n_frames // per_block + 1
    while n_blocks > max_blocks:
        per_block += 1
        n_blocks = n_frames // per_block + 1
    if n_blocks < max_blocks - 1:
        n_blocks += 2
    elif n_blocks < max_blocks:
        n_blocks += 1
    sizes, in_block = [], 0
    for _ in range(n_frames):
        in_block += 1
        first = not sizes
        if (first and in_block == FIRST_BLOCK_FRAMES) or \
                (in_block >= per_block and len(sizes) + 1 < n_blocks):
            sizes.append(in_block)
            in_block = 0
    if in_block:
        sizes.append(in_block)
    return n_blocks, sizes


def _variable_header(code: str, text: str) -> bytes:
    data = text.encode("utf-8") + b"\0"
    if VARIABLE_HEADER_SIZE + len(data) > 0xFFFF:
        raise FseqError(f"fseq variable header {code!r}: expected at most 65531 bytes, found "
                        f"{len(data)}")
    return struct.pack("<H2s", VARIABLE_HEADER_SIZE + len(data), code.encode("ascii")) + data


def fseq_bytes(frames: np.ndarray, *, step_ms: int, media_file: str | None = None,
               producer: str | None = None, compression: str = "none",
               unique_id: int | None = None) -> bytes:
    """A whole ``.fseq`` file from ``frames [shape=(n_frames, n_channels)]`` of 0..255.

    ``media_file`` and ``producer`` become the ``mf`` and ``sp`` variable headers, in that
    order, as xLights writes them. ``unique_id`` defaults to the time in microseconds."""
    frames = np.asarray(frames)
    if frames.ndim != 2 or frames.shape[0] < 1 or frames.shape[1] < 1:
        raise FseqError(f"fseq frames: expected shape (n_frames >= 1, n_channels >= 1), "
                        f"found {frames.shape}")
    if frames.dtype != np.uint8:
        if frames.size and (frames.min() < 0 or frames.max() > 255):
            raise FseqError(f"fseq frames: expected levels 0..255, found {frames.min()}.."
                            f"{frames.max()}")
        frames = frames.astype(np.uint8)
    if not 1 <= int(step_ms) <= 255:
        raise FseqError(f"fseq step: expected 1 to 255 ms, found {step_ms}")
    if compression not in COMPRESSION_TYPES:
        raise FseqError(f"fseq compression: expected one of {sorted(COMPRESSION_TYPES)}, "
                        f"found {compression!r}")
    n_frames, n_channels = frames.shape
    if n_channels >= 2**32 or n_frames >= 2**32:
        raise FseqError(f"fseq: expected fewer than 2**32 frames and channels, found "
                        f"{frames.shape}")
    payload = np.ascontiguousarray(frames).tobytes()
    slots, index, blocks = 0, b"", [payload]
    if compression == "zstd":
        zstd = _import_zstandard()
        slots, sizes = block_plan(n_frames, n_channels)
        blocks, entries, first = [], [], 0
        for i, size in enumerate(sizes):
            level = FIRST_BLOCK_LEVEL if i == 0 else ZSTD_LEVEL
            chunk = payload[first * n_channels:(first + size) * n_channels]
            # Streamed, as FPP streams it: the frame then has no content size, and the bytes
            # are those FPP's writer makes from the same frames (checked with its code).
            stream = zstd.ZstdCompressor(level=level, write_content_size=False).compressobj()
            blocks.append(stream.compress(chunk) + stream.flush())
            entries.append(struct.pack("<II", first, len(blocks[-1])))
            first += size
        index = b"".join(entries).ljust(slots * BLOCK_ENTRY_SIZE, b"\0")
    variable = b""
    if media_file is not None:
        variable += _variable_header("mf", media_file)
    if producer is not None:
        variable += _variable_header("sp", producer)
    header_size = HEADER_SIZE + slots * BLOCK_ENTRY_SIZE
    data_offset = _round_to_4(header_size + len(variable))
    if data_offset > 0xFFFF:
        raise FseqError(f"fseq header: expected at most 65535 bytes, found {data_offset}")
    if unique_id is None:
        unique_id = time.time_ns() // 1000
    fixed = _HEADER.pack(MAGIC, data_offset, MINOR_VERSION, MAJOR_VERSION, header_size,
                         n_channels, n_frames, int(step_ms), 0,
                         ((slots >> 4) & 0xF0) | COMPRESSION_TYPES[compression],
                         slots & 0xFF, 0, 0, struct.pack("<Q", unique_id))
    head = (fixed + index + variable).ljust(data_offset, b"\0")
    return head + b"".join(blocks)


@dataclass
class Sequence:
    """What :func:`read_fseq` found. ``frames [shape=(n_frames, n_channels)]`` uint8."""

    frames: np.ndarray
    step_ms: int
    version: tuple[int, int]
    compression: str
    channel_data_offset: int
    header_size: int
    unique_id: int
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (first frame, bytes)
    sparse_ranges: list[tuple[int, int]] = field(default_factory=list)
    variable_headers: dict[str, bytes] = field(default_factory=dict)

    @property
    def media_file(self) -> str | None:
        return self._text("mf")

    @property
    def producer(self) -> str | None:
        return self._text("sp")

    def _text(self, code: str) -> str | None:
        data = self.variable_headers.get(code)
        return None if data is None else data.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_fseq(data: bytes, *, name: str = "fseq") -> Sequence:
    """Read a version 2 ``.fseq`` from its bytes (spec: see the module docstring)."""
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        raise FseqError(f"{name}: expected an FSEQ file starting with 'PSEQ', found "
                        f"{data[:4]!r} ({len(data)} bytes)")
    (_, offset, minor, major, header_size, n_channels, n_frames, step_ms, _, comp_byte,
     blocks_low, n_sparse, _, uid) = _HEADER.unpack_from(data)
    if major != MAJOR_VERSION:
        raise FseqError(f"{name}: expected FSEQ major version 2, found {major}.{minor}")
    comp = _COMPRESSION_NAMES.get(comp_byte & 0x0F)
    if comp not in COMPRESSION_TYPES:
        raise FseqError(f"{name}: expected compression none or zstd, found "
                        f"{comp or comp_byte & 0x0F}")
    n_slots = ((comp_byte & 0xF0) << 4) | blocks_low
    pos = HEADER_SIZE
    table = [struct.unpack_from("<II", data, pos + BLOCK_ENTRY_SIZE * i) for i in range(n_slots)]
    pos += BLOCK_ENTRY_SIZE * n_slots
    sparse = []
    for _ in range(n_sparse):
        b = data[pos:pos + SPARSE_RANGE_SIZE]
        sparse.append((int.from_bytes(b[:3], "little"), int.from_bytes(b[3:], "little")))
        pos += SPARSE_RANGE_SIZE
    if pos != header_size or offset < header_size or offset > len(data):
        raise FseqError(f"{name}: expected the header length {pos} and a channel-data offset "
                        f"within the file, found {header_size} and {offset}")
    variable: dict[str, bytes] = {}
    while pos + VARIABLE_HEADER_SIZE <= offset:
        length, code = struct.unpack_from("<H2s", data, pos)
        if length < VARIABLE_HEADER_SIZE:  # the zero padding before the channel data
            break
        if pos + length > offset:
            raise FseqError(f"{name}: variable header {code!r} of {length} bytes runs past "
                            f"the channel data at {offset}")
        body = data[pos + VARIABLE_HEADER_SIZE:pos + length]
        if code == b"ED":  # FSEQ 2.2: the data is stored elsewhere in the file
            code, where, size = body[:2], *struct.unpack_from("<QI", body, 2)
            body = data[where:where + size]
        variable[code.decode("ascii", "replace")] = body
        pos += length
    size = n_frames * n_channels
    if comp == "none":
        raw = data[offset:offset + size]
        blocks = []
    else:
        zstd = _import_zstandard()
        blocks = [(f, n) for f, n in table if n > 0]
        parts, at = [], offset
        for first, length in blocks:
            reader = zstd.ZstdDecompressor().stream_reader(data[at:at + length],
                                                           read_across_frames=True)
            parts.append(reader.read())
            at += length
        raw = b"".join(parts)
    if len(raw) != size:
        raise FseqError(f"{name}: expected {n_frames} frames of {n_channels} channels "
                        f"({size} bytes of channel data), found {len(raw)} bytes")
    frames = np.frombuffer(raw, np.uint8).reshape(n_frames, n_channels)
    return Sequence(frames=frames, step_ms=step_ms, version=(major, minor), compression=comp,
                    channel_data_offset=offset, header_size=header_size,
                    unique_id=struct.unpack("<Q", uid)[0], blocks=blocks,
                    sparse_ranges=sparse, variable_headers=variable)


def read_fseq(path: str | Path) -> Sequence:
    return parse_fseq(Path(path).read_bytes(), name=str(path))
