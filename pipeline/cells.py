"""Image cells: a face crop as every artifact stores it, Arrow `struct<bytes: binary, path: string>`
(the layout of Hugging Face datasets' Image feature). The one place images are encoded and decoded.

Encoding is OpenCV's: the artifacts hold exactly the bytes it writes with the options each stage
records (the faces stage's fast PNG, the shards' compression level, OpenCV's default). Decoding is
Pillow's: it is safe in forked DataLoader workers, where OpenCV's thread pool inherited from the
parent can deadlock, and it gives the same pixels as OpenCV for PNG and JPEG (tests/unit/test_cells.py).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["ARROW_TYPE", "PNG_SIGNATURE", "JPEG_SIGNATURE", "PNG_FAST", "png_level", "encode", "encode_png",
           "encode_jpeg", "decode", "as_png", "cell", "cell_bytes", "image_format", "image_shape", "fit"]

ARROW_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def _cv2():
    import cv2  # imported when an image is encoded: decoding and `cell` need only Pillow and pyarrow

    return cv2


def _png_fast() -> list[int]:
    cv2 = _cv2()
    # zlib level 1, the "up" row filter and run-length matching: ~2x faster than OpenCV's default
    # for 256x256 face crops, and about the same size (the faces stage's crops)
    return [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


PNG_FAST = "fast"  # named PNG options, resolved when encoding (cv2 stays unimported until then)


def png_level(level: int) -> list[int]:
    """OpenCV's options for PNG at zlib `level` (0-9), as the shards write them."""
    return [_cv2().IMWRITE_PNG_COMPRESSION, int(level)]


def encode_png(rgb: np.ndarray, options: Sequence[int] | str = ()) -> bytes:
    """Lossless PNG bytes of an RGB uint8 image; `options`: OpenCV's imwrite flags, PNG_FAST, or ()
    for OpenCV's default (level 1, Sub filter, RLE strategy)."""
    cv2 = _cv2()
    flags = _png_fast() if options == PNG_FAST else list(options)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    if not ok:
        raise RuntimeError(f"could not encode a {rgb.shape} image as PNG")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    cv2 = _cv2()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"could not encode a {rgb.shape} image as JPEG")
    return buf.tobytes()


def encode(rgb: np.ndarray, image_format: str = "png", quality: int = 95, png: Sequence[int] | str = PNG_FAST) -> bytes:
    """The faces stage's crop bytes: PNG (lossless, `png` options) or JPEG at `quality`."""
    if image_format == "png":
        return encode_png(rgb, png)
    if image_format == "jpeg":
        return encode_jpeg(rgb, quality)
    raise ValueError(f"unknown image format {image_format!r}: use png or jpeg")


def decode(data: bytes, size: int | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> RGB uint8 array (H, W, 3); with `size`, (size, size, 3), box-resized only if
    the image is another size. ValueError when the bytes are not an image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB") if im.mode != "RGB" else im
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BOX)
            return np.asarray(im)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ValueError(f"not a decodable image ({len(data)} bytes, starting {bytes(data[:8])!r})") from None


def image_format(data: bytes) -> str | None:
    """'png', 'jpeg' or None, from the bytes' signature."""
    if data[:8] == PNG_SIGNATURE:
        return "png"
    if data[:3] == JPEG_SIGNATURE:
        return "jpeg"
    return None


def as_png(data: bytes) -> bytes:
    """The image as PNG bytes: PNG bytes unchanged, anything else decoded and written with
    OpenCV's default PNG options."""
    if image_format(data) == "png":
        return data
    return encode_png(decode(data))


def cell(data: bytes | None, path: str | None) -> dict:
    """One image cell, as the Arrow struct holds it."""
    return {"bytes": data, "path": path}


def cell_bytes(value: dict | None, root: Path | None = None) -> bytes:
    """The image bytes of a cell: its `bytes`, else the file at its `path` (relative to `root`).
    ValueError when the cell has neither; OSError when the file cannot be read."""
    data = value.get("bytes") if value else None
    if data is None and value and value.get("path"):
        data = (root / value["path"] if root is not None else Path(value["path"])).read_bytes()
    if data is None:
        raise ValueError("no image bytes or path")
    return data


def image_shape(data: bytes) -> tuple[int, int]:
    """(height, width) of PNG/JPEG bytes from their header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.height, im.width
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ValueError(f"not a decodable image ({len(data)} bytes, starting {bytes(data[:8])!r})") from None


def fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """`rgb` as (size, size, 3): unchanged at that size, else box-resized as `decode(data, size)` does."""
    from PIL import Image

    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BOX))
