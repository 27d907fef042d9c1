"""Media fingerprints: the same after a metadata edit by a real tool, different after a content edit."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
import xxhash

from filewarden.fingerprint import Fingerprinter, fingerprint_bytes
from filewarden.hasher import hash_file
from tests import media
from tests.conftest import logged
from tests.media import needs


def fp(path: Path) -> tuple[str, bytes] | None:
    """Kind and value from the hasher's own read, the same however the file is split into reads."""
    got = hash_file(os.fsencode(path), fingerprint=True)
    assert got is not None
    data = path.read_bytes()
    whole = fingerprint_bytes(data)
    assert (got.media.kind, got.media.value) == (whole[:2] if whole else (got.media.kind, None))  # type: ignore[union-attr]
    for step in (7, 4096):
        assert unfit(data, step) is None or whole is None
    return (whole[0], whole[1]) if whole else None


def unfit(data: bytes, step: int = 1 << 20) -> str | None:
    """Why ``data`` has no fingerprint, fed ``step`` bytes at a time (None: it has one, or is no media)."""
    f = Fingerprinter(len(data), lambda offset, n: data[offset : offset + n])
    for at in range(0, len(data), step):
        f.feed(data[at : at + step])
    f.finish()
    return f.unfit


@pytest.fixture
def wavs(tmp_path: Path) -> tuple[Path, Path]:
    return media.wav(tmp_path / "a.wav", 440), media.wav(tmp_path / "b.wav", 523, seed=1)


@pytest.fixture
def cover(tmp_path: Path) -> Path:
    return media.jpeg(tmp_path / "cover.jpg", size=(200, 200), seed=9)


@needs("flac", "metaflac")
def test_flac_keeps_its_fingerprint_through_retagging_and_lossless_reencoding(
    tmp_path: Path, wavs: tuple[Path, Path], cover: Path
) -> None:
    original = media.flac(tmp_path / "a.flac", wavs[0])
    before = fp(original)
    assert before is not None and before[0] == "flac"
    edited = tmp_path / "edited.flac"
    shutil.copy(original, edited)
    media.retag_flac(edited, cover)
    assert edited.stat().st_size > original.stat().st_size + 10_000  # the cover went in
    assert fp(edited) == before
    # The same audio at another compression level: other bytes, the same decoded MD5.
    best = media.flac(tmp_path / "best.flac", wavs[0], "-8")
    assert best.read_bytes() != original.read_bytes()
    assert fp(best) == before
    # Other audio with the very same tags is another file.
    other = media.flac(tmp_path / "b.flac", wavs[1])
    media.retag_flac(other, cover)
    assert fp(other) not in (None, before)


@needs("flac", "metaflac")
def test_flacs_without_an_md5_are_told_apart_by_their_frames(
    tmp_path: Path, wavs: tuple[Path, Path], cover: Path
) -> None:
    a = media.zero_md5(media.flac(tmp_path / "a.flac", wavs[0]))
    b = media.zero_md5(media.flac(tmp_path / "b.flac", wavs[1]))
    fa, fb = fp(a), fp(b)
    assert fa is not None and fb is not None
    assert fa[0] == fb[0] == "flac-frames"
    assert fa != fb  # never matched on the zeros
    edited = tmp_path / "edited.flac"
    shutil.copy(a, edited)
    media.retag_flac(edited, cover)
    assert fp(edited) == fa


@needs("lame", "eyeD3", "id3v2")
def test_mp3_keeps_its_fingerprint_through_id3v24_tags_with_a_cover(
    tmp_path: Path, wavs: tuple[Path, Path], cover: Path
) -> None:
    original = media.mp3(tmp_path / "a.mp3", wavs[0])
    before = fp(original)
    assert before is not None and before[0] == "mp3"
    edited = tmp_path / "edited.mp3"
    shutil.copy(original, edited)
    media.retag_mp3(edited, cover)
    data = edited.read_bytes()
    assert data[:4] == b"ID3\x04" and data[-128:-125] == b"TAG"
    assert len(data) > original.stat().st_size + 10_000
    assert fp(edited) == before
    # APEv2 and Lyrics3 tags at the end are not audio either.
    ape = tmp_path / "ape.mp3"
    items = b"\x05\x00\x00\x00\x00\x00\x00\x00Title\x00hello"
    footer = b"APETAGEX" + struct.pack("<IIII", 2000, 32 + len(items), 1, 0) + bytes(8)
    lyrics = b"LYRICSBEGININD00003110" + b"000022" + b"LYRICS200"
    ape.write_bytes(original.read_bytes() + items + footer + lyrics)
    assert fp(ape) == before
    # The same WAV at another quality: another encoding, another file.
    assert fp(media.mp3(tmp_path / "v5.mp3", wavs[0], "-V5")) not in (None, before)


@needs("exiftool", "jhead")
def test_jpeg_keeps_its_fingerprint_through_captions_and_dates(tmp_path: Path) -> None:
    original = media.jpeg(tmp_path / "a.jpg")
    before = fp(original)
    assert before is not None and before[0] == "jpeg"
    edited = tmp_path / "edited.jpg"
    shutil.copy(original, edited)
    media.recaption_jpeg(edited)
    assert edited.read_bytes() != original.read_bytes()
    assert fp(edited) == before
    # Something after EOI (a phone's trailer) is not the image.
    trailed = tmp_path / "trailed.jpg"
    trailed.write_bytes(original.read_bytes() + b"\x00trailer\xff\xd9more")
    assert fp(trailed) == before
    # Saved again at another quality: other scan data.
    assert fp(media.jpeg(tmp_path / "q70.jpg", quality=70)) not in (None, before)


@needs("exiftool")
def test_png_fingerprint_skips_ancillary_chunks(tmp_path: Path) -> None:
    original = media.png(tmp_path / "a.png")
    before = fp(original)
    assert before is not None and before[0] == "png"
    edited = tmp_path / "edited.png"
    shutil.copy(original, edited)
    media.run("exiftool", "-q", "-overwrite_original", "-Title=A title", "-Comment=x", edited)
    assert edited.read_bytes() != original.read_bytes()
    assert fp(edited) == before


@needs("oggenc", "vorbiscomment", "opusenc")
def test_ogg_vorbis_and_opus_keep_their_fingerprint_through_comment_edits(
    tmp_path: Path, wavs: tuple[Path, Path]
) -> None:
    import mutagen.oggopus

    vorbis = tmp_path / "a.ogg"
    media.run("oggenc", "-Q", wavs[0], "-o", vorbis)
    opus = tmp_path / "a.opus"
    media.run("opusenc", "--quiet", wavs[0], opus)
    for original in (vorbis, opus):
        before = fp(original)
        assert before is not None and before[0] == "ogg"
        edited = tmp_path / f"edited{original.suffix}"
        shutil.copy(original, edited)
        if original == vorbis:
            media.run("vorbiscomment", "-w", "-t", "TITLE=Another", "-t", "ARTIST=X", edited)
        else:  # a comment header that spans pages: every later page is renumbered
            tags = mutagen.oggopus.OggOpus(edited)  # type: ignore[no-untyped-call]
            tags["title"] = ["x" * 70_000]
            tags.save()
        assert edited.read_bytes() != original.read_bytes()
        assert fp(edited) == before


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def test_mp4_fingerprint_is_the_mdat_payload_wherever_the_metadata_sits() -> None:
    payload = os.urandom(5000)
    ftyp = _box(b"ftyp", b"M4A \x00\x00\x00\x00M4A mp42isom")
    moov = _box(b"moov", _box(b"udta", b"title one"))
    moov2 = _box(b"moov", _box(b"udta", b"a much longer title, and a cover" + bytes(900)))
    before = fingerprint_bytes(ftyp + moov + _box(b"mdat", payload))
    assert before is not None and before[0] == "mp4"
    assert fingerprint_bytes(ftyp + _box(b"mdat", payload) + moov2)[:2] == before[:2]  # type: ignore[index]
    large = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + len(payload)) + payload
    assert fingerprint_bytes(ftyp + moov2 + large)[:2] == before[:2]  # type: ignore[index]
    assert fingerprint_bytes(ftyp + moov + _box(b"mdat", payload[:-1] + b"!")) != before
    assert fingerprint_bytes(ftyp + moov + _box(b"mdat", payload)[:-10]) is None  # cut short
    heic = _box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic") + _box(b"mdat", payload)
    assert fingerprint_bytes(heic) is None


@needs("flac", "lame", "oggenc")
def test_a_file_cut_short_or_corrupt_gets_no_fingerprint(
    tmp_path: Path, wavs: tuple[Path, Path]
) -> None:
    made = {
        "flac": media.flac(tmp_path / "a.flac", wavs[0]),
        "mp3": media.mp3(tmp_path / "a.mp3", wavs[0]),
        "jpeg": media.jpeg(tmp_path / "a.jpg"),
        "png": media.png(tmp_path / "a.png"),
    }
    media.run("oggenc", "-Q", wavs[0], "-o", tmp_path / "a.ogg")
    made["ogg"] = tmp_path / "a.ogg"
    for kind, path in made.items():
        data = path.read_bytes()
        assert (fingerprint_bytes(data) or ("",))[0].startswith(kind[:3]), kind
        for cut in (len(data) - 1, len(data) * 2 // 3, 100):
            assert fingerprint_bytes(data[:cut]) is None, (kind, cut)
        broken = bytearray(data)
        broken[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # a disk that returned zeros
        assert fingerprint_bytes(bytes(broken)) is None, kind
    # A FLAC cut exactly between two frames: STREAMINFO and the frames are
    # sound, but they stop short of the sample count it states.
    data = made["flac"].read_bytes()
    reasons = set()
    at = len(data) - 3000
    while (at := data.rfind(b"\xff\xf8", 0, at)) > len(data) // 2:
        reasons.add(unfit(data[:at]))
    assert any(r and r.startswith("frames end at sample") for r in reasons), reasons
    assert None not in reasons


def test_a_file_of_no_known_format_has_no_fingerprint_and_is_read_once() -> None:
    assert fingerprint_bytes(b"") is None
    assert fingerprint_bytes(b"hello world, a text file\n" * 100) is None
    f = Fingerprinter(10, lambda offset, n: b"")
    f.feed(b"plain text")
    assert f.done and f.finish() is None and f.unfit is None


@needs("flac", "lame")
def test_a_damaged_media_file_is_hashed_and_logged_once_at_debug(
    tmp_path: Path, wavs: tuple[Path, Path]
) -> None:
    whole = {
        "flac": media.flac(tmp_path / "a.flac", wavs[0]),
        "mp3": media.mp3(tmp_path / "a.mp3", wavs[0]),
        "jpeg": media.jpeg(tmp_path / "a.jpg"),
        "png": media.png(tmp_path / "a.png"),
    }
    with logged() as events:
        for kind, path in whole.items():
            cut = tmp_path / f"cut-{path.name}"
            cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            got = hash_file(os.fsencode(cut), fingerprint=True)
            assert got is not None and got.digest == xxhash.xxh3_128_digest(cut.read_bytes())
            assert got.media is not None and (got.media.kind, got.media.value) == (kind, None)
    unfit = [e for e in events if e["event"] == "hash.unfit"]
    assert [(e["log_level"], e["format"]) for e in unfit] == [("debug", k) for k in whole]
    assert all(e["reason"] for e in unfit)
    assert len(events) == len(unfit)  # nothing else, nothing louder
