"""Task sizes follow the measured cost per item toward the target seconds a task, within bounds.

The costs are given, not measured: each test plays a stage whose items take a known time and
reads the sizes the sizer chooses, so the numbers are exact and no clock is involved.
"""

from __future__ import annotations

import itertools

import pytest

from pipelines._engine.batching import MAX_TASK_ITEMS, TaskSizer

PLENTY = 10**9  # items waiting: never the tail of a batch


def play(sizer: TaskSizer, cost: float, tasks: int) -> list[int]:
    """Run ``tasks`` tasks of items that cost ``cost`` seconds each; the sizes chosen."""
    sizes = []
    for _ in range(tasks):
        size = sizer.size(PLENTY, final=False)
        sizes.append(size)
        sizer.observe(size, size * cost)
    return sizes


def test_first_tasks_are_small_until_a_cost_is_measured():
    sizer = TaskSizer(start=8)
    assert sizer.cost is None
    assert sizer.size(PLENTY, final=False) == 8
    sizer.observe(8, 0.008)
    assert sizer.cost == pytest.approx(0.001)


@pytest.mark.parametrize(("cost", "target", "expected"), [(0.001, 0.1, 100), (0.0001, 0.5, 5000), (0.02, 0.1, 5)])
def test_sizes_converge_to_the_target_duration(cost, target, expected):
    sizes = play(TaskSizer(target=target), cost, 10)
    assert sizes[0] == 8
    assert sizes[-1] == pytest.approx(expected, abs=1)
    assert sizes[-1] * cost == pytest.approx(target, rel=0.02)


def test_sizes_follow_a_change_in_cost_step_by_step():
    sizer = TaskSizer(target=0.1)
    play(sizer, 0.001, 10)
    slower = play(sizer, 0.01, 20)  # items became ten times dearer
    assert slower[0] == pytest.approx(100, abs=1)
    assert all(a >= b for a, b in itertools.pairwise(slower))  # shrinking, never overshooting upward
    assert slower[1] < slower[0]
    assert slower[-1] == pytest.approx(10, abs=1)


def test_one_slow_task_moves_the_size_only_partly():
    """The cost is a moving average: one outlier does not collapse the task size."""
    sizer = TaskSizer(target=0.1)
    play(sizer, 0.001, 10)
    sizer.observe(100, 1.0)  # one task ten times slower than the rest
    assert 20 < sizer.size(PLENTY, final=False) < 100


def test_sizes_are_at_least_one_item():
    sizer = TaskSizer(target=0.1)
    assert play(sizer, 5.0, 5)[-1] == 1  # an item takes longer than a whole task should


def test_sizes_are_at_most_the_maximum():
    assert play(TaskSizer(target=0.1), 1e-9, 5)[-1] == MAX_TASK_ITEMS
    assert play(TaskSizer(target=0.1, maximum=500), 1e-9, 5)[-1] == 500
    sizer = TaskSizer()
    sizer.observe(10, 0.0)  # too quick to measure: treated as very cheap, not as free
    assert sizer.size(PLENTY, final=False) == MAX_TASK_ITEMS


def test_a_fixed_size_is_kept_whatever_is_measured():
    sizer = TaskSizer(fixed=50, workers=4)
    sizer.observe(50, 100.0)
    assert sizer.cost is None
    assert sizer.size(PLENTY, final=False) == 50
    assert sizer.size(3, final=True) == 50


def test_empty_tasks_measure_nothing():
    sizer = TaskSizer()
    sizer.observe(0, 1.0)
    assert sizer.cost is None


def test_the_tail_of_a_batch_is_shared_among_the_workers():
    sizer = TaskSizer(target=0.1, workers=4)
    play(sizer, 0.001, 10)
    want = sizer.size(PLENTY, final=False)
    assert want == pytest.approx(100, abs=1)
    assert sizer.size(400, final=False) == want  # more may come: full tasks
    assert sizer.size(4 * want, final=True) == want  # enough for every worker
    assert sizer.size(120, final=True) == 30  # 120 left, 4 workers: 30 each


def test_a_tail_split_never_makes_tasks_cheaper_than_the_smallest():
    sizer = TaskSizer(target=0.1, workers=4, smallest=0.02)
    play(sizer, 0.001, 10)
    assert sizer.size(40, final=True) == 20  # 10 each would be 10 ms tasks; 20 items take 20 ms
    assert sizer.size(5, final=True) == 20  # a size, not a count: the runner takes what is pending


def test_the_tail_before_any_measure_is_split_evenly():
    sizer = TaskSizer(start=8, workers=4)
    assert sizer.size(12, final=True) == 3
    assert sizer.size(2, final=True) == 1
