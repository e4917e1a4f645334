"""A JPEG's structure read from its bytes without decoding it: the one JPEG header parser of the library.

:func:`jpeg_header` walks the markers from the start-of-image marker to the first start-of-scan and reads the frame
header (SOF: height, width, components) on the way; :func:`jpeg_problem` then walks the markers inside the scans up
to the end-of-image marker. No decode: ~17 us per image of the real set, so the loader runs it on every sample when
a split is opened, before any decoder sees the bytes; ``fastfashion index`` runs it on every sample it adopts and
``fastfashion shard`` before its full decode. What it refuses, and why each must be refused before decoding:

* an image whose header claims more than ``max_pixels`` pixels (default :data:`MAX_IMAGE_PIXELS`, PIL's): a
  decompression bomb. DALI's CPU decoder (2.4) allocates the full claimed frame (a 20000x20000 header: 4.6 GB RSS)
  and fills what the data lacks with grey, without an error;
* a scan cut short (no end-of-image marker after it): DALI refuses some truncated scans and fills others with grey,
  PIL refuses them;
* bytes that are not a JPEG structure after a valid start (an invalid marker, a segment running past the end, no
  frame header or no scan), and garbage inside a scan (a byte 0xFF followed by anything but a stuffed zero, a
  restart marker or a marker allowed between scans): DALI decodes garbage after a valid scan header into garbage
  or grey pixels without an error (libjpeg only warns), PIL into grey pixels.

Bytes after the end-of-image marker (camera trailers) are allowed, as every decoder ignores them. What no check
short of a decoder can see: scan data replaced by garbage free of 0xFF bytes that still ends with the end-of-image
marker; both decoders turn it into wrong pixels with a warning on stderr, not an error.
"""
from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Callable

MAX_IMAGE_PIXELS = 89_478_485  # PIL's Image.MAX_IMAGE_PIXELS: ~ a 9459x9459 image, 268 MB decoded as RGB
HEAD = 4096  # bytes read first: the headers of a typical JPEG (the real set's frame header is at byte 158)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers (not DHT/JPG/DAC)
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length (TEM, RST0-7)
_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA


@dataclasses.dataclass(frozen=True)
class JpegHeader:
    """The frame header of a JPEG: size in pixels and number of colour components."""

    width: int
    height: int
    components: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class _Bytes:
    """Reads of one JPEG of ``size`` bytes through ``read(offset, n)``, the first :data:`HEAD` bytes read once."""

    def __init__(self, read: Callable[[int, int], bytes], size: int):
        self.read_at, self.size = read, size
        self.head = read(0, min(HEAD, size))

    def get(self, offset: int, n: int) -> bytes:
        if offset + n <= len(self.head):
            return self.head[offset:offset + n]
        return self.read_at(offset, min(n, self.size - offset)) if offset < self.size else b""


def _walk(b: _Bytes, max_pixels: int) -> tuple[JpegHeader, int] | str:
    """The frame header and the offset of the first scan header, or why the structure from the start-of-image
    marker to the first scan is refused."""
    if b.size < 4 or b.get(0, 2) != b"\xff\xd8":
        return "is not JPEG data (no start-of-image marker)"
    pos, header = 2, None
    while True:
        two = b.get(pos, 2)
        if len(two) < 2:
            return f"ends at byte {b.size} inside its headers (no scan)"
        if two[0] != 0xFF:
            return f"is not a valid JPEG: expected a marker at byte {pos}, found {two.hex()}"
        marker = two[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (_SOI, _EOI) or marker < 0xC0:
            return f"is not a valid JPEG: marker ff{marker:02x} at byte {pos} before the scan"
        length_bytes = b.get(pos + 2, 2)
        if len(length_bytes) < 2:
            return f"ends at byte {b.size} inside its headers (no scan)"
        (length,) = struct.unpack(">H", length_bytes)
        end = pos + 2 + length
        if length < 2 or end > b.size:
            return f"is truncated: segment ff{marker:02x} at byte {pos} runs past the end ({b.size} bytes)"
        if marker in _SOF:
            frame = b.get(pos + 4, 6)
            if len(frame) < 6 or length < 8:
                return f"is not a valid JPEG: frame header at byte {pos} is {length} bytes"
            _, height, width, comps = struct.unpack(">BHHB", frame)
            if width == 0 or height == 0:
                return f"is not a valid JPEG: its frame header claims {width}x{height} pixels"
            if width * height > max_pixels:
                return (f"claims {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                        "(max_image_pixels; a decompression bomb or a huge image)")
            header = JpegHeader(width, height, comps)
        elif marker == _SOS:
            if header is None:
                return "is not a valid JPEG: a scan before any frame header"
            return header, pos
        pos = end


def jpeg_header(read: Callable[[int, int], bytes], size: int, max_pixels: int = MAX_IMAGE_PIXELS,
                ) -> JpegHeader | str:
    """The :class:`JpegHeader` of the JPEG of ``size`` bytes that ``read(offset, n)`` returns, or a reason (a
    phrase that follows "the .jpg member ...") why it is refused: no valid marker structure up to the first scan,
    or more than ``max_pixels`` pixels. ``read`` may raise OSError. Reads the first :data:`HEAD` bytes and any
    headers beyond (the scans are :func:`jpeg_problem`'s)."""
    found = _walk(_Bytes(read, size), max_pixels)
    return found if isinstance(found, str) else found[0]


def jpeg_problem(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """:func:`jpeg_header` of bytes in memory, and the markers inside the scans (:func:`_scan_problem`): None when
    the structure is accepted, else the reason."""
    found = _walk(_Bytes(lambda offset, n: data[offset:offset + n], len(data)), max_pixels)
    return found if isinstance(found, str) else _scan_problem(data, found[1])


_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in entropy-coded data 0xFF is followed by 00 or RSTn
_BETWEEN_SCANS = {0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}  # DHT DAC SOS DQT DNL DRI COM APPn


def _scan_problem(data: bytes, pos: int) -> str | None:
    """Why the markers after the first scan header (at ``pos``) are not those of a JPEG (None: they are): each must
    be a table or scan header between scans (skipped by its length) or the end-of-image marker, which ends the
    walk."""
    while True:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]  # past a segment (SOS: its header)
        m = _MARKER.search(data, pos)
        if m is None:
            return "is truncated: no end-of-image marker after its scan (a scan cut short, or garbage in it)"
        marker = data[m.start() + 1]
        if marker == _EOI:
            return None
        if marker not in _BETWEEN_SCANS or m.start() + 4 > len(data):
            return f"is corrupt: marker ff{marker:02x} inside its scan data at byte {m.start()}"
        pos = m.start()
