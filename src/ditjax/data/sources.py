"""Image sources for latent extraction: a TFDS dataset or a folder of class subfolders."""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Callable, Iterator

from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One image of a source; `load()` decodes it (and may raise for a corrupt file)."""

    key: str
    label: int
    load: Callable[[], Image.Image]


def _decode(read: Callable[[], bytes]) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        image = Image.open(io.BytesIO(read()))
        image.load()
        return image

    return load


class FolderSource:
    """Images under `root/<class name>/`; sorted class folder names give labels 0..K-1."""

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.root = root
        self.class_names = sorted(
            d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
        )
        if not self.class_names:
            raise ValueError(f"image folder {root} has no class subfolders")
        self._files = [
            (os.path.join(name, f), label)
            for label, name in enumerate(self.class_names)
            for f in sorted(os.listdir(os.path.join(root, name)))
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not self._files:
            raise ValueError(f"image folder {root} has no {'/'.join(IMAGE_EXTENSIONS)} files")

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[SourceItem]:
        for relative, label in self._files:
            path = os.path.join(self.root, relative)
            yield SourceItem(relative, label, _decode(pathlib.Path(path).read_bytes))


class TfdsSource:
    """A TFDS image classification dataset (features `image` and `label`), read in order.

    The embedded `demo_shapes` set is generated on first use; other datasets must already
    be prepared (ImageNet: TFDS's manual download, placed in its manual_dir).
    """

    def __init__(self, name: str, split: str = "train", data_dir: str | None = None):
        import tensorflow_datasets as tfds

        from ditjax.data import demo_shapes  # noqa: F401  (registers the demo builder)

        try:
            self._builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:
            raise ValueError(f"unknown TFDS dataset {name!r}: {error}") from None
        if not self._builder.is_prepared():
            self._builder.download_and_prepare()
        splits = self._builder.info.splits
        if split not in splits:
            raise ValueError(f"TFDS dataset {name} has no split {split!r}; has {list(splits)}")
        self.name, self.split = name, split
        self.class_names = list(self._builder.info.features["label"].names)
        self._length = splits[split].num_examples

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[SourceItem]:
        import tensorflow_datasets as tfds

        dataset = self._builder.as_dataset(
            split=self.split,
            shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        for index, example in enumerate(tfds.as_numpy(dataset)):
            data = bytes(example["image"])
            yield SourceItem(
                f"{self.split}/{index}", int(example["label"]), _decode(lambda d=data: d)
            )


def open_source(spec: str, data_dir: str | None = None) -> FolderSource | TfdsSource:
    """The source for `tfds:NAME[:SPLIT]` or `folder:PATH`."""
    kind, _, rest = spec.partition(":")
    if kind == "folder" and rest:
        return FolderSource(rest)
    if kind == "tfds" and rest:
        name, _, split = rest.partition(":")
        return TfdsSource(name, split or "train", data_dir)
    raise ValueError(f"invalid source {spec!r}; expected tfds:NAME[:SPLIT] or folder:PATH")
