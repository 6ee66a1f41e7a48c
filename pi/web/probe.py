"""``python -m pi.web.probe FILE``: exit 0 if the whole file decodes as the show will decode
it (pi/audio/decode.py), else print why and exit 1. The panel runs it in a child process before an
upload joins the music folder.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pi.web.probe FILE", file=sys.stderr)
        return 2
    from pi.audio.decode import AudioFileError, iter_song_blocks, song_info

    try:
        _, _, seconds = song_info(argv[0])
        if seconds <= 0:
            raise AudioFileError("expected some audio, found none")
        for _ in iter_song_blocks(argv[0]):
            pass
    except AudioFileError as exc:
        # The temporary file's name means nothing to the user: keep the decoder's reason.
        print(str(exc).replace(f"{argv[0]}: ", ""))
        return 1
    print(f"{seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
