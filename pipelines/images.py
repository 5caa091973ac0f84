"""Untrusted image bytes -> a checked, 8-bit RGB Pillow image: one home for ingest and predict.

A small file can hold a huge image (a 20 KB PNG of 13000 x 13000 decodes to 0.5 GB): the
size in the header is checked against a pixel cap before anything is decoded. 16- and 32-bit
images are scaled to 8 bits (Pillow's ``convert`` clips them: a 16-bit grayscale PNG came out
almost white).
"""

from __future__ import annotations

import io
from typing import Any

DEFAULT_MAX_PIXELS = 64_000_000  # data.max_pixels' default: 8000 x 8000


class TooManyPixels(ValueError):
    """An image larger than the pixel cap, refused from its header (never decoded)."""


def open_checked(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """``Image.open`` (lazy: the header only) with the pixel cap applied."""
    from PIL import Image

    # Ours replaces Pillow's cap (a warning at 89 M pixels, an error at 179 M, read from this
    # global at open time), so that the message and the limit are the project's own.
    Image.MAX_IMAGE_PIXELS = None
    im = Image.open(io.BytesIO(data))
    if im.width * im.height > max_pixels:
        raise TooManyPixels(f"{im.width}x{im.height} = {im.width * im.height} pixels, more than the cap of "
                            f"{max_pixels} (data.max_pixels)")
    return im


def to_rgb(im: Any) -> Any:
    """8-bit RGB; integer images wider than 8 bits scaled down, float images stretched."""
    from PIL import Image

    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        if im.mode == "F":  # float images have no fixed range: stretch what is there
            lo, hi = float(np.nanmin(a, initial=0)), float(np.nanmax(a, initial=1))
            a, top = np.nan_to_num(a - lo), max(hi - lo, 1e-12)
        im = Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return im if im.mode == "RGB" else im.convert("RGB")
