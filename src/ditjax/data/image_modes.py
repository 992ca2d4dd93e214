"""Decoded images of any PIL mode -> 8-bit RGB, with integer samples scaled, not clipped.

PIL's own `convert("RGB")` clips 16- and 32-bit integer samples ("I;16", "I") to 255, which
turns almost every pixel of a 16-bit PNG white. Those modes are scaled from 0..65535 to
0..255 here; palette, grayscale, CMYK and YCbCr images go through PIL's conversion (the
palette is looked up, CMYK is inverted); an alpha channel is dropped, keeping the colour
under it, as the reference DiT preprocessing (`Image.open(path).convert("RGB")`) does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_PIL_CONVERTIBLE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX")
_PIL_CONVERTIBLE_MODES += ("CMYK", "YCbCr", "LAB", "HSV")


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as an 8-bit "RGB" image; ValueError naming the mode for float or unknown modes.

    16-bit integer samples ("I;16*", and "I", which PNG decoders use for 16-bit grayscale)
    map 0..65535 to 0..255 with rounding; "I" values outside that range are refused.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"image mode {image.mode} with values in [{values.min()}, {values.max()}] is "
                "outside the 16-bit range 0..65535"
            )
        gray = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if image.mode in _PIL_CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise ValueError(f"unsupported image mode {image.mode!r} (float or unknown sample format)")
