"""The ADM center crop against hand-computed sizes and a plain PIL computation."""

import numpy as np
import pytest
from PIL import Image

from ditjax.data.adm_crop import center_crop_adm, to_model_range


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth, asymmetric test image: red grows left to right, green top to bottom."""
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.broadcast_to((x + y) / 2, (height, width, 1)),
        ],
        axis=-1,
    )
    image = Image.fromarray(rgb.astype(np.uint8))
    if mode == "RGBA":  # a varying alpha: resizing RGBA weights colours by it
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    if mode == "I;16":  # a true 16-bit image: 0..255 * 257 spans 0..65535
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return image if mode in ("RGB", "RGBA") else image.convert(mode)


def reference_crop(image, halved_size, resized_size, target):
    """The crop spelled out with the sizes computed by hand."""
    image = image.convert("RGB")
    while image.size != halved_size:
        image = image.resize((image.width // 2, image.height // 2), Image.BOX)
    image = image.resize(resized_size, Image.BICUBIC)
    array = np.asarray(image)
    top, left = (resized_size[1] - target) // 2, (resized_size[0] - target) // 2
    return array[top : top + target, left : left + target]


@pytest.mark.parametrize(
    ("size", "target", "halved", "resized"),
    [
        # 375 < 512: no halving; 500 * 256 / 375 = 341.33 -> 341; offsets (0, 42).
        ((500, 375), 256, (500, 375), (341, 256)),
        # 700 >= 512: halve once to 600 x 350; 600 * 256 / 350 = 438.86 -> 439; left 91.
        ((1200, 700), 256, (600, 350), (439, 256)),
        # Halve twice: 1050 x 515, 525 x 257 (257 < 512 stops); 525 * 256 / 257 = 522.96 -> 523.
        ((2100, 1030), 256, (525, 257), (523, 256)),
        # Portrait: 640 * 256 / 300 = 546.13 -> 546; top (546 - 256) // 2 = 145.
        ((300, 640), 256, (300, 640), (256, 546)),
        # Halving stops at a short side of 40 < 64; 50 * 32 / 40 = 40.
        ((100, 80), 32, (50, 40), (40, 32)),
        # Floor halving: 129 x 197 -> 64 x 98 (64 >= 64 halves again) -> 32 x 49; scale 1.
        ((129, 197), 32, (32, 49), (32, 49)),
        # Upscaling: 45 * 32 / 20 = 72.
        ((45, 20), 32, (45, 20), (72, 32)),
        # Python rounds halves to even, as the reference does: 3 * 1.5 = 4.5 -> 4, 7.5 -> 8.
        ((3, 2), 3, (3, 2), (4, 3)),
        ((5, 2), 3, (5, 2), (8, 3)),
        # Short side exactly 2S halves: 64 -> 32; 90 // 2 = 45; crop left (45 - 32) // 2 = 6.
        ((90, 64), 32, (45, 32), (45, 32)),
    ],
)
def test_crop_matches_hand_computed_sizes(size, target, halved, resized):
    image = gradient_image(*size)
    crop = center_crop_adm(image, target)
    assert crop.shape == (target, target, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, reference_crop(image, halved, resized, target))


def test_rounding_of_the_bicubic_target_size():
    # 31 x 20 -> scale 32 / 20 = 1.6: 31 * 1.6 = 49.6 rounds to 50; 3 x 2 -> 48 x 32 exactly;
    # 2100 x 1030 (portrait here) halves twice, then 525 * 256 / 257 = 522.96 rounds to 523.
    seen = []
    original_resize = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        seen.append(tuple(size))
        return original_resize(self, size, *args, **kwargs)

    Image.Image.resize = recording_resize
    try:
        center_crop_adm(gradient_image(31, 20), 32)
        center_crop_adm(gradient_image(3, 2), 32)
        center_crop_adm(gradient_image(1030, 2100), 256)
    finally:
        Image.Image.resize = original_resize
    assert seen == [(50, 32), (48, 32), (515, 1050), (257, 525), (256, 523)]


def test_floor_offsets_without_resampling():
    # 37 x 32 at S = 32: no resize changes pixels; 5 extra columns -> left offset floor(2.5) = 2.
    image = gradient_image(37, 32)
    np.testing.assert_array_equal(center_crop_adm(image, 32), np.asarray(image)[:, 2:34])
    # 32 wide, 35 tall: 3 extra rows -> top offset 1.
    image = gradient_image(32, 35)
    np.testing.assert_array_equal(center_crop_adm(image, 32), np.asarray(image)[1:33, :])
    # Already S x S: returned unchanged.
    image = gradient_image(16, 16)
    np.testing.assert_array_equal(center_crop_adm(image, 16), np.asarray(image))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_other_modes_are_converted_to_rgb_first(mode):
    image = gradient_image(150, 90, mode)
    crop = center_crop_adm(image, 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    # The reference loads images as RGB before cropping; 16-bit samples are scaled to 8 bits
    # first (PIL's convert("RGB") would clip them to 255).
    reference = gradient_image(150, 90, "L") if mode == "I;16" else image
    np.testing.assert_array_equal(crop, reference_crop(reference, (75, 45), (53, 32), 32))


def test_to_model_range():
    values = to_model_range(np.array([[0, 255], [128, 64]], np.uint8))
    assert values.dtype == np.float32
    expected = np.array([[0, 255], [128, 64]], np.float32) / np.float32(127.5) - np.float32(1)
    np.testing.assert_array_equal(values, expected)
    assert values.min() == -1.0 and values.max() == 1.0


def test_invalid_size_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        center_crop_adm(gradient_image(8, 8), 0)
