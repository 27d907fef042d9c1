"""Build (once) a synthetic tree of N files in D directories for the benchmarks."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path


def build(path: Path, files: int, dirs: int, *, seed: int = 1) -> Path:
    """Create ``files`` small files spread over ``dirs`` directories two levels deep.

    A manifest records the shape; an existing tree of the same shape is reused
    (building a million files takes minutes, measuring takes seconds).
    """
    manifest = path / ".bench-tree.json"
    shape = {"files": files, "dirs": dirs, "seed": seed}
    if manifest.exists() and json.loads(manifest.read_text()) == shape:
        return path / "tree"
    tree = path / "tree"
    if tree.exists():
        os.system(f"rm -rf '{tree}'")
    rng = random.Random(seed)
    t0 = time.monotonic()
    top = max(1, int(dirs**0.5))
    dir_paths = []
    for i in range(dirs):
        d = tree / f"top{i % top:03d}" / f"dir{i:05d}"
        d.mkdir(parents=True, exist_ok=True)
        dir_paths.append(os.fsencode(d))
    per_dir = files // dirs
    extra = files - per_dir * dirs
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
    payload = bytes(range(256)) * 4
    for i, raw in enumerate(dir_paths):
        for j in range(per_dir + (1 if i < extra else 0)):
            fd = os.open(raw + b"/file%06d.dat" % j, flags, 0o644)
            n = rng.randrange(0, 1024)
            if n:
                os.write(fd, payload[:n])
            os.close(fd)
    manifest.write_text(json.dumps(shape))
    print(
        f"built {files} files in {dirs} dirs under {tree} in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    return tree
