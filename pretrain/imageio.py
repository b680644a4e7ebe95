"""Image decoding shared by the pre-training dataset and the data pre-flight (pretrain.verify_data).

decode_rgb(path) -> a fully decoded 8-bit RGB PIL image, or DataError naming the path and the reason.
Mode conventions (hand-checked in tests/badinput):
  * 8-bit modes (L, 1, RGB, RGBX, CMYK incl. Adobe-inverted JPEGs, YCbCr, LAB, HSV): PIL's own conversion
    (grey v -> (v, v, v); CMYK (0, 255, 255, 0) -> (255, 0, 0)).
  * 16-bit grey (I;16*, and PNG mode I): scaled to 8 bits by v >> 8 (65535 -> 255, 32768 -> 128); PIL's own
    conversion would clip every value above 255 to white. 16-bit RGB PNGs are already read as the high byte.
  * Alpha (RGBA, LA, PA, palette + tRNS): DROPPED, the colour of each pixel is kept - as torchvision's default
    loader (`img.convert("RGB")`) does, so pixels equal those the official pipelines see.
  * 32-bit int (non-PNG I) and float (F) images have no agreed 8-bit range: refused (a counted skip).
Truncated, zero-byte and non-image files are refused; ImageFile.LOAD_TRUNCATED_IMAGES is never set.
Decompression bombs: an image above the pixel limit (data.max_image_pixels, else PIL's MAX_IMAGE_PIXELS) is
refused from its header, before any pixel is decoded.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")   # lower-case


class DataError(RuntimeError):
    """Bad data (configuration, an unreadable image, too many of them); the message names paths and limits."""


def pixel_limit(max_pixels: int | None) -> int | None:
    """The effective decompression-bomb limit. A configured limit above PIL's raises PIL's own (never disables it)."""
    limit = max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    if limit is not None and Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    return limit


def _open(path: str | os.PathLike, limit: int | None) -> Image.Image:
    """Image.open with the bomb check on the header; DataError for anything PIL cannot identify."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: refused by the decompression-bomb guard ({e}); raise data.max_image_pixels "
                        f"if such images are expected") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as e:  # UnidentifiedImageError (zero-byte, non-image), OSError, SyntaxError from plugins
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    w, h = im.size
    if limit is not None and w * h > limit:
        im.close()
        raise DataError(f"{path}: {w}x{h} = {w * h} pixels exceeds the decompression-bomb limit {limit} "
                        f"(data.max_image_pixels); refusing to decode it")
    return im


def image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the header only (no pixel decode); DataError as decode_rgb."""
    with _open(path, pixel_limit(max_pixels)) as im:
        return im.size


def to_rgb(im: Image.Image) -> Image.Image:
    """Decoded PIL image of any supported mode -> 8-bit RGB (conventions in the module docstring)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _SIXTEEN_BIT or (mode == "I" and im.format == "PNG"):
        v = np.asarray(im).astype(np.int64)        # (H, W), 0..65535
        return Image.fromarray((np.clip(v, 0, 65535) >> 8).astype(np.uint8), mode="L").convert("RGB")
    if mode in ("I", "F"):
        raise ValueError(f"{'32-bit integer' if mode == 'I' else 'floating-point'} image (mode {mode}) has no "
                         f"defined 8-bit range; expected 8/16-bit grey, RGB, CMYK or palette")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")                   # palette colours (+ tRNS alpha, then dropped below)
    if mode == "La":
        im = im.convert("LA")
    return im.convert("RGB")


def decode_rgb(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode `path` as 8-bit RGB; DataError naming the path on anything unreadable."""
    limit = pixel_limit(max_pixels)
    im = _open(path, limit)
    try:
        with im:
            im.load()                              # the full decode: truncated files raise here
            out = to_rgb(im)
            return out.copy() if out is im else out   # a copy outlives the closed file
    except DataError:
        raise
    except Exception as e:  # OSError ('image file is truncated'), ValueError, SyntaxError ... from PIL's plugins
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
