"""Where a dataset's files live: a local directory or a bucket URL (gs://, s3://: anything
`etils.epath` opens).

Every file appears under its final name only once it is complete: it is written under a
temporary name and renamed. ArrayRecord's writer (C++) writes local files only, so a file bound
for a bucket is written in a local temporary directory and uploaded with epath; an object
store's upload is itself all-or-nothing, and the temporary name then rename keeps the same
rule on any other backend. Reading needs no copy: ArrayRecord's reader opens `gs://` shards
itself, and TFDS reads the metadata through epath.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from etils import epath

from ditjax.atomic_files import temporary_path_for


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL (gs://bucket/...) rather than a local path."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path; a local one made absolute."""
    return epath.Path(path if is_remote(path) else os.path.abspath(os.fspath(path)))


@contextlib.contextmanager
def local_file_for(destination: epath.Path, tag: str) -> Iterator[str]:
    """Yields a local file name to write; when the block ends without an error, that file
    appears at `destination` (local or remote) complete, under its final name at once.

    A local file is written next to `destination` (`ditjax.atomic_files`); one bound for a
    bucket is written in a local temporary directory, uploaded under a temporary name that
    `tag` makes distinct between concurrent writers (processes), then renamed.
    """
    if not is_remote(destination):
        with temporary_path_for(destination) as local:
            yield local
        return
    temporary = destination.parent / f"{destination.name}.tmp-{tag}"
    with tempfile.TemporaryDirectory(prefix="ditjax-upload-") as staging:
        local = os.path.join(staging, destination.name)
        yield local
        epath.Path(local).copy(temporary, overwrite=True)
    temporary.replace(destination)


def write_text_atomically(destination: epath.Path, text: str, tag: str) -> None:
    """Writes `text` to `destination` (local or remote) under a temporary name, then renames."""
    with local_file_for(destination, tag) as local, open(local, "w") as f:
        f.write(text)


def publish_directory(
    staging: epath.Path, destination: epath.Path, *, last: str, drop: frozenset[str] = frozenset()
) -> None:
    """Makes the finished directory `staging`, less the files named in `drop`, appear as
    `destination` (absent or empty).

    Locally one rename. In a bucket, where directories cannot be renamed, every file is
    copied with `last` (the file that marks the dataset complete) copied last, then
    `staging` is deleted; an interrupted publication leaves `staging` whole, to publish again.
    """
    if not is_remote(destination):
        if destination.exists():
            destination.rmdir()  # empty, as the caller checked
        os.rename(staging, destination)
        for name in drop:
            (destination / name).unlink(missing_ok=True)
        return
    destination.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in staging.iterdir() if p.name != last and p.name not in drop)
    for source in [*files, staging / last]:
        source.copy(destination / source.name, overwrite=True)
    staging.rmtree()
