"""benchmarks/small_datasets.py: packaged image sets written as class folders."""

import pathlib
import runpy

import numpy as np
import pytest

from ditjax.data.sources import FolderSource

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "small_datasets.py"


@pytest.fixture(scope="module")
def script():
    return runpy.run_path(str(SCRIPT))


def test_resize_enlarges_and_shrinks(script):
    images = np.zeros((2, 8, 8), np.uint8)
    images[:, 2:6, 2:6] = 255
    big = script["resize"](images, 16)
    assert big.shape == (2, 16, 16) and big[0, 8, 8] > 200 and big[0, 0, 0] < 50
    assert script["resize"](big, 4).shape == (2, 4, 4)


def test_written_folder_reads_back_as_a_source(script, tmp_path):
    images = np.arange(6 * 16 * 16, dtype=np.uint32).reshape(6, 16, 16).astype(np.uint8)
    labels = np.array([2, 0, 1, 2, 0, 1])
    out = tmp_path / "digits"
    script["write_image_folder"](images, labels, str(out))
    source = FolderSource(out)
    assert source.class_names == ["0", "1", "2"] and len(source) == 6
    by_key = {example.key: example for example in source}
    example = by_key[str(pathlib.Path("2", "00003.png"))]
    assert example.label == 2
    np.testing.assert_array_equal(np.asarray(example.image), images[3])
    assert not (tmp_path / "digits.partial").exists()
    with pytest.raises(FileExistsError, match="exists"):
        script["write_image_folder"](images, labels, str(out))
