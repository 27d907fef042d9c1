"""Fingerprinting throughput: hash plus fingerprint against the hash alone and ``xxhsum -H2``.

    python bench/fingerprint.py                 # about 2 GB of FLAC, MP3 and JPEG, 3 runs
    python bench/fingerprint.py --mb 300 --runs 3

Builds (once) a corpus of real media files: a four-minute FLAC (``flac``)
and MP3 (``lame -V2``) of a generated WAV and 12-megapixel JPEGs (Pillow,
quality 92), each copied under many names until each format has about a
third of ``--mb``. Then, with the files in the page cache (``warm``: where
the hashing itself is all that costs) and, as root, read from the disk
(``cold``: the page cache dropped before each pass, as the background
hasher meets a library), in each run, in turn (the order rotating):

* filewarden ``hash_file(..., fingerprint=True)`` over every file: the
  background hasher's read, xxh3-128 and the media fingerprint in one pass;
* ``hash_file(...)``: xxh3-128 alone, the same reads;
* ``xxhsum -H2`` over the same files (XXH128, the reference C tool).

Reported: the median throughput of each, per format and in all, and the
ratios (target: hash plus fingerprint at least 0.8x the hash alone).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import struct
import subprocess
import time
import wave
from pathlib import Path

import _args
from filewarden.hasher import hash_file

FORMATS = ("flac", "mp3", "jpeg")


def _wav(path: Path, seconds: int) -> None:
    noise = random.Random(1)
    rate = 44100
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        for start in range(0, seconds * rate, rate):
            frames = bytearray()
            for i in range(start, start + rate):
                t = 2 * math.pi * 220 * i / rate
                frames += struct.pack(
                    "<hh",
                    int(6000 * math.sin(t) + 3000 * math.sin(3.01 * t)) + noise.randint(-900, 900),
                    int(5000 * math.sin(1.5 * t)) + noise.randint(-900, 900),
                )
            w.writeframes(bytes(frames))


def _jpeg(path: Path, seed: int) -> None:
    from PIL import Image

    rng = random.Random(seed)
    small = Image.frombytes(
        "RGB", (400, 300), bytes(rng.getrandbits(8) for _ in range(400 * 300 * 3))
    )
    small.resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)


def build(workdir: Path, mb: int) -> dict[str, list[Path]]:
    """The corpus (made once): about ``mb`` MB, a third of it in each format."""
    corpus = workdir / f"media-{mb}"
    marker = corpus / ".done"
    masters = workdir / "media-masters"
    masters.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        wav = masters / "song.wav"
        if not wav.exists():
            _wav(wav, 240)
        made = {
            "flac": masters / "song.flac",
            "mp3": masters / "song.mp3",
        }
        if not made["flac"].exists():
            subprocess.run(
                ["flac", "--silent", "--force", str(wav), "-o", str(made["flac"])], check=True
            )
        if not made["mp3"].exists():
            subprocess.run(["lame", "--quiet", "-V2", str(wav), str(made["mp3"])], check=True)
        photos = [masters / f"photo{i}.jpg" for i in range(4)]
        for i, photo in enumerate(photos):
            if not photo.exists():
                _jpeg(photo, i)
        shutil.rmtree(corpus, ignore_errors=True)
        for fmt in FORMATS:
            sources = photos if fmt == "jpeg" else [made[fmt]]
            (corpus / fmt).mkdir(parents=True)
            total, n = 0, 0
            while total < mb * 1e6 / 3:
                source = sources[n % len(sources)]
                shutil.copyfile(source, corpus / fmt / f"{n:05d}{source.suffix}")
                total += source.stat().st_size
                n += 1
        marker.touch()
    return {fmt: sorted((corpus / fmt).iterdir()) for fmt in FORMATS}


def main() -> None:
    parser = _args.parser(__doc__, runs=3)
    parser.add_argument("--mb", type=int, default=2000, help="corpus size in MB")
    parser.add_argument(
        "--cache", choices=("warm", "cold", "both"), default="both", help="cold needs root"
    )
    args = parser.parse_args()
    caches = ["warm", "cold"] if args.cache == "both" else [args.cache]
    if os.geteuid() != 0 and "cold" in caches:
        print("not root: the cold runs are left out (they drop the page cache)")
        caches.remove("cold")
    for cache in caches:
        measure(args, cache)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def measure(args: argparse.Namespace, cache: str) -> None:
    for tool in ("xxhsum", "flac", "lame"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install xxhash flac lame")
    files = build(args.workdir, args.mb)
    sizes = {fmt: sum(p.stat().st_size for p in paths) for fmt, paths in files.items()}
    for paths in files.values():  # into the page cache
        for p in paths:
            p.read_bytes()
    where = "read from the disk" if cache == "cold" else "in the page cache"

    def ours(paths: list[Path], fingerprint: bool) -> float:
        t0 = time.perf_counter()
        for p in paths:
            got = hash_file(os.fsencode(p), fingerprint=fingerprint)
            assert got is not None
            assert not fingerprint or (got.media is not None and got.media.value), p
        return time.perf_counter() - t0

    def theirs(paths: list[Path]) -> float:
        t0 = time.perf_counter()
        subprocess.run(["xxhsum", "-H2", *map(str, paths)], check=True, capture_output=True)
        return time.perf_counter() - t0

    tools = {
        "hash+fingerprint": lambda paths: ours(paths, True),
        "hash alone": lambda paths: ours(paths, False),
        "xxhsum -H2": theirs,
    }
    times: dict[str, dict[str, list[float]]] = {t: {f: [] for f in FORMATS} for t in tools}
    names = list(tools)
    for run in range(args.runs):
        order = names[run % 3 :] + names[: run % 3]
        for name in order:
            for fmt in FORMATS:
                if cache == "cold":
                    drop_caches()
                times[name][fmt].append(tools[name](files[fmt]))
        print(
            f"run {run + 1}/{args.runs}: "
            + ", ".join(f"{n}={sum(times[n][f][-1] for f in FORMATS):.2f}s" for n in names),
            flush=True,
        )
    mbs = {
        name: {
            **{f: sizes[f] / statistics.median(times[name][f]) / 1e6 for f in FORMATS},
            "all": sum(sizes.values())
            / statistics.median([sum(t) for t in zip(*times[name].values(), strict=True)])
            / 1e6,
        }
        for name in names
    }
    counts = {f: len(p) for f, p in files.items()}
    print(
        f"\n{cache}: {sum(sizes.values()) / 1e6:,.0f} MB, {where}"
        f" ({', '.join(f'{counts[f]} {f}, {sizes[f] / 1e6:,.0f} MB' for f in FORMATS)}),"
        f" median of {args.runs} runs, MB/s\n"
    )
    print(f"{'':20}" + "".join(f"{c:>10}" for c in (*FORMATS, "all")))
    for name in names:
        print(f"{name:20}" + "".join(f"{mbs[name][c]:10,.0f}" for c in (*FORMATS, "all")))
    print()
    for c in (*FORMATS, "all"):
        print(
            f"{c:5} hash+fingerprint / hash alone {mbs['hash+fingerprint'][c] / mbs['hash alone'][c]:.2f}x"
            f" (target >= 0.8), / xxhsum {mbs['hash+fingerprint'][c] / mbs['xxhsum -H2'][c]:.2f}x;"
            f" hash alone / xxhsum {mbs['hash alone'][c] / mbs['xxhsum -H2'][c]:.2f}x"
        )
    print(
        json.dumps(
            {"cache": cache, "bytes": sizes, "files": counts, "seconds": times, "mb_per_s": mbs}
        )
    )


if __name__ == "__main__":
    main()
