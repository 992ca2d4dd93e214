"""Test order for `make test` (pytest-xdist, `--dist loadfile`): the longest files are
collected first, so that each starts at once on a worker while the other worker works through
the short files, instead of one of them starting last and running alone."""

import contextlib

import pytest

# PyTorch's CUDA wheels for Linux (the only torch 2.13 wheel pip finds for Python 3.12) bring
# Triton, and importing Triton after TensorFlow 2.21 crashes the process (diffusers imports it
# through torch._dynamo). Imported before any test module loads TensorFlow, it works.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

_LONGEST_FILES = (
    "test_preemption.py",
    "test_multiprocess.py",
    "test_training_loop.py",
    "test_fid_in_training.py",
)


def _rank(item: pytest.Item) -> int:
    name = item.path.name
    return _LONGEST_FILES.index(name) if name in _LONGEST_FILES else len(_LONGEST_FILES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the order within a rank is the collection order
