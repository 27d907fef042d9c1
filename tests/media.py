"""Real media files for the fingerprint tests, made and edited by real tools."""

from __future__ import annotations

import math
import random
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import pytest


def needs(*tools: str) -> pytest.MarkDecorator:
    """Skip unless every one of ``tools`` is on PATH (``.ci/run`` installs them)."""
    absent = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(absent), reason=f"not installed: {', '.join(absent)}")


def run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def wav(path: Path, tone: float, seconds: float = 2.0, seed: int = 0) -> Path:
    """A stereo 16-bit WAV: two tones and a little noise (so no two are alike)."""
    noise = random.Random(seed)
    rate = 44100
    frames = bytearray()
    for i in range(int(rate * seconds)):
        t = 2 * math.pi * tone * i / rate
        frames += struct.pack(
            "<hh", int(8000 * math.sin(t)) + noise.randint(-40, 40), int(6000 * math.sin(1.5 * t))
        )
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path


def flac(path: Path, source: Path, *extra: str) -> Path:
    run("flac", "--silent", "--force", *extra, source, "-o", path)
    return path


def mp3(path: Path, source: Path, quality: str = "-V2") -> Path:
    run("lame", "--quiet", quality, source, path)
    return path


def jpeg(path: Path, quality: int = 90, size: tuple[int, int] = (320, 240), seed: int = 0) -> Path:
    """A JPEG made with Pillow: a pattern (and a seed) no other test image has."""
    from PIL import Image

    image = Image.new("RGB", size)
    pixels = image.load()
    assert pixels is not None
    for x in range(size[0]):
        for y in range(size[1]):
            pixels[x, y] = ((x * 7 + seed) % 256, (y * 3) % 256, (x * y + seed) % 256)
    image.save(path, quality=quality)
    return path


def png(path: Path) -> Path:
    from PIL import Image

    image = Image.new("RGB", (64, 48))
    pixels = image.load()
    assert pixels is not None
    for x in range(64):
        for y in range(48):
            pixels[x, y] = (x * 4, y * 5, (x + y) % 256)
    image.save(path)
    return path


def zero_md5(path: Path) -> Path:
    """Clear a FLAC's STREAMINFO MD5, as encoders that do not compute it leave it."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first, as the format says
    data[26:42] = bytes(16)
    path.write_bytes(bytes(data))
    return path


def retag_mp3(path: Path, cover: Path) -> None:
    """ID3v2.4 with an embedded cover (eyeD3), then an ID3v1 tag (id3v2): the size changes."""
    run("eyeD3", "--quiet", "--to-v2.4", "-t", "Another title", "-a", "Someone",
        f"--add-image={cover}:FRONT_COVER", path)  # fmt: skip
    run("id3v2", "-1", "-A", "An album", path)


def retag_flac(path: Path, cover: Path) -> None:
    run("metaflac", "--set-tag=TITLE=Another title", "--set-tag=ARTIST=Someone", path)
    run("metaflac", f"--import-picture-from={cover}", path)


def recaption_jpeg(path: Path) -> None:
    """A caption and dates by exiftool, the EXIF date again by jhead, and the file's mtime from it."""
    run("exiftool", "-q", "-overwrite_original", "-ImageDescription=On the beach",
        "-Comment=A caption", "-DateTimeOriginal=2020:01:02 03:04:05", path)  # fmt: skip
    run("jhead", "-q", "-ts2021:02:03-04:05:06", path)
    run("jhead", "-q", "-ft", path)
