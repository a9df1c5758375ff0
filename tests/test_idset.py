"""``IdSet``: sets of item ids as sorted, disjoint ranges, checked against Python sets."""

from __future__ import annotations

import itertools
import random

import pytest

from pipelines._engine.idset import IdSet


def is_canonical(s: IdSet) -> bool:
    """Sorted, non-empty, disjoint and non-adjacent ranges: one representation per set."""
    return all(a < b for a, b in s.ranges) and all(b < c for (_, b), (c, _) in itertools.pairwise(s.ranges))


class TestBuild:
    def test_of_merges_runs(self) -> None:
        assert IdSet.of([5, 1, 2, 3, 3, 9, 8]).ranges == ((1, 4), (5, 6), (8, 10))

    def test_of_nothing(self) -> None:
        empty = IdSet.of([])
        assert empty == IdSet() and not empty and len(empty) == 0 and list(empty) == []

    def test_span(self) -> None:
        assert IdSet.span(2, 5).ranges == ((2, 5),)
        assert IdSet.span(5, 5) == IdSet() == IdSet.span(6, 5)

    def test_len_iter_contains(self) -> None:
        s = IdSet(((0, 3), (10, 12)))
        assert len(s) == 5
        assert list(s) == [0, 1, 2, 10, 11]
        assert 11 in s and 3 not in s and 9 not in s and 12 not in s
        assert s.first() == 0

    def test_hashable_and_equal_by_value(self) -> None:
        assert {IdSet.of([1, 2]), IdSet.span(1, 3)} == {IdSet.span(1, 3)}


class TestAlgebra:
    def test_union_merges_overlapping_and_adjacent(self) -> None:
        assert (IdSet.span(0, 3) | IdSet.span(3, 5)).ranges == ((0, 5),)
        assert (IdSet.span(0, 3) | IdSet.span(1, 2)).ranges == ((0, 3),)
        assert (IdSet.span(5, 7) | IdSet.span(0, 2)).ranges == ((0, 2), (5, 7))

    def test_difference_cuts_holes(self) -> None:
        assert (IdSet.span(0, 10) - IdSet.of([0, 4, 5, 9])).ranges == ((1, 4), (6, 9))
        assert IdSet.span(0, 10) - IdSet.span(0, 10) == IdSet()
        assert IdSet.span(0, 3) - IdSet.span(5, 9) == IdSet.span(0, 3)

    def test_intersection(self) -> None:
        assert (IdSet(((0, 5), (8, 12))) & IdSet.span(3, 10)).ranges == ((3, 5), (8, 10))
        assert IdSet.span(0, 3) & IdSet.span(3, 6) == IdSet()

    def test_take(self) -> None:
        s = IdSet(((0, 3), (10, 14)))
        head, rest = s.take(5)
        assert head.ranges == ((0, 3), (10, 12)) and rest.ranges == ((12, 14),)
        assert s.take(0) == (IdSet(), s)
        assert s.take(100) == (s, IdSet())

    def test_json_round_trip(self) -> None:
        s = IdSet(((0, 3), (10, 14)))
        assert s.to_json() == "[[0,3],[10,14]]"
        assert IdSet.from_json(s.to_json()) == s
        assert IdSet.from_json(None) == IdSet() == IdSet.from_json("")
        assert IdSet.from_json(IdSet().to_json()) == IdSet()


def random_ids(rng: random.Random) -> set[int]:
    """Sets with runs and gaps, the shapes batches produce."""
    out: set[int] = set()
    for _ in range(rng.randint(0, 6)):
        start = rng.randint(0, 80)
        out.update(range(start, start + rng.randint(1, 15)))
    out.update(rng.sample(range(100), rng.randint(0, 5)))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_python_sets(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        a, b = random_ids(rng), random_ids(rng)
        x, y = IdSet.of(a), IdSet.of(b)
        for result, expected in ((x, a), (x | y, a | b), (x - y, a - b), (x & y, a & b)):
            assert set(result) == expected
            assert list(result) == sorted(expected)
            assert len(result) == len(expected)
            assert is_canonical(result), result
            assert result == IdSet.of(expected)  # one representation per set
            assert IdSet.from_json(result.to_json()) == result
        n = rng.randint(0, len(a) + 2)
        head, rest = x.take(n)
        assert list(head) == sorted(a)[:n]
        assert list(rest) == sorted(a)[n:]
        assert head | rest == x and not head & rest
        probe = rng.randint(-1, 101)
        assert (probe in x) == (probe in a)
