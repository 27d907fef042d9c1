"""Media fingerprints: a hash of a photo's or a song's payload, not of its metadata.

Retagging a song or re-captioning a photo rewrites the file, so its content
hash changes; its audio frames or image data do not. A fingerprint is a
hash of those only, so a file that was moved *and* retagged while nobody
watched is still known (identity rule 4, see :mod:`filewarden.identity`).

Fingerprints are computed in the background hasher's one read of the file:
:class:`Fingerprinter` is fed the same chunks as xxh3-128, and a format's
parser tells it, piece by piece, which bytes to read as structure, which to
hash and which to skip. A parser is a generator that yields :class:`Need`,
:class:`Hash`, :class:`HashTo` or :class:`Skip` and returns the kind and
value (sans-I/O, so the same parser serves any reader). A few formats look
at the file's end before the pass, with small ``pread``s of what trails the
payload (an MP3's tags, a FLAC's last frame).

The containers are walked here rather than with mutagen: mutagen parses
tags and stream headers (it reads ``STREAMINFO`` here, and tags for
:func:`describe`), but it tells where no payload begins or ends and reads
the file itself, so it cannot take part in the hasher's single pass. A
walk over box, chunk, page or marker headers is a few lines for each
format. No pixel or sample is decoded.

What each kind hashes (xxh3-128 unless said):

- ``flac``: the MD5 of the decoded audio that the encoder wrote into
  ``STREAMINFO`` (unchanged by a lossless re-encode); ``flac-frames``, the
  frames, when that MD5 is all zeros. Either only when the last frame is
  whole and ends at the sample count ``STREAMINFO`` states.
- ``mp3``: the MPEG frames, after ID3v2 (and its footer), before APEv2,
  Lyrics3 and ID3v1; the first two frames and the last three must chain,
  and reach the length an Xing/Info header states, if there is one.
- ``ogg``: the packets of the first logical stream after its headers
  (Vorbis three, Opus two: the comment header is one of them), not the page
  headers (a retag renumbers pages); the stream must reach its last page.
- ``mp4``: the payload of every top-level ``mdat`` box (M4A, MP4, MOV).
  HEIC is left out: its Exif block is an item inside ``mdat`` too.
- ``jpeg``: the image's own segments (tables, frame and scan headers) and the
  entropy-coded data up to EOI, not APPn or COM segments.
- ``png``: the critical chunks (IHDR, PLTE, IDAT), not the ancillary ones.

A file that does not parse (cut short, corrupt, or not what its first
bytes claim) gets no fingerprint; :class:`Unfit` says why, for a debug line.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import mutagen
import mutagen.flac
import xxhash


class Unfit(ValueError):
    """The file is not a whole file of the format its first bytes name."""


@dataclass(frozen=True, slots=True)
class Need:
    """Hand the next ``n`` bytes to the parser (fewer at the end of the file)."""

    n: int


@dataclass(frozen=True, slots=True)
class Hash:
    """Hash the next ``n`` bytes."""

    n: int


@dataclass(frozen=True, slots=True)
class HashTo:
    """Hash up to and including the next ``marker``."""

    marker: bytes


@dataclass(frozen=True, slots=True)
class Mix:
    """Hash these bytes, which the parser already read as structure."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Skip:
    """Pass over the next ``n`` bytes."""

    n: int


Step = Need | Hash | HashTo | Mix | Skip
Found = tuple[str, bytes, dict[str, Any]]  # kind, value, what else the walk saw
# A parser returns its kind, its value if it is not the hash of what it
# had hashed (FLAC's MD5), and what else it saw (duration, dimensions).
Parser = Generator[Step, bytes, tuple[str, bytes | None, dict[str, Any]]]
Pread = Callable[[int, int], bytes]  # (offset, size) -> bytes


# --- the driver ------------------------------------------------------------------


class Fingerprinter:
    """Feeds one file's chunks, in order, to the parser its first bytes call for."""

    def __init__(self, size: int, pread: Pread) -> None:
        self.size = size
        self.pread = pread
        self.digest = xxhash.xxh3_128()
        self._parser: Parser | None = None
        self._step: Step | None = None
        self._left = 0  # of a Hash or Skip
        self._buffer = bytearray()  # of a Need; of a HashTo, the marker's head seen
        self.found: Found | None = None
        self.unfit: str | None = None  # why not, once it is known
        self._started = False
        self._head = bytearray()
        self.format: str | None = None  # the format the first bytes name, if any

    @property
    def done(self) -> bool:
        """Whether more bytes would change nothing (found, unfit, or not a media file)."""
        return (
            self.found is not None
            or self.unfit is not None
            or (self._started and self._parser is None)
        )

    def feed(self, buffer: bytes | bytearray, length: int | None = None) -> None:
        """Take the file's next ``length`` bytes (all of ``buffer`` if None), read from the start of ``buffer``."""
        end = len(buffer) if length is None else length
        if not self._started:
            # The format is named by the first 16 bytes (or all, in a smaller file).
            if self._head or end < min(16, self.size):
                self._head += buffer[:end]
                if len(self._head) < min(16, self.size):
                    return
                buffer, end = self._head, len(self._head)
            self._choose(bytes(buffer[:16]))
        at = 0
        while at < end and not self.done:
            at = self._take(buffer, at, end)

    def _choose(self, head: bytes) -> None:
        self._started = True
        self.format, self._parser = _parser_for(head, self.size, self.pread)
        if self._parser is not None:
            self._advance(None)

    def finish(self) -> Found | None:
        """The fingerprint once every byte was fed; None if there is none."""
        if not self._started:
            self._choose(bytes(self._head))
            if self._parser is not None:
                self.feed(bytes(self._head))
        if self.done or self._parser is None:
            return self.found
        if isinstance(self._step, Need):
            self._advance(bytes(self._buffer))  # short: the parser decides
        if not self.done:
            self.unfit = "cut short"
            self._parser.close()
        return self.found

    def _take(self, buffer: bytes | bytearray, at: int, end: int) -> int:
        """Apply the current step to ``buffer[at:end]``; returns where it stopped."""
        step = self._step
        if isinstance(step, Hash | Skip):
            n = min(self._left, end - at)
            if isinstance(step, Hash):
                self.digest.update(memoryview(buffer)[at : at + n])
            self._left -= n
            if not self._left:
                self._advance(None)
            return at + n
        if isinstance(step, Need):
            n = min(step.n - len(self._buffer), end - at)
            self._buffer += buffer[at : at + n]
            if len(self._buffer) == step.n:
                self._advance(bytes(self._buffer))
            return at + n
        assert isinstance(step, HashTo)
        marker = step.marker
        # A marker split between two reads: its head ended the last one.
        if self._buffer:
            rest = marker[len(self._buffer) :]
            if buffer[at : at + len(rest)] == rest:
                self.digest.update(rest)
                self._advance(None)
                return at + len(rest)
            self._buffer.clear()
        found = buffer.find(marker, at, end)
        stop = end if found < 0 else found + len(marker)
        self.digest.update(memoryview(buffer)[at:stop])
        if found >= 0:
            self._advance(None)
        elif buffer[end - 1 : end] == marker[:1]:
            self._buffer += marker[:1]
        return stop

    def _advance(self, sent: bytes | None) -> None:
        assert self._parser is not None
        self._buffer.clear()
        try:
            step = self._parser.send(sent)  # type: ignore[arg-type]
        except StopIteration as stop:
            kind, value, extra = stop.value
            self.found = kind, value or self.digest.digest(), extra
            return
        except Unfit as exc:
            self.unfit = str(exc) or type(exc).__name__
            return
        except (struct.error, IndexError, ValueError, mutagen.MutagenError) as exc:
            self.unfit = f"{type(exc).__name__}: {exc}"
            return
        self._step = step
        if isinstance(step, Mix):
            self.digest.update(step.data)
            self._advance(None)
        elif isinstance(step, Hash | Skip):
            self._left = step.n
            if step.n < 0:
                self.unfit = "negative length"
            elif not step.n:
                self._advance(None)


def _parser_for(head: bytes, size: int, pread: Pread) -> tuple[str | None, Parser | None]:
    """The format a file that starts with ``head`` is in, and its parser; Nones if no format known here."""
    if head.startswith(b"fLaC"):
        return "flac", _flac(size, pread)
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "mp3", _mp3(size, pread)
    if head.startswith(b"OggS"):
        return "ogg", _ogg()
    if head[4:8] == b"ftyp" and head[8:12] not in _HEIF_BRANDS:
        return "mp4", _mp4(size)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg", _jpeg(size, pread)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png", _png()
    return None, None


AUDIO = ("flac", "flac-frames", "mp3", "ogg", "mp4")

_SUFFIXES = {
    b"flac": ("flac", "flac-frames"),
    b"mp3": ("mp3",),
    b"ogg": ("ogg",),
    b"oga": ("ogg",),
    b"opus": ("ogg",),
    b"m4a": ("mp4",),
    b"m4b": ("mp4",),
    b"mp4": ("mp4",),
    b"m4v": ("mp4",),
    b"mov": ("mp4",),
    b"jpg": ("jpeg",),
    b"jpeg": ("jpeg",),
    b"png": ("png",),
}


def kinds_for(name: bytes) -> tuple[str, ...]:
    """The kinds of fingerprint a file of this name may have, by its extension: whether
    it is worth reading to find a missing file by rule 4 (the bytes decide)."""
    _, dot, suffix = name.rpartition(b".")
    return _SUFFIXES.get(suffix.lower(), ()) if dot else ()


TAGS = ("title", "artist", "album")


def describe(fd: int, kind: str) -> dict[str, Any]:
    """A song's title, artist, album and duration, by mutagen; what
    ``candidates`` compares a missing file's successors on. Empty for images
    (their dimensions come from the walk) and for what mutagen cannot read.
    """
    if kind not in AUDIO:
        return {}
    try:
        with io.FileIO(fd, closefd=False) as raw:
            reader = io.BufferedReader(raw)
            reader.seek(0)  # the hasher's reads left the descriptor at the end
            found = mutagen.File(reader, easy=True)
    except (mutagen.MutagenError, OSError, ValueError, struct.error, EOFError):
        return {}
    if found is None:
        return {}
    out: dict[str, Any] = {}
    if found.info is not None and getattr(found.info, "length", None):
        out["duration"] = round(float(found.info.length), 3)
    for tag in TAGS:
        values = (found.tags or {}).get(tag) if found.tags is not None else None
        if values:
            out[tag] = str(values[0])
    return out


def fingerprint_bytes(data: bytes) -> Found | None:
    """The fingerprint of a whole file in memory (tests, and what the hasher does in one call)."""
    fp = Fingerprinter(len(data), lambda offset, n: data[offset : offset + n])
    fp.feed(data)
    return fp.finish()


# --- FLAC ------------------------------------------------------------------------


def _flac(size: int, pread: Pread) -> Parser:
    yield Need(4)  # fLaC
    pos, info = 4, None
    last = False
    while not last:
        header = yield Need(4)
        if len(header) < 4:
            raise Unfit("metadata cut short")
        last, kind = bool(header[0] & 0x80), header[0] & 0x7F
        length = int.from_bytes(header[1:4], "big")
        pos += 4 + length
        if kind == 0:
            info = mutagen.flac.StreamInfo(io.BytesIO((yield Need(length))))  # type: ignore[no-untyped-call]
        else:
            yield Skip(length)
    if info is None:
        raise Unfit("no STREAMINFO")
    end = size - (128 if pread(size - 128, 3) == b"TAG" else 0)
    _flac_check_end(info, pread, pos, end)
    extra = {"duration": round(info.length, 3)}
    if info.md5_signature:
        return "flac", info.md5_signature.to_bytes(16, "big"), extra
    # No MD5 from the encoder: the frames themselves, which a retag never touches.
    yield Hash(end - pos)
    return "flac-frames", None, extra


def _flac_check_end(info: Any, pread: Pread, start: int, end: int) -> None:
    """The last frame must be whole and end at the sample count STREAMINFO states.

    A file cut short keeps a valid STREAMINFO (it is at the front), so the
    MD5 alone would vouch for audio that is not there.
    """
    if not info.total_samples:
        raise Unfit("sample count unknown")
    span = min(end - start, max(info.max_framesize, 1 << 14) + 64)
    tail = pread(end - span, span)
    if len(tail) != span:
        raise Unfit("cut short")
    at = len(tail) - 2
    while (at := tail.rfind(b"\xff", 0, at)) >= 0:
        if tail[at + 1] in (0xF8, 0xF9):
            header = _flac_frame_header(tail, at, info)
            if header is not None and _crc16(tail[at:-2]) == int.from_bytes(tail[-2:], "big"):
                first, samples = header
                if first + samples != info.total_samples:
                    raise Unfit(f"frames end at sample {first + samples} of {info.total_samples}")
                return
    raise Unfit("last frame not whole")


_FLAC_BLOCK = {
    1: 192,
    **{c: 576 << (c - 2) for c in range(2, 6)},
    **{c: 256 << (c - 8) for c in range(8, 16)},
}


def _flac_frame_header(data: bytes, at: int, info: Any) -> tuple[int, int] | None:
    """``(first sample, samples)`` of a frame header at ``at`` whose CRC-8 holds, else None."""
    variable = data[at + 1] & 1
    code, rate = data[at + 2] >> 4, data[at + 2] & 0x0F
    if code == 0 or rate == 15 or data[at + 3] & 1:
        return None
    pos = at + 4
    # The frame or sample number, UTF-8 style: the leading ones say how many bytes.
    lead = data[pos] if pos < len(data) else 0xFF
    extra = 0
    while extra < 7 and lead & (0x80 >> extra):
        extra += 1
    if extra == 1 or extra > 7:
        return None
    number = lead & (0x7F >> extra) if extra else lead
    for i in range(1, max(extra, 1)):
        if pos + i >= len(data) or data[pos + i] & 0xC0 != 0x80:
            return None
        number = number << 6 | data[pos + i] & 0x3F
    pos += max(extra, 1)
    if code == 6:
        samples, pos = data[pos] + 1, pos + 1
    elif code == 7:
        samples, pos = int.from_bytes(data[pos : pos + 2], "big") + 1, pos + 2
    else:
        samples = _FLAC_BLOCK[code]
    pos += {12: 1, 13: 2, 14: 2}.get(rate, 0)
    if pos >= len(data) or _crc8(data[at:pos]) != data[pos]:
        return None
    first = number if variable else number * info.max_blocksize
    return first, samples


def _crc_table(poly: int, bits: int) -> list[int]:
    top, mask = 1 << (bits - 1), (1 << bits) - 1
    table = []
    for byte in range(256):
        crc = byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly if crc & top else crc << 1) & mask
        table.append(crc)
    return table


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    """FLAC's frame CRC (polynomial 0x8005, MSB first), two bytes a step: a
    16-bit register takes a whole 16-bit word through one table lookup."""
    crc = 0
    table = _crc16_words()
    for (word,) in struct.iter_unpack(">H", data[: len(data) & ~1]):
        crc = table[crc ^ word]
    if len(data) & 1:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ data[-1]]
    return crc


@functools.cache
def _crc16_words() -> list[int]:
    table = []
    for word in range(1 << 16):
        crc = _CRC16[word >> 8]
        table.append(((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ (word & 0xFF)])
    return table


# --- MP3 -------------------------------------------------------------------------

_MP3_RATES = {  # (version bits, layer bits) -> kbit/s by index
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
}
_MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int:
    """The length of the MPEG audio frame whose 4-byte header this is; 0 if it is none."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return 0
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    rate_index, sample_index = header[2] >> 4, (header[2] >> 2) & 3
    if version == 1 or layer == 0 or rate_index in (0, 15) or sample_index == 3:
        return 0
    kbps = _MP3_RATES[(3 if version == 3 else 2, layer)][rate_index]
    sample_rate = _MP3_SAMPLE_RATES[version][sample_index]
    padding = (header[2] >> 1) & 1
    if layer == 3:  # layer I
        return (12 * kbps * 1000 // sample_rate + padding) * 4
    factor = 72 if layer == 1 and version != 3 else 144
    return factor * kbps * 1000 // sample_rate + padding


def _mp3_payload_end(size: int, pread: Pread) -> int:
    """Where the frames end: before ID3v1, Lyrics3 and APEv2 tags at the end, in any order."""
    end = size
    while True:
        if end >= 128 and pread(end - 128, 3) == b"TAG":
            end -= 128
            continue
        footer = pread(end - 15, 15) if end >= 15 else b""
        if footer[6:] == b"LYRICS200" and footer[:6].isdigit():
            end -= int(footer[:6]) + 15
            continue
        if footer[6:] == b"LYRICSEND":
            begin = pread(max(0, end - 5100), 5100).rfind(b"LYRICSBEGIN")
            if begin >= 0:
                end = max(0, end - 5100) + begin
                continue
        ape = pread(end - 32, 32) if end >= 32 else b""
        if ape[:8] == b"APETAGEX":
            tag_size, _, flags = struct.unpack("<III", ape[12:24])
            end -= tag_size + (32 if flags & 0x80000000 else 0)
            continue
        return end


def _mp3(size: int, pread: Pread) -> Parser:
    pos = 0
    while True:
        header = yield Need(10)
        if header[:3] != b"ID3":
            break
        if len(header) < 10 or any(b & 0x80 for b in header[6:10]):
            raise Unfit("ID3v2 header")
        length = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(header[6:10]))
        length += 10 if header[5] & 0x10 else 0  # its footer
        yield Skip(length - 10)
        pos += length
    end = _mp3_payload_end(size, pread)
    first = _mp3_frame_length(header)
    if not first or pos + first > end:
        raise Unfit("no MPEG frame after the tags")
    if not _mp3_frame_length(pread(pos + first, 4)) and pos + first != end:
        raise Unfit("first frames do not chain")
    if not _mp3_chain_to(pread, pos, end):
        raise Unfit("last frame not whole")
    # An encoder's Xing/Info header (LAME writes one) says how long the stream
    # is: a file cut at a frame boundary still chains, but comes up short.
    info = pread(pos, 64)
    at = max(info.find(b"Xing", 4), info.find(b"Info", 4))
    if at >= 0 and len(info) >= at + 16 and info[at + 7] & 2:
        stated = int.from_bytes(info[at + 8 + 4 * (info[at + 7] & 1) :][:4], "big")
        if end - pos < stated:
            raise Unfit(f"frames end at byte {end - pos} of {stated}")
    # From the first frame on: the bytes of it already read count too.
    yield Mix(header)
    yield Hash(end - pos - len(header))
    return "mp3", None, {}


def _mp3_chain_to(pread: Pread, start: int, end: int, frames: int = 3) -> bool:
    """Whether ``frames`` frames (fewer in a short file) chain to end exactly at ``end``.

    Searched from the end: a frame whose header gives the length that
    reaches ``end``, then one that reaches that frame, and so on.
    """
    span = min(end - start, frames * 2881)
    tail = pread(end - span, span)
    base = end - span

    def reaches(target: int, depth: int) -> bool:
        if target == start or depth == frames:
            return True
        at, stop = max(0, target - base - 2881) - 1, target - base - 3
        while (at := tail.find(b"\xff", at + 1, stop)) >= 0:
            if at + _mp3_frame_length(tail[at : at + 4]) == target - base:
                if reaches(base + at, depth + 1):
                    return True
        return False

    return reaches(end, 0)


# --- Ogg -------------------------------------------------------------------------


def _ogg() -> Parser:
    serial, headers, packets, ended = None, 0, 0, False
    while not ended:
        header = yield Need(27)
        if not header:
            break
        if len(header) < 27 or header[:4] != b"OggS":
            raise Unfit("page header")
        flags, page_serial, segments = header[5], header[14:18], header[26]
        lacing = yield Need(segments)
        if len(lacing) < segments:
            raise Unfit("cut short")
        if serial is None:
            if not segments:
                raise Unfit("empty first page")
            serial = page_serial
            first = yield Need(lacing[0])
            if first.startswith(b"\x01vorbis"):
                headers = 3
            elif first.startswith(b"OpusHead"):
                headers = 2
            else:
                raise Unfit("neither Vorbis nor Opus")
            body = sum(lacing) - len(first)
            yield Skip(body)
            packets = sum(1 for n in lacing if n < 255)
            continue
        if page_serial != serial:
            yield Skip(sum(lacing))  # another logical stream (a video's, say)
            continue
        ended = bool(flags & 0x04)
        # Packet by packet: a packet ends at a lacing value under 255.
        run = 0
        for n in lacing:
            run += n
            if n < 255:
                yield Skip(run) if packets < headers else Hash(run)
                packets += 1
                run = 0
        if run:  # continues on the next page
            yield Skip(run) if packets < headers else Hash(run)
    if not ended:
        raise Unfit("no last page")
    return "ogg", None, {}


# --- MP4 / M4A / MOV -------------------------------------------------------------

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def _mp4(file_size: int) -> Parser:
    media, pos = False, 0
    while pos < file_size:
        header = yield Need(8)
        if len(header) < 8:
            raise Unfit("box header cut short")
        size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        used = 8
        if size == 1:
            large = yield Need(8)
            if len(large) < 8:
                raise Unfit("box header cut short")
            size, used = int.from_bytes(large, "big"), 16
        if size == 0:  # to the end of the file
            size = file_size - pos
        if size < used:
            raise Unfit("box size")
        pos += size
        if kind == b"mdat":
            media = True
            yield Hash(size - used)
        else:
            yield Skip(size - used)
    if not media:
        raise Unfit("no mdat")
    return "mp4", None, {}


# --- JPEG ------------------------------------------------------------------------


def _jpeg(size: int, pread: Pread) -> Parser:
    yield Need(2)  # SOI
    extra: dict[str, Any] = {}
    pos = 2
    while True:
        marker = yield Need(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise Unfit("marker")
        code = marker[1]
        pos += 2
        if code in (0xD9, 0xFF) or 0xD0 <= code <= 0xD7:
            raise Unfit("no scan")
        length_bytes = yield Need(2)
        length = int.from_bytes(length_bytes, "big")
        if len(length_bytes) < 2 or length < 2:
            raise Unfit("segment length")
        if 0xE0 <= code <= 0xEF or code == 0xFE:
            yield Skip(length - 2)  # APPn (Exif, XMP, ICC) and comments
            pos += length
            continue
        body = yield Need(length - 2)
        if len(body) < length - 2:
            raise Unfit("cut short")
        yield Mix(marker + length_bytes + body)  # tables, frame and scan headers
        if code in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            extra = {
                "height": int.from_bytes(body[1:3], "big"),
                "width": int.from_bytes(body[3:5], "big"),
            }
        pos += length
        if code == 0xDA:  # SOS: the scans, to EOI
            tail = pread(max(pos, size - 2), 2)
            if tail == b"\xff\xd9":
                yield Hash(size - pos)  # EOI ends the file: no need to look for it
            else:
                yield HashTo(b"\xff\xd9")  # something trails it: the first EOI ends the scans
            return "jpeg", None, extra


# --- PNG -------------------------------------------------------------------------


def _png() -> Parser:
    yield Need(8)
    extra: dict[str, Any] = {}
    while True:
        header = yield Need(8)
        if len(header) < 8:
            raise Unfit("chunk cut short")
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if kind[0] & 0x20:  # ancillary: text, time, Exif, colour hints
            yield Skip(length)
        elif kind == b"IHDR":
            body = yield Need(length)
            yield Mix(kind + body)
            extra = {
                "width": int.from_bytes(body[:4], "big"),
                "height": int.from_bytes(body[4:8], "big"),
            }
        else:
            yield Mix(kind)
            yield Hash(length)
        crc = yield Need(4)
        if len(crc) < 4:
            raise Unfit("cut short")
        if kind == b"IEND":
            return "png", None, extra
