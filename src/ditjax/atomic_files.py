"""Local files that appear under their final name only when complete.

Each writer here writes a temporary file in the target's directory, flushes it to disk and
renames it over the target. An error or an interruption leaves whatever was at the target
before untouched and removes the temporary file. The temporary file is created with the mode
a plain `open(path, "w")` would give (0666 less the umask), so the result is the same as an
ordinary write. Standard library only: the benchmark and the model-only programs use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from typing import IO, Any

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create_temporary(directory: str, name: str) -> str:
    """Creates an empty, uniquely named file next to `name` in `directory`; returns its path."""
    while True:
        path = os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(path, _CREATE, 0o666))
            return path
        except FileExistsError:
            continue


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temporary_path_for(path: str | os.PathLike) -> Iterator[str]:
    """Yields the path of an empty temporary file for a writer that opens files by name.

    When the block ends without an error, the file is synced and renamed over `path`; when it
    raises, the file is removed and `path` is left as it was. `path`'s directory is created if
    missing.
    """
    target = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    temporary = _create_temporary(directory, name)
    try:
        yield temporary
        _sync(temporary)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yields a binary file whose contents replace `path` when the block ends without an
    error (see `temporary_path_for`)."""
    with temporary_path_for(path) as temporary, open(temporary, "wb") as f:
        yield f


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replaces `path` with `data`."""
    with replacing(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces `path` with `text` (UTF-8)."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Replaces `path` with `value` as indented JSON and a final newline."""
    write_text(path, json.dumps(value, indent=2) + "\n")
