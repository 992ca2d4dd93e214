"""Image sources for latent extraction: a TFDS dataset or a folder of class subfolders.

A source has a fixed order; it yields `SourceExample(key, image, label, error)` for every
example in that order, with `image=None` and the reason in `error` for a file that cannot be
decoded or has more than `MAX_IMAGE_PIXELS` pixels. Images are decoded on a few threads, ahead
of the consumer, in order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import os
import pathlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SOURCE_FORMS = ("tfds:NAME[:SPLIT]", "folder:PATH", "demo")
DEMO_SOURCE = "tfds:demo_shapes:train"
# Larger images are skipped before decoding (a decompression bomb, or far beyond any crop size);
# below PIL's own limit (Image.MAX_IMAGE_PIXELS, about 89M), so PIL never warns first.
MAX_IMAGE_PIXELS = 2**25
_DECODE_THREADS = min(8, os.cpu_count() or 1)
_DECODE_LOOKAHEAD = 64
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class SourceExample(NamedTuple):
    """One example of a source: `image` is None and `error` says why when it is unreadable."""

    key: str
    image: Image.Image | None
    label: int
    error: str | None


@runtime_checkable
class ImageSource(Protocol):
    """A labelled image collection in a fixed order."""

    class_names: list[str]

    @property
    def num_examples(self) -> int: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[SourceExample]: ...

    def iter_range(self, start: int, stop: int) -> Iterator[SourceExample]:
        """Examples start..stop-1 of the order, as `__iter__` yields them."""
        ...


def _decode(read: Callable[[], bytes]) -> tuple[Image.Image | None, str | None]:
    try:
        image = Image.open(io.BytesIO(read()))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            return None, (
                f"image is {width}x{height} = {width * height} pixels, above the limit of "
                f"{MAX_IMAGE_PIXELS} (ditjax.data.sources.MAX_IMAGE_PIXELS); not decoded"
            )
        image.load()
        return image, None
    except Exception as error:  # a corrupt or unreadable file is reported, not fatal
        # Without object addresses ("<_io.BytesIO object at 0x...>") the report is the same
        # in every run.
        return None, f"{type(error).__name__}: {_ADDRESS.sub('', str(error))}"


def _decode_in_order(
    encoded: Iterable[tuple[str, int, Callable[[], bytes]]],
) -> Iterator[SourceExample]:
    """(key, label, read bytes) -> decoded examples, in order, decoding on a thread pool."""
    with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:
        pending: collections.deque = collections.deque()

        def finish_oldest() -> SourceExample:
            key, label, future = pending.popleft()
            image, error = future.result()
            return SourceExample(key, image, label, error)

        for key, label, read in encoded:
            pending.append((key, label, pool.submit(_decode, read)))
            if len(pending) >= _DECODE_LOOKAHEAD:
                yield finish_oldest()
        while pending:
            yield finish_oldest()


def _check_range(start: int, stop: int, length: int) -> None:
    if not 0 <= start <= stop <= length:
        raise IndexError(f"range [{start}, {stop}) is outside [0, {length}]")


class FolderSource:
    """Images under `root/<class name>/*.{jpg,jpeg,png}`; sorted folder names give labels 0..K-1.

    Files are ordered by class, then by file name.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.class_names = sorted(
            d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d))
        )
        if not self.class_names:
            raise ValueError(
                f"image folder {self.root} has no class subfolders; expected "
                f"{self.root}/<class name>/<image>"
            )
        self._files = [
            (os.path.join(name, f), label)
            for label, name in enumerate(self.class_names)
            for f in sorted(os.listdir(os.path.join(self.root, name)))
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not self._files:
            raise ValueError(
                f"image folder {self.root} has no {'/'.join(IMAGE_EXTENSIONS)} files in its "
                "class subfolders"
            )

    @property
    def num_examples(self) -> int:
        return len(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[SourceExample]:
        return self.iter_range(0, len(self))

    def iter_range(self, start: int, stop: int) -> Iterator[SourceExample]:
        _check_range(start, stop, len(self))
        return _decode_in_order(
            (relative, label, pathlib.Path(self.root, relative).read_bytes)
            for relative, label in self._files[start:stop]
        )


class TfdsSource:
    """A TFDS image classification dataset with features `image` (an Image) and `label`.

    Read in its stored order. The embedded `demo_shapes` set is generated on first use; other
    datasets are prepared by TFDS as usual (ImageNet: from its manual download).
    """

    _READ_CHUNK = 256

    def __init__(self, name: str, split: str = "train", data_dir: str | None = None):
        import tensorflow_datasets as tfds

        from ditjax.data import demo_shapes  # noqa: F401  (registers the demo builder)

        try:
            self._builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            raise ValueError(f"unknown TFDS dataset {name!r}: {error}") from None
        if not self._builder.is_prepared():
            self._builder.download_and_prepare()
        info = self._builder.info
        if split not in info.splits:
            raise ValueError(f"TFDS dataset {name} has no split {split!r}; has {list(info.splits)}")
        features = info.features
        if not (
            "image" in features
            and "label" in features
            and isinstance(features["image"], tfds.features.Image)
            and isinstance(features["label"], tfds.features.ClassLabel)
        ):
            raise ValueError(
                f"TFDS dataset {name} is not an image classification dataset (needs an `image` "
                f"Image feature and a `label` ClassLabel feature)"
            )
        self.name, self.split = name, split
        self.class_names = list(features["label"].names)
        self._length = info.splits[split].num_examples
        self._random_access = (
            info.file_format in tfds.core.file_adapters.FileFormat.with_random_access()
        )

    @property
    def num_examples(self) -> int:
        return self._length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[SourceExample]:
        return self.iter_range(0, len(self))

    def iter_range(self, start: int, stop: int) -> Iterator[SourceExample]:
        _check_range(start, stop, len(self))
        return _decode_in_order(self._encoded(start, stop))

    def _encoded(self, start: int, stop: int) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
        import tensorflow_datasets as tfds

        decoders = {"image": tfds.decode.SkipDecoding()}
        if self._random_access:
            data = self._builder.as_data_source(split=self.split, decoders=decoders)
            for chunk in range(start, stop, self._READ_CHUNK):
                indices = list(range(chunk, min(chunk + self._READ_CHUNK, stop)))
                for index, example in zip(indices, data.__getitems__(indices), strict=True):
                    yield self._encoded_example(index, example)
            return
        if start == stop:
            return
        dataset = self._builder.as_dataset(
            split=f"{self.split}[{start}:{stop}]",
            shuffle_files=False,
            decoders=decoders,
            read_config=tfds.ReadConfig(interleave_cycle_length=1),
        )
        for index, example in enumerate(tfds.as_numpy(dataset), start=start):
            yield self._encoded_example(index, example)

    def _encoded_example(
        self, index: int, example: dict[str, Any]
    ) -> tuple[str, int, Callable[[], bytes]]:
        data = bytes(example["image"])
        return f"{self.name}/{self.split}/{index}", int(example["label"]), lambda: data


def parse_source_spec(spec: str) -> tuple[str, str, str]:
    """Checks a source spec without opening it: -> ("folder", PATH, "") or
    ("tfds", NAME, SPLIT); "demo" is "tfds:demo_shapes:train"."""
    if spec == "demo":
        spec = DEMO_SOURCE
    kind, _, rest = spec.partition(":")
    if kind == "folder" and rest:
        return kind, rest, ""
    if kind == "tfds" and rest:
        name, _, split = rest.partition(":")
        if name and ":" not in split:
            return kind, name, split or "train"
    raise ValueError(f"invalid source {spec!r}; valid forms: {', '.join(SOURCE_FORMS)}")


def open_source(spec: str, data_dir: str | None = None) -> FolderSource | TfdsSource:
    """The source for `tfds:NAME[:SPLIT]` (split "train" by default; `data_dir` is the TFDS
    data directory), `folder:PATH` or `demo` (the embedded demo set's train split)."""
    kind, location, split = parse_source_spec(spec)
    if kind == "folder":
        return FolderSource(location)
    return TfdsSource(location, split, data_dir)
