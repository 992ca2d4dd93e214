"""Resumable sample files: finished index ranges under `<out>.parts/`, then one ADM-style .npz.

A part `<start>-<stop>.npz` holds `images` uint8 (stop - start, H, W, 3) and `labels` for the
samples with those indices; `manifest.json` records the settings they were made with. Every
file is written under a temporary name and renamed, so an interruption leaves only whole files
(and stray temporaries, which are ignored and overwritten).
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ditjax.atomic_files import replacing, write_text

MANIFEST = "manifest.json"
_PART = re.compile(r"^(\d+)-(\d+)\.npz$")


def parts_dir(out: str) -> pathlib.Path:
    """Where the finished chunks of `out` are kept until it is assembled."""
    return pathlib.Path(f"{out}.parts")


def create_manifest(parts: pathlib.Path, settings: Mapping[str, Any]) -> None:
    """Creates `parts` with a manifest of `settings` unless it already has one."""
    parts.mkdir(parents=True, exist_ok=True)
    if not (parts / MANIFEST).exists():
        write_text(parts / MANIFEST, json.dumps(dict(settings), indent=2, sort_keys=True))


def check_manifest(parts: pathlib.Path, settings: Mapping[str, Any]) -> None:
    """Raises ValueError naming the first setting that differs from the recorded ones."""
    recorded = json.loads((parts / MANIFEST).read_text())
    wanted = json.loads(json.dumps(dict(settings)))
    for name in sorted(set(recorded) | set(wanted)):
        if recorded.get(name) != wanted.get(name):
            raise ValueError(
                f"{parts} holds samples made with {name}={recorded.get(name)!r}, but this run "
                f"has {name}={wanted.get(name)!r}; rerun with the same settings, or delete "
                f"{parts} (or choose another --out) to start over"
            )


def part_ranges(parts: pathlib.Path) -> list[tuple[int, int]]:
    """The (start, stop) index ranges of the finished parts, sorted."""
    if not parts.is_dir():
        return []
    ranges = []
    for path in parts.iterdir():
        match = _PART.match(path.name)
        if match:
            ranges.append((int(match.group(1)), int(match.group(2))))
    return sorted(ranges)


def missing_indices(parts: pathlib.Path, num_samples: int) -> np.ndarray:
    """Sample indices in [0, num_samples) that no finished part holds, ascending."""
    done = np.zeros(num_samples, bool)
    for start, stop in part_ranges(parts):
        done[start:stop] = True
    return np.flatnonzero(~done)


def contiguous_runs(indices: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(position, start, stop) for each run of consecutive values in `indices` (M,)."""
    if len(indices) == 0:
        return
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(indices)], strict=True):
        yield int(lo), int(indices[lo]), int(indices[hi - 1]) + 1


def write_part(parts: pathlib.Path, start: int, images: np.ndarray, labels: np.ndarray) -> None:
    """Saves samples start .. start + len(images) - 1: uint8 (n, H, W, 3) and labels (n,)."""
    images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"bad part: images {images.shape}, labels {labels.shape}")
    path = parts / f"{start:07d}-{start + len(images):07d}.npz"
    with replacing(path) as f:
        np.savez(f, images=images, labels=labels)


def assemble(parts: pathlib.Path, out: str, expected_labels: np.ndarray) -> None:
    """Writes `out` (atomically) with `arr_0` uint8 (N, H, W, 3) and `labels` (N,) from parts
    that tile [0, N) exactly, streaming one part at a time; then removes `parts`."""
    num_samples = len(expected_labels)
    ranges = part_ranges(parts)
    position = 0
    for start, stop in ranges:
        if start != position:
            problem = "overlaps" if start < position else "is missing"
            raise ValueError(f"cannot assemble {out}: index {min(start, position)} {problem}")
        position = stop
    if position != num_samples:
        raise ValueError(f"cannot assemble {out}: parts end at {position}, not {num_samples}")
    with np.load(parts / f"{ranges[0][0]:07d}-{ranges[0][1]:07d}.npz") as first:
        image_shape = first["images"].shape[1:]

    with (
        replacing(out) as f,
        zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        with archive.open("arr_0.npy", "w", force_zip64=True) as entry:
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": (num_samples, *image_shape),
            }
            np.lib.format.write_array_header_2_0(entry, header)
            for start, stop in ranges:
                with np.load(parts / f"{start:07d}-{stop:07d}.npz") as part:
                    images, labels = part["images"], part["labels"]
                if images.shape != (stop - start, *image_shape):
                    raise ValueError(f"part {start}-{stop} has images {images.shape}")
                if not np.array_equal(labels, expected_labels[start:stop]):
                    raise ValueError(f"part {start}-{stop} has labels other than expected")
                entry.write(np.ascontiguousarray(images).tobytes())
        with archive.open("labels.npy", "w") as entry:
            np.lib.format.write_array(entry, np.asarray(expected_labels, np.int64))
    shutil.rmtree(parts)
