"""Test ordering for `make test` (pytest-xdist, `--dist loadgroup`): the longest xdist groups
are collected first, so that a worker starts each of them at once and the other worker fills
in with short tests, instead of one of them starting last and running alone."""

import pytest

# The groups in the order they should start (a group runs on one worker, in one piece).
_FIRST = ("multiprocess", "training_loop", "vae_workflow")


def _rank(item: pytest.Item) -> int:
    groups = [mark.args[0] for mark in item.iter_markers("xdist_group") if mark.args]
    return min((_FIRST.index(g) for g in groups if g in _FIRST), default=len(_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the order within a rank is the collection order
