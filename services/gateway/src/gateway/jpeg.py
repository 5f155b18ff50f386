"""What decoding a JPEG will cost, read from its markers before any pixel is decoded.

A baseline JPEG decodes in one pass, a few rows of blocks at a time. A progressive one (or
a sequential one whose components come in separate scans) cannot: libjpeg first keeps a
coefficient for every 8x8 block of every component of the whole image, two bytes each,
then refines them scan by scan. So such a file costs memory in proportion to its pixels
and sampling, beyond the decoded image, and CPU in proportion to pixels times scans: a
few hundred KB that repeat one small scan thousands of times keep a core busy for minutes.
``scan_count`` counts the scans (libjpeg's own progression writes 10 for colour images and
18 for CMYK), and ``coefficient_bytes`` sizes that buffer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# Marker bytes after 0xFF that carry no length: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS, _EOI = 0xDA, 0xD9
# The next marker after entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart
# marker or another 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
COEFFICIENT_BYTES = 2  # libjpeg's JCOEF
BLOCK = 8


def scan_count(data: bytes, stop_after: int) -> int:
    """The scans (SOS segments) in ``data``, walking the marker segments so that bytes in
    an EXIF thumbnail or an ICC profile do not count; stops early once past ``stop_after``.
    A malformed stream ends the walk: the decoder reports it."""
    # Every SOS marker is the byte pair FF DA, and entropy-coded data never holds one (a
    # data byte FF is always followed by 00), so counting the pairs, at C speed, is exact
    # unless an APPn segment holds some too: only then walk.
    upper = data.count(b"\xff\xda")
    if upper <= 1:
        return upper
    scans, i, end = 0, 2, len(data)
    while i + 4 <= end and scans <= stop_after:
        if data[i] != 0xFF:
            return scans
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == _EOI:
            return scans
        if marker in _STANDALONE:
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == _SOS:
            scans += 1
            found = _NEXT_MARKER.search(data, i)
            if found is None:
                return scans
            i = found.end() - 2
    return scans


def coefficient_bytes(size: tuple[int, int], sampling: Sequence[tuple[int, int]]) -> int:
    """libjpeg's whole-image coefficient buffer for an image of ``size`` whose components
    have these (horizontal, vertical) sampling factors: each component's blocks, padded to
    whole MCUs, 64 coefficients each."""
    width, height = size
    sampling = [(max(h, 1), max(v, 1)) for h, v in sampling] or [(1, 1)]
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    total = 0
    for h, v in sampling:
        blocks_w = math.ceil(math.ceil(width * h / h_max) / BLOCK)
        blocks_h = math.ceil(math.ceil(height * v / v_max) / BLOCK)
        total += _round_up(blocks_w, h) * _round_up(blocks_h, v)
    return total * BLOCK * BLOCK * COEFFICIENT_BYTES


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
