"""xLights timing tracks (``.xtiming``): what xLights' "Import Timing Track" reads.

The format is the one xLights writes when it exports timing tracks (xLightsSequencer/xLights
``src-ui-wx/sequencer/RowHeading.cpp``, ``TimingElement::GetExport`` in
``src-core/render/Element.cpp``) and reads back in ``SequenceFile::ProcessXTiming``
(``src-core/render/SequenceFile.cpp``)::

    <timings>
      <timing name="..." subType="" SourceVersion="...">
        <EffectLayer>
          <Effect label="..." starttime="MS" endtime="MS" />
        </EffectLayer>
      </timing>
    </timings>

Times are integer milliseconds; xLights rounds each down to its sequence's frame time, so
marks are given on the frame grid already. The importer reads ``name`` (made unique among
the sequence's tracks) and ``subType`` (empty: a plain timing track) and ignores
``SourceVersion``. Escaping is left to ElementTree.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Iterable, Sequence

Mark = tuple[str, int, int]  # (label, start ms, end ms)

# XML 1.0 allows tab, newline and carriage return among the control characters, nothing else.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` as XML 1.0 can hold it: a file name that is not valid UTF-8 (Python keeps its
    bytes as lone surrogates) or holds control characters gets U+FFFD in their place."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _NOT_XML.sub("\ufffd", text)


def timings_xml(tracks: Sequence[tuple[str, Iterable[Mark]]], *, source: str = "") -> bytes:
    """UTF-8 bytes of a ``<timings>`` document with one ``<timing>`` per ``(name, marks)``."""
    root = ET.Element("timings")
    for name, marks in tracks:
        timing = ET.SubElement(root, "timing", {"name": xml_text(name), "subType": "",
                                                "SourceVersion": xml_text(source)})
        layer = ET.SubElement(timing, "EffectLayer")
        for label, start, end in marks:
            if not 0 <= int(start) < int(end):
                raise ValueError(f"timing mark {label!r} in {name!r}: expected 0 <= start < "
                                 f"end in ms, found {start}..{end}")
            ET.SubElement(layer, "Effect", {"label": xml_text(label),
                                            "starttime": str(int(start)),
                                            "endtime": str(int(end))})
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def on_marks(on: Sequence[bool], *, step_ms: int, label: str = "on") -> list[Mark]:
    """One mark per run of ``True`` frames: from its switch-on to its switch-off (or the
    end), frame ``k`` being at ``k * step_ms``."""
    marks, start = [], None
    for k, value in enumerate(list(on) + [False]):
        if value and start is None:
            start = k
        elif not value and start is not None:
            marks.append((label, start * step_ms, k * step_ms))
            start = None
    return marks


def beat_marks(frames: Iterable[int], *, n_frames: int, step_ms: int,
               label: str = "") -> list[Mark]:
    """A beat track as xLights' own beat detectors make one: each mark runs from one event's
    frame to the next (the last to the end), so every event is a mark's start."""
    ks = sorted({int(k) for k in frames if 0 <= int(k) < n_frames})
    return [(label, a * step_ms, b * step_ms) for a, b in zip(ks, ks[1:] + [n_frames])]
