"""The scripts of benchmarks/ as modules for tests: they are files, not part of the package."""

import contextlib
import importlib.util
import pathlib
import sys
import types
from collections.abc import Iterator

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def benchmark_script(name: str, *modules_it_imports: str) -> Iterator[types.ModuleType]:
    """benchmarks/<name>.py loaded as module `name` and registered in sys.modules (a dataclass
    looks its module up there). On leaving, sys.path is as before and `name` and
    `modules_it_imports` are gone from sys.modules; those are dropped before loading too, so
    that each load imports them afresh."""
    saved_path = list(sys.path)
    for module_name in modules_it_imports:
        sys.modules.pop(module_name, None)
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved_path
        for module_name in (name, *modules_it_imports):
            sys.modules.pop(module_name, None)
