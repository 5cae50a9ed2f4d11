"""One image file to a uint8 array at the training resolution, the way an image folder's evaluation
images are defined: Pillow decode (first frame) -> 16-bit scaled to 8-bit -> convert to RGB or L ->
resize (short side to `size` + centre crop, or squash) -> uint8 [H, W, C].

The short-side resize and centre crop round like torchvision's Resize(size) + CenterCrop(size) on a
PIL image, so a user's own evaluation script with those transforms sees the same pixels.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from kdedge.errors import KdedgeError

# an image is refused before decoding past this (a decompression bomb, or far larger than a training
# image): 40 MP is a large camera photo, ~120 MB decoded
MAX_PIXELS = 40_000_000
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImage(Exception):
    """A file that has an image extension but cannot be decoded (corrupt, truncated, 0 bytes)."""


def _pil():
    try:
        from PIL import Image  # imported here: only image folders need Pillow
    except ImportError:
        raise KdedgeError("dataset 'image_folder' needs Pillow, which is not installed; pip install pillow") from None
    return Image


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Every extension Pillow can open (not the save-only ones), lower case with the dot."""
    Image = _pil()
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def decode_image(path: Path, size: int, *, color: str, resize: str) -> tuple[np.ndarray, str]:
    """(uint8 [size, size, C] array, the file's own Pillow mode). Raises UnreadableImage for a file that
    cannot be decoded, KdedgeError for one over the pixel limit."""
    Image = _pil()
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, past its own limit; any image over ours is refused below anyway;
            # its palette-transparency warning is about the conversion we do on purpose
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", message="Palette images with Transparency")
            with Image.open(path) as img:  # reads the header only: the size is known before decoding
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise KdedgeError(f"{path}: image is {width}x{height} pixels, over the {MAX_PIXELS:,} pixel "
                                      "limit (a decompression bomb, or far larger than a training image); "
                                      "shrink or delete the file")
                mode = img.mode
                img.load()  # the first frame of an animation (GIF, APNG, WebP)
                out = _to_mode(img, "L" if color == "grayscale" else "RGB")
                out = _resize(out, size, resize)
                array = np.asarray(out, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise KdedgeError(f"{path}: cannot read image ({exc}); replace or delete the file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's decoders raise all of these
        raise UnreadableImage(str(exc) or type(exc).__name__) from None
    return (array[:, :, None] if array.ndim == 2 else array), mode


def _to_mode(img, target: str):
    """RGB or L; 16-bit (and 32-bit integer) grey levels scaled by 255/65535 with rounding, not clipped."""
    Image = _pil()
    if img.mode in SIXTEEN_BIT:
        wide = np.asarray(img).astype(np.float64)
        grey = np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        img = Image.fromarray(grey, mode="L")
    elif img.mode == "F":
        raise ValueError("32-bit floating-point images have no defined 8-bit scale; save it as 8- or 16-bit")
    return img if img.mode == target else img.convert(target)


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred size x size square (torchvision's rounding)."""
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side = size, the long side truncated (torchvision's rule)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _resize(img, size: int, how: str):
    Image = _pil()
    width, height = img.size
    if how == "squash":
        target = (size, size)
    else:
        target = short_side_size(width, height, size)
    if target != (width, height):
        img = img.resize(target, Image.Resampling.BILINEAR)
    if img.size != (size, size):
        img = img.crop(center_crop_box(img.size[0], img.size[1], size))
    return img
