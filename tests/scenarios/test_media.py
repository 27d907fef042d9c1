"""Photos and songs moved *and* edited while the daemon was stopped keep their ids (rule 4).

Real files by real tools: FLAC from ``flac``, retagged by ``metaflac``; MP3
from ``lame``, retagged by ``eyeD3`` (ID3v2.4 with a cover) and ``id3v2``;
JPEG from Pillow, re-captioned by ``exiftool`` and re-dated by ``jhead``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from filewarden.testing import Live
from tests import media
from tests.conftest import wait_for
from tests.media import needs
from tests.scenarios.conftest import live_daemon


def fingerprinted(live: Live, path: Path) -> dict[str, object]:
    """Wait (poll with a deadline) until the hasher has read ``path``; its record."""
    record: dict[str, object] = wait_for(
        lambda: (r := live.lookup(path)) is not None and r["fingerprint"] is not None and r,
        timeout=60,
    )
    return record


def relinked(live: Live, ids: dict[Path, int]) -> dict[Path, dict[str, object]]:
    """Wait until each path holds its old id (the relinker runs after the start-up sweep)."""
    live.sync()

    def now() -> dict[Path, dict[str, object]] | None:
        found = {p: live.lookup(p) for p in ids}
        if all(r is not None and r["id"] == ids[p] for p, r in found.items()):
            return found  # type: ignore[return-value]
        return None

    return wait_for(now, timeout=60)  # type: ignore[no-any-return]


def check_moved_and_edited(
    tmp_path: Path,
    make: Callable[[Path], dict[str, Path]],
    edit: Callable[[Path], None],
) -> None:
    root = tmp_path / "root1"
    made: dict[str, Path] = {}
    with live_daemon(
        tmp_path, "watchdog", roots=1, before_start=lambda r: made.update(make(r[0]))
    ) as live:
        records = {name: fingerprinted(live, path) for name, path in made.items()}
        for name, record in records.items():
            live.call("annotate", {"id": record["id"], "key": "rating", "value": name})
    # Stopped: each file moves to another directory under another name, and is edited there.
    ids: dict[Path, int] = {}
    for name, path in made.items():
        dest = root / "moved" / f"renamed-{name}{path.suffix}"
        dest.parent.mkdir(exist_ok=True)
        before = path.read_bytes()
        path.rename(dest)
        edit(dest)
        assert dest.read_bytes() != before
        ids[dest] = int(records[name]["id"])  # type: ignore[call-overload]
    with live_daemon(tmp_path, "watchdog", roots=1) as live:
        found = relinked(live, ids)
        for path, record in found.items():
            assert record["annotations"] == {"rating": path.stem.removeprefix("renamed-")}
            history = live.call("file", {"id": record["id"]})["history"]
            assert [e["kind"] for e in history][:1] == ["new"]
            assert history[-1]["kind"] == "relink" and history[-1]["by"] == "fingerprint"
        assert live.files("missing") == []
        status = live.call("status")["hashing"]
        assert status["relinked_by_fingerprint"] == len(ids)
        assert status["fingerprints"]["fingerprinted"] >= len(ids)


@needs("flac", "metaflac")
def test_flac_moved_and_retagged_while_stopped_keeps_its_id(tmp_path: Path) -> None:
    cover = media.jpeg(tmp_path / "cover.jpg", size=(100, 100), seed=3)

    def make(root: Path) -> dict[str, Path]:
        return {
            f"song{i}": media.flac(
                root / f"song{i}.flac", media.wav(tmp_path / f"{i}.wav", 300 + 100 * i, seed=i)
            )
            for i in range(2)
        }

    check_moved_and_edited(tmp_path, make, lambda p: media.retag_flac(p, cover))


@needs("lame", "eyeD3", "id3v2")
def test_mp3_moved_and_retagged_with_a_cover_while_stopped_keeps_its_id(tmp_path: Path) -> None:
    cover = media.jpeg(tmp_path / "cover.jpg", size=(100, 100), seed=4)

    def make(root: Path) -> dict[str, Path]:
        return {
            f"track{i}": media.mp3(
                root / f"track{i}.mp3", media.wav(tmp_path / f"{i}.wav", 350 + 90 * i, seed=i)
            )
            for i in range(2)
        }

    check_moved_and_edited(tmp_path, make, lambda p: media.retag_mp3(p, cover))


@needs("exiftool", "jhead")
def test_jpeg_moved_and_recaptioned_while_stopped_keeps_its_id(tmp_path: Path) -> None:
    def make(root: Path) -> dict[str, Path]:
        return {f"photo{i}": media.jpeg(root / f"photo{i}.jpg", seed=i) for i in range(2)}

    check_moved_and_edited(tmp_path, make, media.recaption_jpeg)


@needs("flac", "lame", "metaflac")
def test_a_content_edit_is_a_new_file_and_a_person_may_relink_it(tmp_path: Path) -> None:
    """Re-encoded, re-saved or other audio with the same tags: no relink; ``candidates``
    names the likely successor and ``relink`` (admin) moves the id with its annotations."""
    wav = media.wav(tmp_path / "a.wav", 440)
    other = media.wav(tmp_path / "b.wav", 660, seed=2)
    made: dict[str, Path] = {}

    def make(roots: list[Path]) -> None:
        made["mp3"] = media.mp3(roots[0] / "song.mp3", wav, "-V2")
        made["jpeg"] = media.jpeg(roots[0] / "photo.jpg", quality=90)
        made["flac"] = media.flac(roots[0] / "tune.flac", wav)
        media.run("metaflac", "--set-tag=TITLE=Tune", "--set-tag=ARTIST=Band", made["flac"])

    with live_daemon(tmp_path, "watchdog", roots=1, before_start=make) as live:
        ids = {k: int(fingerprinted(live, p)["id"]) for k, p in made.items()}  # type: ignore[call-overload]
        live.call("annotate", {"id": ids["mp3"], "key": "plays", "value": "12"})
    moved = tmp_path / "root1" / "elsewhere"
    moved.mkdir()
    made["mp3"].unlink()
    media.mp3(moved / "song.mp3", wav, "-V5")  # the same song at another quality
    made["jpeg"].unlink()
    media.jpeg(moved / "photo.jpg", quality=70)  # the same picture saved again
    made["flac"].unlink()
    flac = media.flac(moved / "tune.flac", other)  # other audio, the very same tags
    media.run("metaflac", "--set-tag=TITLE=Tune", "--set-tag=ARTIST=Band", flac)
    with live_daemon(tmp_path, "watchdog", roots=1) as live:
        live.sync()
        new = {k: fingerprinted(live, moved / made[k].name) for k in made}
        missing = {f["id"] for f in live.files("missing")}
        assert missing == set(ids.values())  # none of them was taken for the old one
        assert not {r["id"] for r in new.values()} & set(ids.values())
        assert live.call("status")["hashing"]["relinked_by_fingerprint"] == 0
        # A person decides, with evidence: the same stem (and tags, duration).
        found = live.call("candidates", {"id": ids["flac"]})["candidates"]
        assert found[0]["id"] == new["flac"]["id"]
        assert {"stem", "tags", "duration"} <= set(found[0]["evidence"])
        song = live.call("candidates", {"id": ids["mp3"]})["candidates"]
        assert song[0]["id"] == new["mp3"]["id"] and "stem" in song[0]["evidence"]
        record = live.call("relink", {"missing_id": ids["mp3"], "present_id": new["mp3"]["id"]})
        assert record["id"] == ids["mp3"] and record["path"] == str(moved / "song.mp3")
        assert record["annotations"] == {"plays": "12"} and record["state"] == "present"
        history = live.call("file", {"id": ids["mp3"]})["history"]
        assert history[-1]["kind"] == "relink" and history[-1]["by"] == "admin"
        assert live.lookup(moved / "song.mp3")["id"] == ids["mp3"]  # type: ignore[index]


@needs("lame", "eyeD3", "id3v2")
def test_a_fingerprint_that_several_files_share_moves_no_id(tmp_path: Path) -> None:
    """Two copies of one song, both gone while stopped, and a retagged one back: which of
    the two it is nothing tells, so it is a new file and both stay missing (logged)."""
    wav = media.wav(tmp_path / "a.wav", 500)
    cover = media.jpeg(tmp_path / "cover.jpg", size=(80, 80), seed=5)
    made: list[Path] = []

    def make(roots: list[Path]) -> None:
        made.append(media.mp3(roots[0] / "one.mp3", wav))
        made.append(roots[0] / "two.mp3")
        made[1].write_bytes(made[0].read_bytes())

    with live_daemon(tmp_path, "watchdog", roots=1, before_start=make) as live:
        ids = [int(fingerprinted(live, p)["id"]) for p in made]  # type: ignore[call-overload]
    back = tmp_path / "root1" / "back.mp3"
    back.write_bytes(made[0].read_bytes())
    media.retag_mp3(back, cover)
    for p in made:
        p.unlink()
    with live_daemon(tmp_path, "watchdog", roots=1) as live:
        live.sync()
        record = fingerprinted(live, back)
        assert record["id"] not in ids
        assert {f["id"] for f in live.files("missing")} == set(ids)
        assert live.call("status")["hashing"]["relinked_by_fingerprint"] == 0
        said = live.proc.seen("file.ambiguous")  # from the arrival, and from each departure
        assert said and all(e["rule"] == "fingerprint" for e in said)
        assert any(set(ids) <= set(e["candidates"]) for e in said)
        # ...and listed: candidates names the copy, with its fingerprint as evidence.
        for gone in ids:
            found = live.call("candidates", {"id": gone})["candidates"]
            assert found[0]["id"] == record["id"] and "fingerprint" in found[0]["evidence"]


@needs("lame", "eyeD3", "id3v2")
def test_a_song_copied_retagged_then_deleted_while_watched_keeps_its_id(tmp_path: Path) -> None:
    """Copy, retag the copy, delete the original (a tagger that writes a new file): once
    the copy is read, the delete finds it by fingerprint."""
    wav = media.wav(tmp_path / "a.wav", 410)
    cover = media.jpeg(tmp_path / "cover.jpg", size=(80, 80), seed=6)
    song: list[Path] = []

    def make(roots: list[Path]) -> None:
        song.append(media.mp3(roots[0] / "song.mp3", wav))

    with live_daemon(tmp_path, "watchdog", roots=1, before_start=make) as live:
        old = fingerprinted(live, song[0])
        live.call("annotate", {"id": old["id"], "key": "plays", "value": "7"})
        copy = tmp_path / "root1" / "tagged" / "song.mp3"
        copy.parent.mkdir()
        staged = tmp_path / "outside" / "song.mp3"
        staged.write_bytes(song[0].read_bytes())
        media.retag_mp3(staged, cover)
        staged.rename(copy)
        live.sync()
        fingerprinted(live, copy)
        song[0].unlink()
        live.sync()
        record = wait_for(
            lambda: (r := live.lookup(copy)) is not None and r["id"] == old["id"] and r, timeout=30
        )
        assert record["annotations"] == {"plays": "7"}
        history = live.call("file", {"id": old["id"]})["history"]
        assert history[-1]["kind"] == "relink" and history[-1]["by"] == "fingerprint"
        assert live.files("missing") == []
