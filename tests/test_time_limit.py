"""The wall-clock budget of a training invocation (ditjax.training.time_limit)."""

import pytest

from ditjax.training.time_limit import TimeLimit


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reached_once_the_minutes_have_passed():
    clock = FakeClock()
    limit = TimeLimit(2.0, clock=clock)
    clock.now += 119.0
    assert not limit.reached(1)
    assert limit.elapsed() == pytest.approx(119.0)
    clock.now += 1.0
    assert limit.reached(2)


def test_zero_means_no_limit():
    clock = FakeClock()
    limit = TimeLimit(0.0, clock=clock)
    clock.now += 1e9
    assert not limit.reached(1)


def test_one_process_checks_every_step_whatever_check_every():
    clock = FakeClock()
    limit = TimeLimit(1.0, check_every=100, clock=clock)
    clock.now += 61.0
    assert limit.reached(7)


def test_negative_minutes_are_refused():
    with pytest.raises(ValueError, match="minutes must be >= 0"):
        TimeLimit(-0.5)
