"""The relinker's memory of recent arrivals: bounded by age and by count, whatever the sizes."""

from __future__ import annotations

from filewarden.relink import Arrivals


def test_sizes_that_never_come_again_are_forgotten_with_their_files() -> None:
    recent = Arrivals(max_age=60, max_count=1000)
    for size in range(500):
        recent.add(size, file_id=size, now=0.0)
    assert (len(recent), recent.sizes()) == (500, 500)
    recent.add(10_000, file_id=1, now=61.0)
    assert (len(recent), recent.sizes()) == (1, 1)
    assert recent.ids(10_000) == [1]
    assert recent.ids(3) == []


def test_the_count_is_capped_even_when_every_arrival_is_young() -> None:
    recent = Arrivals(max_age=3600, max_count=100)
    for n in range(1000):
        recent.add(n, file_id=n, now=5.0)
    assert len(recent) == 100
    assert recent.sizes() == 100
    assert recent.ids(899) == []
    assert recent.ids(900) == [900]


def test_one_size_keeps_its_newest_arrivals_in_order_and_sheds_the_old() -> None:
    recent = Arrivals(max_age=3600, max_count=50)
    for n in range(10_000):
        recent.add(0, file_id=n, now=float(n))
        assert len(recent._when) <= 2 * len(recent) + 1
    assert recent.ids(0) == list(range(9950, 10_000))
    recent.add(7, file_id=-1, now=20_000.0)  # an hour later: everything before it is gone
    assert recent.ids(0) == []
    assert recent.sizes() == 1


def test_sizes_sharing_the_queue_each_answer_only_their_own() -> None:
    recent = Arrivals(max_age=10, max_count=1000)
    recent.add(1, file_id=10, now=0.0)
    recent.add(2, file_id=20, now=5.0)
    recent.add(1, file_id=11, now=8.0)
    assert recent.ids(1) == [10, 11]
    recent.add(2, file_id=21, now=12.0)  # the first arrival is now 12 s old
    assert recent.ids(1) == [11]
    assert recent.ids(2) == [20, 21]
    recent.forget(now=100.0)
    assert (len(recent), recent.sizes(), recent.ids(1), recent.ids(2)) == (0, 0, [], [])


def test_many_sizes_at_once_answer_as_one_at_a_time() -> None:
    """The one-pass lookup (many sizes) and the search (a few) agree, in arrival order."""
    recent = Arrivals(max_age=3600, max_count=5000)
    for n in range(20_000):
        # Sizes whose packed bytes straddle entries: 256 * k next to k.
        recent.add((n % 50) * (256 if n % 3 else 1), file_id=n, now=float(n) / 10)
    wanted = [*range(0, 50 * 256, 7), 256, 257]
    together = recent.ids_by_size(wanted)
    assert together == {size: recent.ids(size) for size in wanted}
    assert sum(map(len, together.values())) > 100
    assert all(ids == sorted(ids) and min(ids) >= 15_000 for ids in together.values() if ids)
